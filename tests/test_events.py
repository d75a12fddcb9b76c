"""Events about parents: aggregation, rate limit, redaction, against the embedded API server."""

from pathlib import Path

import pytest
import yaml
from kubernetes import client

from operatord.events import EventRecorder
from operatord.kube import ClientSettings, Kube
from operatord.testing import ApiServer, wait_for

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def api():
    with ApiServer() as server:
        kube = server.client()
        crd = yaml.safe_load((REPO / "examples" / "widget-crd.yaml").read_text())
        client.ApiextensionsV1Api(kube).create_custom_resource_definition(crd)
        yield server


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


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def events_about(api, name):
    items = client.CoreV1Api(api.client()).list_namespaced_event("default").items
    return [e for e in items if e.involved_object.name == name]


def recorder(api, **kwargs):
    return EventRecorder(
        Kube(ClientSettings(kubeconfig=api.kubeconfig)), "operatord-unit", **kwargs
    )


def test_repeats_update_one_event_with_the_count(api):
    rec = recorder(api, interval=0)
    parent = widget(api, "failing", fail=True)
    for _ in range(3):
        assert rec.post(parent, "SyncFailed", "asked to fail")
        assert rec.flush()
    (event,) = events_about(api, "failing")
    assert (event.reason, event.type, event.count) == ("SyncFailed", "Warning", 3)
    assert event.involved_object.uid == parent["metadata"]["uid"]
    assert event.message == "asked to fail"
    assert event.source.component == "operatord-unit"


def test_rate_limited_repeats_are_counted_into_the_next_call(api):
    clock = Clock()
    rec = recorder(api, interval=60, clock=clock)
    parent = widget(api, "limited", fail=True)
    assert rec.post(parent, "SyncFailed", "one")
    assert not rec.post(parent, "SyncFailed", "two")
    assert not rec.post(parent, "SyncFailed", "three")
    assert rec.flush()
    (event,) = events_about(api, "limited")
    assert event.count == 1
    clock.now += 61
    assert rec.post(parent, "SyncFailed", "four")
    assert rec.flush()
    (event,) = events_about(api, "limited")
    assert (event.count, event.message) == (4, "four")


def test_secrets_in_messages_never_reach_an_event(api):
    rec = recorder(api, interval=0)
    parent = widget(api, "leaky", fail=True)
    rec.post(
        parent, "SyncFailed", "login failed: password=hunter2 token=abc Authorization: Bearer xyz"
    )
    assert rec.flush()
    (event,) = events_about(api, "leaky")
    for secret in ("hunter2", "abc", "xyz"):
        assert secret not in event.message
    assert "[REDACTED]" in event.message


def test_a_closed_fence_writes_no_event(api):
    def fence(parent):
        assert parent["metadata"]["name"] == "fenced-event"  # fenced per parent
        raise RuntimeError("lease gone")

    rec = recorder(api, interval=0, guard=fence)
    parent = widget(api, "fenced-event", fail=True)
    rec.post(parent, "SyncFailed", "x")
    assert rec.flush()
    assert events_about(api, "fenced-event") == []


def test_an_expired_event_is_posted_anew(api):
    rec = recorder(api, interval=0)
    parent = widget(api, "expired", fail=True)
    rec.post(parent, "SyncFailed", "first")
    assert rec.flush()
    (event,) = events_about(api, "expired")
    client.CoreV1Api(api.client()).delete_namespaced_event(event.metadata.name, "default")
    rec.post(parent, "SyncFailed", "second")
    assert rec.flush()
    wait_for(lambda: len(events_about(api, "expired")) == 1, 5)
    (event,) = events_about(api, "expired")
    assert (event.count, event.message) == (1, "second")
