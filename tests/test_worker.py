"""A worker in-process against the embedded API server: results, events, no writes on failure."""

from pathlib import Path

import pytest
from kubernetes import client

from operatord.config import Config
from operatord.kube import ClientSettings
from operatord.testing import ApiServer
from operatord.worker import Worker

E2E = Path(__file__).resolve().parent / "e2e"


@pytest.fixture(scope="module")
def api():
    with ApiServer() as server:
        # no schema: the driven handler reads spec fields (fail, ...) the example CRD's schema
        # would prune
        server.apply_crd("example.com", "v1", "Widget")
        yield server


def make_worker(api, **kwargs) -> Worker:
    config = Config.from_dict(
        {
            "name": "unit",
            "handler": "handlers:Driven",
            "pythonPath": [str(E2E)],
            "parent": {"apiVersion": "example.com/v1", "kind": "Widget"},
            "children": [{"apiVersion": "v1", "kind": "ConfigMap"}],
            "leaderElection": {"enabled": False},
        }
    )
    return Worker(0, config, ClientSettings(kubeconfig=api.kubeconfig), **kwargs)


def widget(api, name, **spec):
    return client.CustomObjectsApi(api.client()).create_namespaced_custom_object(
        "example.com",
        "v1",
        "default",
        "widgets",
        {
            "apiVersion": "example.com/v1",
            "kind": "Widget",
            "metadata": {"name": name},
            "spec": spec,
        },
    )


def events_about(api, name):
    items = client.CoreV1Api(api.client()).list_namespaced_event("default").items
    return [e for e in items if e.involved_object.name == name]


def test_repeated_failures_update_one_event(api):
    worker = make_worker(api, event_interval=0)
    parent = widget(api, "failing", fail=True)
    for _ in range(3):
        result = worker.handle({"uid": parent["metadata"]["uid"], "parent": parent, "children": []})
        assert result["outcome"] == "error"
        assert "asked to fail" in result["error"]
    (event,) = events_about(api, "failing")
    assert (event.reason, event.type, event.count) == ("SyncFailed", "Warning", 3)
    assert event.involved_object.uid == parent["metadata"]["uid"]
    assert "asked to fail" in event.message


def test_events_are_rate_limited_per_parent(api):
    worker = make_worker(api, event_interval=3600)
    parent = widget(api, "limited", fail=True)
    for _ in range(3):
        worker.handle({"uid": parent["metadata"]["uid"], "parent": parent, "children": []})
    (event,) = events_about(api, "limited")
    assert event.count == 1


def test_a_failed_sync_writes_nothing_but_the_finalizer(api):
    worker = make_worker(api)
    parent = widget(api, "nothing", fail=True)
    result = worker.handle({"uid": parent["metadata"]["uid"], "parent": parent, "children": []})
    written = [(w["action"], w["object"]["kind"]) for w in result["written"]]
    assert written == [("upsert", "Widget")]  # the finalizer, added before the first sync
    assert result["written"][0]["object"]["metadata"]["finalizers"] == ["operatord.io/unit"]
    assert (
        client.CoreV1Api(api.client())
        .list_namespaced_config_map("default", field_selector="metadata.name=nothing")
        .items
        == []
    )


def test_a_good_sync_reports_what_it_wrote(api):
    worker = make_worker(api)
    parent = widget(api, "good", size=4)
    result = worker.handle({"uid": parent["metadata"]["uid"], "parent": parent, "children": []})
    assert result["outcome"] == "ok"
    kinds = [(w["action"], w["object"]["kind"]) for w in result["written"]]
    assert kinds == [("upsert", "Widget"), ("upsert", "ConfigMap"), ("upsert", "Widget")]
    cm = result["written"][1]["object"]
    assert cm["data"] == {"size": "4"}
    assert cm["metadata"]["resourceVersion"]  # as the API server returned it
