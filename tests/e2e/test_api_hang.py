"""Issue 18: `operatord run` cut off from the API server for 15 s by a TCP proxy that accepts
connections and forwards nothing, in either direction, without RST (a load balancer or NAT that
dropped its flows). Connections opened before or during the cut stay dead afterwards.

The embedded API server bookmarks every idle second here; `test_api_quiet.py` runs the same
scenario with bookmarks every 60 s. In both, every parent created or changed during the cut
must converge within 15 s of traffic flowing again, /readyz must turn 503 within 15 s of the
cut (health.watchSilenceSeconds 10 s plus a 3 s check), and no worker may crash.
"""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest
from blackhole import CONVERGED_WITHIN, NOT_READY_WITHIN, BlackholeProxy, readyz, run_cut
from conftest import Operator, wait_for
from kubernetes import client

RESOURCE = "widgets.example.com"


@pytest.fixture
def proxy(api):
    p = BlackholeProxy(api.port)
    yield p
    p.close()


@pytest.fixture
def cut_ns(kube):
    name = f"h-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(kube).create_namespace({"metadata": {"name": name}})
    return name


def test_one_replica_is_not_ready_within_15s_and_converges_within_15s_after(
    api, kube, proxy, cut_ns, tmp_path
):
    shim = SimpleNamespace(kubeconfig=proxy.kubeconfig(api.kubeconfig, tmp_path / "kubeconfig"))
    op = Operator(shim, tmp_path).start()
    try:
        op.wait_ready()
        cut = run_cut(kube, cut_ns, proxy, op, [op])
        assert cut.not_ready_after <= NOT_READY_WITHIN, cut
        assert "watches: stale watches:" in cut.reason and "no answer" in cut.reason, cut.reason
        assert cut.converged_after <= CONVERGED_WITHIN, cut
        assert op.metric("operatord_watch_restarts_total", resource=RESOURCE, reason="idle") >= 1
        assert op.metric("operatord_watch_checks_total", resource=RESOURCE, result="unanswered")
        assert op.metric("operatord_watch_up", resource=RESOURCE) == 1
    finally:
        code = op.stop()
        if code != 0:
            print(op.output()[-5000:])


def test_two_elected_replicas_are_not_ready_within_15s_and_converge_within_15s_after(
    api, kube, proxy, cut_ns, tmp_path
):
    """Both replicas reach the API server only through the proxy. The lease (60 s, renew
    deadline 45 s) outlasts the cut, so the leader keeps it and the watch checks, not the
    lease, must notice the cut; the (warm) standby must neither take over nor get in the way,
    and is ready again once its own watches have recovered."""
    shim = SimpleNamespace(kubeconfig=proxy.kubeconfig(api.kubeconfig, tmp_path / "kubeconfig"))
    election = {
        "enabled": True,
        "leaseName": f"hang-{uuid.uuid4().hex[:6]}",
        "leaseNamespace": "default",
        "leaseDurationSeconds": 60,
        "renewDeadlineSeconds": 45,
        "retryPeriodSeconds": 2,
    }
    ops = []
    try:
        for i in range(2):
            (tmp_path / f"r{i}").mkdir()
            op = Operator(shim, tmp_path / f"r{i}", leaderElection=election).start()
            ops.append(op)
        for op in ops:
            op.wait_ready()
        leader = wait_for(
            lambda: next((op for op in ops if op.metric("operatord_leader") == 1), None),
            30,
            message="a leader",
        )
        standby = next(op for op in ops if op is not leader)
        cut = run_cut(kube, cut_ns, proxy, leader, ops)
        assert cut.not_ready_after <= NOT_READY_WITHIN, cut
        assert cut.converged_after <= CONVERGED_WITHIN, cut
        assert leader.metric("operatord_leader") == 1  # kept its lease through the cut
        assert standby.metric("operatord_leader") == 0
        # A warm standby (the default) watches too: its readiness follows its watches, so it
        # is ready again once they have recovered after the cut.
        wait_for(
            lambda: readyz(standby)[0] == 200,
            CONVERGED_WITHIN,
            message="the warm standby's watches recovered",
        )
    finally:
        for op in ops:
            code = op.stop()
            if code != 0:
                print(op.output()[-5000:])
