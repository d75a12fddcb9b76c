"""The test harness (`OperatorProcess`) does not hide mistakes: a daemon that exited fails
`wait_ready` at once, a misspelt metric raises, and a relative pythonPath in a dict config
resolves where the test expects, whatever the daemon's working directory."""

from __future__ import annotations

import os
import time
import urllib.request
from pathlib import Path

import pytest
from kubernetes import client

from operatord.testing import OperatorProcess, wait_for

REPO = Path(__file__).resolve().parents[2]


def widget_config(**overrides) -> dict:
    return {
        "name": "harness",
        "handler": "examples.widgets:Widgets",
        "pythonPath": [str(REPO)],
        "parent": {"apiVersion": "example.com/v1", "kind": "Widget"},
        "children": [{"apiVersion": "v1", "kind": "ConfigMap"}],
        "workers": 1,
        "namespace": "harness",
        **overrides,
    }


def test_wait_ready_fails_at_once_with_the_log_when_the_daemon_exited(api, tmp_path):
    op = OperatorProcess(api, widget_config(handler="no_such_module:Nope"), workdir=tmp_path)
    with op:
        start = time.monotonic()
        with pytest.raises(AssertionError) as failure:
            op.wait_ready(timeout=60)
        assert time.monotonic() - start < 20  # not the whole timeout
    assert "exited with 1" in str(failure.value)
    assert "no_such_module" in str(failure.value)  # the daemon's own words


def test_start_inside_with_does_not_start_a_second_daemon(api, kube, tmp_path):
    with OperatorProcess(api, widget_config(), workdir=tmp_path) as op:
        first = op.proc
        assert op.start() is op and op.proc is first
        op.wait_ready()
        assert first.poll() is None
    assert first.poll() is not None  # the one daemon was stopped by the with block
    again = op.start()  # after a stop, start runs it anew
    try:
        assert again.proc is not first
        again.wait_ready()
    finally:
        again.stop()


def test_metric_raises_for_an_unknown_name_and_counts_zero_for_a_known_one(api, kube, tmp_path):
    with OperatorProcess(api, widget_config(), workdir=tmp_path) as op:
        op.wait_ready()
        with pytest.raises(KeyError, match="operatord_sync_total"):
            op.metric("operatord_sync_total")  # the real name is operatord_syncs_total
        assert op.metric("operatord_syncs_total", result="timeout") == 0
        # a labelled family with no sample yet is known, not a typo
        assert op.metric("operatord_child_writes_total", kind="Secret") == 0


def test_relative_python_path_of_a_dict_config_resolves_against_base_dir(api, kube, tmp_path):
    handlers = tmp_path / "project" / "src"
    handlers.mkdir(parents=True)
    (handlers / "harness_handler.py").write_text(
        "from operatord import SyncResponse\n\n"
        "def sync(request):\n"
        "    return SyncResponse(status={'seen': True})\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    config = widget_config(handler="harness_handler:sync", pythonPath=["src"])
    op = OperatorProcess(api, config, workdir=elsewhere, base_dir=tmp_path / "project")
    assert op.config["pythonPath"] == [str(handlers)]
    cwd = os.getcwd()
    try:  # the daemon's cwd must not matter
        os.chdir(elsewhere)
        op.start()
    finally:
        os.chdir(cwd)
    with op:
        op.wait_ready()
        core = client.CoreV1Api(kube)
        if "harness" not in [n.metadata.name for n in core.list_namespace().items]:
            core.create_namespace({"metadata": {"name": "harness"}})
        widgets = client.CustomObjectsApi(kube)
        widgets.create_namespaced_custom_object(
            "example.com",
            "v1",
            "harness",
            "widgets",
            {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "rel"}},
        )

        def seen():
            w = widgets.get_namespaced_custom_object(
                "example.com", "v1", "harness", "widgets", "rel"
            )
            return (w.get("status") or {}).get("seen")

        wait_for(seen, 30, message="handler from the relative pythonPath ran")


def test_run_flags_beat_variables_and_the_daemon_exports_process_series(api, kube, tmp_path):
    op = OperatorProcess(
        api,
        widget_config(workers=1),
        workdir=tmp_path,
        env={"OPERATORD_WORKERS": "3", "OPERATORD_CONTROLLER_RUNTIME_METRICS": "true"},
        args=["--workers", "2"],
    )
    with op:
        op.wait_ready()
        # the workers_alive gauge is refreshed by the leader's housekeeping, not at readiness
        wait_for(
            lambda: op.metric("operatord_workers_alive", controller="harness") == 2,
            30,
            message="2 workers (the flag), not 3 (the variable) or 1 (the file)",
        )
        # controller-runtime series, switched on by the variable
        # (parents of the other tests on this API server may still be queued for a moment)
        wait_for(lambda: op.metric("workqueue_depth", name="harness") == 0, 30, message="depth 0")
        assert op.metric("leader_election_master_status", name="harness-leader") == 1
        # the leader's own process and every worker's, sampled from /proc
        assert op.metric("process_resident_memory_bytes") > 10_000_000
        for worker in ("0", "1"):
            wait_for(
                lambda w=worker: (
                    op.metric("operatord_worker_resident_memory_bytes", worker=w) > 10_000_000
                ),
                30,
                message=f"worker {worker} RSS",
            )
            # An idle worker forked from the preloaded fork server may not have used one
            # clock tick (10 ms) yet: its CPU series must exist, its value may still be 0.
            wait_for(
                lambda w=worker: any(
                    line.startswith("operatord_worker_cpu_seconds_total{")
                    and f'worker="{w}"' in line
                    for line in urllib.request.urlopen(
                        f"http://127.0.0.1:{op.metrics_port}/metrics", timeout=5
                    )
                    .read()
                    .decode()
                    .splitlines()
                ),
                30,
                message=f"worker {worker} CPU",
            )
