"""Issue 18 on an API server that bookmarks like kube-apiserver: once a minute.

The embedded API server here sends a bookmark only after 60 s of idleness on a watch, so the
operator's informers never see one during these tests: nothing may depend on them.

- The 15 s blackhole of `test_api_hang.py` (tests/e2e/blackhole.py), one replica: /readyz 503
  within 15 s of the cut, every change made during the cut converged within 15 s after it, no
  worker crash.
- A quiet server: no change at all for a while. /readyz stays 200 throughout, and the liveness
  checks cost at most one request per watch per ``health.watchSilenceSeconds``, counted in the
  API server's audit log. The issue asks for 5 minutes at the default 10 s interval (30
  intervals); the suite cannot spend 5 minutes, so the interval is 2 s and the quiet period
  30 s (15 intervals): the same bound, scaled.
"""

from __future__ import annotations

import time
import uuid
from types import SimpleNamespace

import pytest
from blackhole import (
    CONVERGED_WITHIN,
    NOT_READY_WITHIN,
    BlackholeProxy,
    converged,
    readyz,
    run_cut,
)
from conftest import Operator, wait_for
from kubernetes import client
from widgets import create_widget

from operatord.testing import ApiServer, free_port

RESOURCE = "widgets.example.com"
WATCHED = {"widgets", "configmaps", "secrets"}  # the parent and the two child types
SILENCE = 2.0
QUIET = 30.0


@pytest.fixture(scope="module")
def api():
    with ApiServer(bookmark_interval=60.0) as server:
        yield server


@pytest.fixture
def proxy(api):
    p = BlackholeProxy(api.port)
    yield p
    p.close()


@pytest.fixture
def quiet_ns(kube):
    name = f"q-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(kube).create_namespace({"metadata": {"name": name}})
    return name


def test_without_bookmarks_one_replica_is_not_ready_within_15s_and_converges_after(
    api, kube, proxy, quiet_ns, tmp_path
):
    shim = SimpleNamespace(kubeconfig=proxy.kubeconfig(api.kubeconfig, tmp_path / "kubeconfig"))
    op = Operator(shim, tmp_path).start()
    try:
        op.wait_ready()
        cut = run_cut(kube, quiet_ns, proxy, op, [op])
        assert cut.not_ready_after <= NOT_READY_WITHIN, cut
        assert cut.converged_after <= CONVERGED_WITHIN, cut
        # the informers never saw a bookmark, idle or not
        assert op.metric("operatord_watch_events_total", type="BOOKMARK") == 0
    finally:
        code = op.stop()
        if code != 0:
            print(op.output()[-5000:])


def test_a_quiet_server_keeps_readiness_and_costs_one_check_per_watch_per_interval(
    api, kube, quiet_ns, tmp_path
):
    op = Operator(
        api, tmp_path, health={"port": free_port(), "watchSilenceSeconds": SILENCE}
    ).start()
    try:
        op.wait_ready()
        sizes = {f"q{i}": 1 for i in range(5)}
        for name in sizes:
            create_widget(kube, quiet_ns, name, size=1)
        wait_for(lambda: converged(kube, quiet_ns, sizes), 30, message="parents converged")
        wait_for(lambda: readyz(op)[0] == 200, 10, message="ready")
        api.clear_requests()
        ok_before = op.metric("operatord_watch_checks_total", result="ok")
        start = time.monotonic()
        while time.monotonic() - start < QUIET:
            status = readyz(op)
            assert status[0] == 200, status
            time.sleep(0.25)  # a sampling period, not a wait for a condition
        elapsed = time.monotonic() - start
        requests = api.requests()
        watches = {
            res: sum(1 for r in requests if r["verb"] == "watch" and r["resource"] == res)
            for res in WATCHED
        }
        print(f"watch requests in {elapsed:.0f}s of quiet, by resource: {watches}")
        for res, count in watches.items():
            # every check is one watch request; each starts >= SILENCE after the last one
            assert 1 <= count <= elapsed / SILENCE + 1, (res, count)
        assert not [r for r in requests if r["verb"] not in ("watch", "get")], requests[:5]
        checks = op.metric("operatord_watch_checks_total", result="ok") - ok_before
        assert checks >= sum(watches.values()) - len(WATCHED)  # all passed
        assert op.metric("operatord_watch_checks_total") == op.metric(
            "operatord_watch_checks_total", result="ok"
        )
        assert op.metric("operatord_watch_events_total", type="BOOKMARK") == 0
    finally:
        op.stop()
