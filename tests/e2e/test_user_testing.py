"""The way README tells users to test their operator end to end, as a test of its own."""

import socket
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from operatord.testing import ApiServer, OperatorProcess, wait_for

REPO = Path(__file__).resolve().parents[2]


def _widget_config(**extra) -> dict:
    return {
        "name": "widget-operator",
        "handler": "examples.widgets:Widgets",
        "pythonPath": [str(REPO)],
        "parent": {"apiVersion": "example.com/v1", "kind": "Widget"},
        "children": [{"apiVersion": "v1", "kind": "ConfigMap"}],
        "workers": 1,
        **extra,
    }


def test_user_runs_their_operator_against_the_embedded_api_server(tmp_path):
    config = _widget_config()
    with ApiServer() as api:
        kube = api.client()
        crd = yaml.safe_load((REPO / "examples" / "widget-crd.yaml").read_text())
        client.ApiextensionsV1Api(kube).create_custom_resource_definition(crd)
        with OperatorProcess(api, config, workdir=tmp_path) as op:
            op.wait_ready()
            widgets = client.CustomObjectsApi(kube)
            widgets.create_namespaced_custom_object(
                "example.com",
                "v1",
                "default",
                "widgets",
                {
                    "apiVersion": "example.com/v1",
                    "kind": "Widget",
                    "metadata": {"name": "w"},
                    "spec": {"size": 2},
                },
            )

            def ready():
                w = widgets.get_namespaced_custom_object(
                    "example.com", "v1", "default", "widgets", "w"
                )
                return (w.get("status") or {}).get("ready")

            wait_for(ready, timeout=30, message="widget ready")
            cm = client.CoreV1Api(kube).read_namespaced_config_map("w", "default")
            assert cm.data["size"] == "2"
            assert op.metric("operatord_syncs_total", result="ok") >= 1
            # the sync ran the handler again after creating the ConfigMap
            assert op.metric("operatord_handler_calls_total", method="sync") >= 2
            assert (
                op.metric("operatord_child_writes_total", kind="ConfigMap", operation="create") == 1
            )
            assert any(r.get("event") == "caches synced" for r in op.log_records())
        assert op.proc.returncode == 0  # SIGTERM on leaving the block: drained, exit 0


def test_a_picked_port_taken_before_the_daemon_binds_it_is_picked_again(tmp_path):
    with ApiServer() as api:
        crd = yaml.safe_load((REPO / "examples" / "widget-crd.yaml").read_text())
        client.ApiextensionsV1Api(api.client()).create_custom_resource_definition(crd)
        op = OperatorProcess(api, _widget_config(), workdir=tmp_path)
        taken = op.metrics_port
        with socket.socket() as squatter:  # another process got there first
            squatter.bind(("127.0.0.1", taken))
            squatter.listen()
            with op:
                op.wait_ready()
                assert op.metrics_port != taken
                assert op.config["metrics"]["port"] == op.metrics_port
                assert op.metric("operatord_workers_alive") == 1
                assert f"port {taken} is already in use" in op.output()


def test_a_port_the_test_chose_is_not_changed_when_it_is_taken(tmp_path):
    with ApiServer() as api, socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        op = OperatorProcess(api, _widget_config(metrics={"port": taken}), workdir=tmp_path)
        with op, pytest.raises(AssertionError, match="exited with 3"):
            op.wait_ready()
        assert op.metrics_port == taken
