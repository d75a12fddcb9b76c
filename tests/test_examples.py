"""The example Widget operator, tested the way users should test theirs: no cluster at all.

Build a request from plain dicts with ``SyncRequest.build``, call the handler, look at the
response. ``validate_sync_response`` is what operatord runs on every response, so calling it here
catches a response operatord would reject.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from examples.widgets import Widgets
from operatord import FinalizeResponse, SyncRequest, SyncResponse, load_config
from operatord.handler import load_handler, validate_finalize_response, validate_sync_response

REPO = Path(__file__).resolve().parent.parent


def widget(name: str = "w1", size: int = 3, message: str = "hello", **extra) -> dict:
    return {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": name, "namespace": "team-a", "uid": f"uid-{name}", "generation": 1},
        "spec": {"size": size, "message": message, **extra},
    }


def config_map(name: str, data: dict) -> dict:
    """A ConfigMap as the API server would return it (extra fields included)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "team-a", "uid": "cm-uid", "resourceVersion": "7"},
        "data": data,
    }


def test_first_sync_desires_the_configmap_and_reports_not_ready():
    response = Widgets().sync(SyncRequest.build(widget()))
    assert response == SyncResponse(
        status={"ready": False, "configMap": "w1"},
        children=[
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "w1", "labels": {"example.com/widget": "w1"}},
                "data": {"size": "3", "message": "hello"},
            }
        ],
    )


def test_ready_once_the_observed_configmap_matches():
    observed = config_map("w1", {"size": "3", "message": "hello"})
    response = Widgets().sync(SyncRequest.build(widget(), children=[observed]))
    assert response.status == {"ready": True, "configMap": "w1"}


def test_not_ready_while_the_configmap_is_stale():
    stale = config_map("w1", {"size": "2", "message": "hello"})
    response = Widgets().sync(SyncRequest.build(widget(size=3), children=[stale]))
    assert response.status["ready"] is False
    # the desired ConfigMap carries the new spec; operatord updates the child to match
    assert response.children[0]["data"] == {"size": "3", "message": "hello"}


def test_a_configmap_of_another_widget_does_not_count():
    other = config_map("w2", {"size": "3", "message": "hello"})
    response = Widgets().sync(SyncRequest.build(widget("w1"), children=[other]))
    assert response.status["ready"] is False
    # only the own ConfigMap is desired: the stray one would be deleted
    assert [c["metadata"]["name"] for c in response.children] == ["w1"]


def test_missing_spec_fields_use_defaults():
    parent = widget()
    parent["spec"] = {}
    response = Widgets().sync(SyncRequest.build(parent))
    assert response.children[0]["data"] == {"size": "1", "message": ""}
    del parent["spec"]
    assert Widgets().sync(SyncRequest.build(parent)).children[0]["data"]["size"] == "1"


@pytest.mark.parametrize("size", [0, 1, 10_000])
def test_responses_pass_operatords_validation(size):
    cfg = load_config(REPO / "config" / "example.yaml")
    response = Widgets().sync(SyncRequest.build(widget(size=size)))
    validate_sync_response(response, default_namespace="team-a", allowed_types=cfg.child_keys)


def test_finalize_lets_the_widget_go():
    request = SyncRequest.build(widget(), children=[config_map("w1", {})], finalizing=True)
    response = Widgets().finalize(request)
    assert response == FinalizeResponse(finalized=True)
    validate_finalize_response(response)


def test_loads_by_the_import_path_of_the_example_config():
    cfg = load_config(REPO / "config" / "example.yaml")
    handler = load_handler(cfg.handler, cfg.python_path)
    assert isinstance(handler.target, Widgets)
    assert handler.sync(SyncRequest.build(widget())).status["configMap"] == "w1"


def test_crd_serves_the_configured_parent_type():
    crd = yaml.safe_load((REPO / "examples" / "widget-crd.yaml").read_text())
    cfg = load_config(REPO / "config" / "example.yaml")
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["spec"]["group"] == cfg.parent.group
    assert crd["spec"]["names"]["kind"] == cfg.parent.kind
    assert crd["metadata"]["name"] == f"{crd['spec']['names']['plural']}.{cfg.parent.group}"
    assert crd["spec"]["scope"] == "Namespaced"
    (version,) = crd["spec"]["versions"]
    assert version["name"] == cfg.parent.version
    assert version["subresources"] == {"status": {}}
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert spec["size"]["type"] == "integer"
    assert spec["message"]["type"] == "string"


def test_crd_is_a_valid_kubernetes_manifest():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    crd = yaml.safe_load((REPO / "examples" / "widget-crd.yaml").read_text())
    kubernetes_validate.validate(crd, kubernetes_validate.latest_version(), strict=True)


def test_async_probe_reports_whether_the_endpoint_answers():
    from examples.probes import Probes

    async def scenario():
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        handler = Probes()
        up = await handler.sync(SyncRequest.build(widget(endpoint=f"127.0.0.1:{port}")))
        server.close()
        await server.wait_closed()
        down = await handler.sync(SyncRequest.build(widget(endpoint=f"127.0.0.1:{port}")))
        return up, down

    up, down = asyncio.run(scenario())
    assert up.status["reachable"] is True and down.status["reachable"] is False
    assert validate_sync_response(up, default_namespace="team-a").status == up.status
    loaded = load_handler("examples.probes:Probes", [str(REPO)])
    assert loaded.sync_is_async
