"""Run-time messages that say what to do: child-name conflicts, children that never settle."""

from __future__ import annotations

import shlex

from conftest import wait_for
from kubernetes import client
from widgets import create_widget, get_widget


def events_about(kube, ns, name):
    items = client.CoreV1Api(kube).list_namespaced_event(ns).items
    return [e for e in items if e.involved_object.name == name]


def test_a_child_name_conflict_is_counted_apart_and_its_event_says_how_to_adopt(
    operator, kube, ns, api
):
    client.CoreV1Api(kube).create_namespaced_config_map(
        ns, {"metadata": {"name": "mine"}, "data": {"size": "old"}}
    )
    op = operator(namespace=ns)
    create_widget(kube, ns, "mine", size=1)
    event = wait_for(
        lambda: [e for e in events_about(kube, ns, "mine") if e.reason == "ChildNameConflict"],
        30,
        message="ChildNameConflict event",
    )[0]
    assert event.type == "Warning"
    assert "already exists and is not a child of this parent" in event.message
    assert op.metric("operatord_syncs_total", result="conflict") >= 1
    assert op.metric("operatord_syncs_total", result="invalid") == 0
    assert not [e for e in events_about(kube, ns, "mine") if e.reason == "SyncFailed"]
    # Doing what the Event says adopts the object: the next sync takes it over.
    command = event.message.split("(", 1)[1].split(")", 1)[0]
    assert command.startswith("kubectl label configmap mine -n ")
    _, _, kind, name, _, namespace, label = shlex.split(command)
    key, value = label.split("=")
    client.CoreV1Api(kube).patch_namespaced_config_map(
        name, namespace, {"metadata": {"labels": {key: value}}}
    )
    wait_for(
        lambda: ((get_widget(kube, ns, "mine") or {}).get("status") or {}).get("ready"),
        30,
        message="adopted and ready",
    )
    cm = client.CoreV1Api(kube).read_namespaced_config_map("mine", ns)
    assert cm.data == {"size": "1"}
    assert cm.metadata.owner_references[0].name == "mine"
