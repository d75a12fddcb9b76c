"""Issue 8 §2: `operatord run` behind a TCP proxy that accepts and never answers, then recovers.

The operator reaches the embedded API server only through the proxy (tests/blackhole_proxy.py);
the test writes directly. While the proxy hangs, parents are created and changed; the operator
must report itself not ready (and the metrics must show the silence) within the watch liveness
bound, and converge within 10 s of the proxy forwarding again, although every connection that
was open during the hang stays silent forever.
"""

from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import Operator, wait_for
from kubernetes import client

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the proxy
from blackhole_proxy import BlackholeProxy  # noqa: E402

GROUP, VERSION, PLURAL = "example.com", "v1", "widgets"
RESOURCE = "widgets.example.com"
BOUND = 5.0  # the liveness floor: the embedded server bookmarks every idle second


def readyz(op) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{op.health_port}/readyz", timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def stale_watch_reported(op, resource: str) -> bool:
    code, body = readyz(op)
    return code == 503 and "watches: stale watches:" in body and f"{resource} silent for" in body


def widgets(kube, ns) -> dict[str, dict]:
    items = client.CustomObjectsApi(kube).list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)[
        "items"
    ]
    return {w["metadata"]["name"]: w for w in items}


def converged(kube, ns, sizes: dict[str, int]) -> bool:
    found = widgets(kube, ns)
    if set(found) != set(sizes):
        return False
    cms = {c.metadata.name: c for c in client.CoreV1Api(kube).list_namespaced_config_map(ns).items}
    for name, size in sizes.items():
        st = found[name].get("status") or {}
        if st.get("ready") is not True:
            return False
        if st.get("observedGeneration") != found[name]["metadata"]["generation"]:
            return False
        if name not in cms or cms[name].data != {"size": str(size)}:
            return False
    return True


def create(kube, ns, name: str, size: int) -> None:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Widget", "metadata": {"name": name}}
    body["spec"] = {"size": size}
    client.CustomObjectsApi(kube).create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)


@pytest.fixture
def proxy(api):
    p = BlackholeProxy(api.port)
    yield p
    p.close()


def test_a_hung_api_server_is_reported_and_recovered_from_within_10s(api, kube, proxy, tmp_path):
    ns = f"h-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(kube).create_namespace({"metadata": {"name": ns}})
    shim = SimpleNamespace(kubeconfig=proxy.kubeconfig(api.kubeconfig, tmp_path / "kubeconfig"))
    op = Operator(shim, tmp_path).start()
    try:
        op.wait_ready()
        create(kube, ns, "w0", 1)
        wait_for(lambda: converged(kube, ns, {"w0": 1}), 30, message="w0 converged")
        wait_for(
            lambda: op.metric("operatord_watch_idle_limit_seconds", resource=RESOURCE) == BOUND,
            15,
            message="the bound learned from the bookmarks",
        )
        assert readyz(op)[0] == 200

        proxy.hang()
        hung = time.monotonic()
        create(kube, ns, "w1", 2)
        create(kube, ns, "w2", 3)
        client.CustomObjectsApi(kube).patch_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, "w0", {"spec": {"size": 10}}
        )
        wait_for(
            lambda: stale_watch_reported(op, RESOURCE),
            BOUND + 5,
            message="not ready during the hang, naming the parent watch",
        )
        assert time.monotonic() - hung <= BOUND + 5
        idle = op.metric("operatord_watch_idle_seconds", resource=RESOURCE)
        assert idle > BOUND, idle
        wait_for(lambda: time.monotonic() - hung >= 10, 15, message="a 10 s hang")
        assert not converged(kube, ns, {"w0": 10, "w1": 2, "w2": 3})

        proxy.recover()
        back = time.monotonic()
        wait_for(
            lambda: converged(kube, ns, {"w0": 10, "w1": 2, "w2": 3}),
            20,
            message="the parents created and changed during the hang",
        )
        recovered_in = time.monotonic() - back
        print(f"recovered {recovered_in:.2f}s after the proxy forwarded again")
        assert recovered_in <= 10.0, recovered_in
        wait_for(lambda: readyz(op)[0] == 200, 5, message="ready again")
        assert op.metric("operatord_watch_restarts_total", resource=RESOURCE, reason="idle") >= 1
        assert op.proc.poll() is None
    finally:
        code = op.stop()
        if code != 0:
            print(op.output()[-5000:])
