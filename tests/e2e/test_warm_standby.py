"""Issue 18: a warm standby takes over at once.

Two `operatord run` replicas (lease 4 s, renew deadline 3 s, retry 1 s; 2 workers each) and 300
Widgets. The standby caches every parent and runs its workers before it leads, and writes
nothing. Then 50 parents keep changing while the leader's whole process tree is SIGKILLed.
From the API server's audit log (arrival times on the test's monotonic clock): the new
leader's first status write comes at most 0.5 s after its lease write that acquired the lease,
and every parent converges (status.ready for its current generation) within
leaseDurationSeconds + 3 s of the kill.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid

from conftest import Operator, descendants, wait_for
from kubernetes import client
from kubernetes.client.exceptions import ApiException

GROUP, VERSION, PLURAL = "example.com", "v1", "widgets"
LEASE = {"leaseDurationSeconds": 4, "renewDeadlineSeconds": 3, "retryPeriodSeconds": 1}
PARENTS = 300
CHANGING = 50
FIRST_WRITE_BOUND = 0.5
WRITE_VERBS = ("create", "update", "patch", "delete")


def unconverged(kube, ns: str) -> list[str]:
    """Widgets whose status is not ready for their current generation."""
    items = client.CustomObjectsApi(kube).list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)
    out = []
    for w in items["items"]:
        status = w.get("status") or {}
        if not (
            status.get("ready") and status.get("observedGeneration") == w["metadata"]["generation"]
        ):
            out.append(w["metadata"]["name"])
    return out


def churn(kube, ns: str, stop: threading.Event) -> None:
    """Change the spec of CHANGING parents in turn, one every 20 ms."""
    api = client.CustomObjectsApi(kube)
    i = 0
    while not stop.wait(0.02):
        i += 1
        try:
            api.patch_namespaced_custom_object(
                GROUP, VERSION, ns, PLURAL, f"w{i % CHANGING}", {"spec": {"size": i}}
            )
        except ApiException:
            pass


def holder(kube, name: str) -> str:
    try:
        lease = client.CoordinationV1Api(kube).read_namespaced_lease(name, "default")
    except ApiException:
        return ""
    return lease.spec.holder_identity or ""


def test_a_warm_standby_takes_over_at_once_and_converges_in_time(api, kube, tmp_path):
    ns = f"w-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(kube).create_namespace({"metadata": {"name": ns}})
    lease_name = f"warm-{uuid.uuid4().hex[:6]}"
    election = {"enabled": True, "leaseName": lease_name, "warmStandby": True, **LEASE}
    replicas = []
    for i in range(2):
        (tmp_path / f"r{i}").mkdir()
        replicas.append(Operator(api, tmp_path / f"r{i}", leaderElection=election))
    stop_churn = threading.Event()
    a, b = replicas
    try:
        a.start()
        wait_for(lambda: holder(kube, lease_name), 30, message="a leader")
        a.wait_ready()
        for i in range(PARENTS):
            client.CustomObjectsApi(kube).create_namespaced_custom_object(
                GROUP,
                VERSION,
                ns,
                PLURAL,
                {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Widget", "metadata": {"name": f"w{i}"},
                 "spec": {"size": 1}},
            )  # fmt: skip
        wait_for(lambda: not unconverged(kube, ns), 60, message="every parent converged")
        b.start()
        b.wait_ready()  # a warm standby is ready once its caches are synced

        # The standby: everything cached, workers running, nothing synced or written.
        assert b.metric("operatord_leader") == 0
        assert b.metric("operatord_cached_objects", resource="widgets.example.com") == PARENTS
        assert b.metric("operatord_cached_objects", resource="configmaps") == PARENTS
        assert b.metric("operatord_workers_alive") == 2
        assert b.metric("operatord_syncs_total") == 0
        for verb in WRITE_VERBS:
            assert b.metric("operatord_api_requests_total", verb=verb) == 0

        # It watches the lease by name: allowed by a Role limited to that name (the chart's).
        lease_reads = [
            r
            for r in api.requests()
            if r["resource"] == "leases" and r["verb"] in ("list", "watch")
        ]
        assert any(r["verb"] == "watch" and r["name"] == lease_name for r in lease_reads)
        assert all(r["name"] for r in lease_reads), lease_reads

        writer = threading.Thread(target=churn, args=(kube, ns, stop_churn), daemon=True)
        writer.start()
        wait_for(
            lambda: a.metric("operatord_syncs_total", result="ok") >= PARENTS + CHANGING,
            30,
            message="the leader syncing the changes",
        )
        api.clear_requests()
        tree = [a.proc.pid, *descendants(a.proc.pid)]
        killed_at = time.monotonic()
        for pid in tree:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        first = holder(kube, lease_name)
        wait_for(
            lambda: holder(kube, lease_name) not in ("", first),
            LEASE["leaseDurationSeconds"] + 5,
            interval=0.02,
            message="the standby taking over",
        )
        stop_churn.set()
        writer.join(5)
        wait_for(lambda: not unconverged(kube, ns), 30, interval=0.05, message="convergence")
        converged_at = time.monotonic()

        audit = [r for r in api.requests() if r["time"] > killed_at]
        acquired = next(
            r["time"]
            for r in audit
            if r["resource"] == "leases" and r["name"] == lease_name and r["verb"] == "update"
        )
        first_write = next(
            r["time"]
            for r in audit
            if r["resource"] == "widgets" and r["subresource"] == "status"
            and r["verb"] in ("update", "patch")
        )  # fmt: skip
        assert b.proc.poll() is None
        assert first_write - acquired <= FIRST_WRITE_BOUND, (
            f"first status write {first_write - acquired:.3f}s after acquiring the lease"
        )
        bound = LEASE["leaseDurationSeconds"] + 3
        assert converged_at - killed_at <= bound, (
            f"converged {converged_at - killed_at:.2f}s after the kill (lease acquired "
            f"{acquired - killed_at:.2f}s after it)"
        )
    finally:
        stop_churn.set()
        for op in replicas:
            op.stop()
