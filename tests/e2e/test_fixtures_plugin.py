"""The opt-in pytest plugin users enable with pytest_plugins = ["operatord.testing.fixtures"]."""

from pathlib import Path

import yaml
from kubernetes import client

from operatord.testing import wait_for

pytest_plugins = ["operatord.testing.fixtures"]

REPO = Path(__file__).resolve().parents[2]


def test_fixtures_run_an_operator_against_the_embedded_api_server(apiserver, run_operator):
    kube = apiserver.client()
    crd = yaml.safe_load((REPO / "examples" / "widget-crd.yaml").read_text())
    client.ApiextensionsV1Api(kube).create_custom_resource_definition(crd)
    op = run_operator(
        {
            "name": "plugin-test",
            "handler": "examples.widgets:Widgets",
            "pythonPath": [str(REPO)],
            "parent": {"apiVersion": "example.com/v1", "kind": "Widget"},
            "children": [{"apiVersion": "v1", "kind": "ConfigMap"}],
            "workers": 1,
        }
    )
    client.CustomObjectsApi(kube).create_namespaced_custom_object(
        "example.com",
        "v1",
        "default",
        "widgets",
        {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "p"}, "spec": {}},
    )
    wait_for(
        lambda: client.CoreV1Api(kube).read_namespaced_config_map("p", "default"),
        30,
        message="child ConfigMap",
    )
    assert op.proc.poll() is None  # still running; the fixture stops it after the test
