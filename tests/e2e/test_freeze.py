"""Issue 8 §1: no split brain after a freeze.

Two `operatord run` replicas (lease 4 s, renew deadline 3 s, retry 1 s), each behind its own TCP
proxy on 127.0.0.1 that records the requests it forwards. While parents keep changing, the
leader and its workers are frozen with SIGSTOP for 8 s; the standby takes the lease; SIGCONT.
The lease history (polled by the test) and the frozen replica's proxy log must show that no
write of the frozen replica reached the API server after the standby took over.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

from conftest import Operator, descendants, wait_for
from kubernetes import client
from kubernetes.client.exceptions import ApiException

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the proxy
from blackhole_proxy import BlackholeProxy  # noqa: E402

GROUP, VERSION, PLURAL = "example.com", "v1", "widgets"
LEASE = {"leaseDurationSeconds": 4, "renewDeadlineSeconds": 3, "retryPeriodSeconds": 1}
PARENTS = 20
FREEZE = 8.0
WRITES = ("POST", "PUT", "PATCH", "DELETE")


class LeaseHistory:
    """Polls the lease every 20 ms: [(monotonic time, holderIdentity)] at each change."""

    def __init__(self, kube, name: str, namespace: str = "default"):
        self.api = client.CoordinationV1Api(kube)
        self.name, self.namespace = name, namespace
        self.changes: list[tuple[float, str]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self) -> None:
        while not self.stop.wait(0.02):
            try:
                lease = self.api.read_namespaced_lease(self.name, self.namespace)
            except ApiException:
                continue
            holder = lease.spec.holder_identity or ""
            if not self.changes or self.changes[-1][1] != holder:
                self.changes.append((time.monotonic(), holder))

    def holder(self) -> str:
        return self.changes[-1][1] if self.changes else ""


def churn(kube, ns: str, stop: threading.Event) -> None:
    """Keep changing parents so that syncs (and their writes) are always pending."""
    api = client.CustomObjectsApi(kube)
    i = 0
    while not stop.wait(0.05):
        i += 1
        try:
            api.patch_namespaced_custom_object(
                GROUP, VERSION, ns, PLURAL, f"w{i % PARENTS}", {"spec": {"size": i}}
            )
        except ApiException:
            pass


def test_a_frozen_leader_writes_nothing_after_the_standby_takes_over(api, kube, tmp_path):
    ns = f"f-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(kube).create_namespace({"metadata": {"name": ns}})
    lease_name = f"freeze-{uuid.uuid4().hex[:6]}"
    proxies = [BlackholeProxy(api.port), BlackholeProxy(api.port)]
    replicas = []
    for i, proxy in enumerate(proxies):
        (tmp_path / f"r{i}").mkdir()
        shim = SimpleNamespace(kubeconfig=proxy.kubeconfig(api.kubeconfig, tmp_path / f"kc{i}"))
        replicas.append(
            Operator(
                shim,
                tmp_path / f"r{i}",
                leaderElection={"enabled": True, "leaseName": lease_name, **LEASE},
            )
        )
    history = LeaseHistory(kube, lease_name)
    stop_churn = threading.Event()
    frozen: list[int] = []
    try:
        a, b = replicas
        a.start()
        wait_for(lambda: history.holder(), 30, message="a leader")
        a.wait_ready()
        first = history.holder()
        b.start()
        b.wait_ready()
        for i in range(PARENTS):
            body = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Widget",
                "metadata": {"name": f"w{i}"},
                "spec": {"size": i},
            }
            client.CustomObjectsApi(kube).create_namespaced_custom_object(
                GROUP, VERSION, ns, PLURAL, body
            )
        writer = threading.Thread(target=churn, args=(kube, ns, stop_churn), daemon=True)
        writer.start()
        wait_for(
            lambda: a.metric("operatord_syncs_total", result="ok") >= PARENTS,
            30,
            message="the leader syncing",
        )

        frozen = [a.proc.pid, *descendants(a.proc.pid)]
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        wait_for(
            lambda: history.holder() not in ("", first),
            FREEZE,
            message="the standby taking over during the freeze",
        )
        takeover = next(t for t, h in history.changes if t > stopped_at and h != first)
        wait_for(lambda: time.monotonic() - stopped_at >= FREEZE, FREEZE + 1, message="8 s")
        for pid in frozen:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        frozen = []
        woke = time.monotonic()
        wait_for(lambda: a.proc.poll() is not None, 15, message="the woken leader exiting")
        stop_churn.set()
        late = [
            (round(t - takeover, 3), method, path)
            for t, method, path in proxies[0].requests
            if t > takeover and method in WRITES and "/leases/" not in path
        ]
        assert a.proc.returncode == 1
        assert b.proc.poll() is None
        assert late == [], f"{len(late)} writes after takeover (woke {woke - takeover:.1f}s later)"
    finally:
        stop_churn.set()
        for pid in frozen:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        history.stop.set()
        for op in replicas:
            op.stop()
        for proxy in proxies:
            proxy.close()
