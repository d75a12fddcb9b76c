"""Finalizers, deletion preconditions, propagation policies, garbage collection, namespaces."""

import threading

import pytest
from kubernetes import watch
from kubernetes.client import ApiException

from .conftest import raw, wait_for


def gone(fn, *args):
    def check():
        try:
            fn(*args)
        except ApiException as e:
            return e.status == 404
        return False

    return check


def widget(name, **meta):
    return {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": dict(name=name, **meta),
        "spec": {},
    }


def owned_cm(name, owner, block=False):
    ref = {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
    }
    if block:
        ref["blockOwnerDeletion"] = True
    return {"metadata": {"name": name, "ownerReferences": [ref]}, "data": {}}


def test_finalizers_keep_object_until_removed(client, core, ns):
    core.create_namespaced_config_map(ns, {"metadata": {"name": "f", "finalizers": ["x.io/hold"]}})
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    events = []

    def collect():
        for ev in watch.Watch().stream(
            core.list_namespaced_config_map, ns, resource_version=rv, timeout_seconds=5
        ):
            events.append((ev["type"], ev["raw_object"]["metadata"].get("deletionTimestamp")))
            if ev["type"] == "DELETED":
                return

    t = threading.Thread(target=collect)
    t.start()
    status, body = raw(client, "DELETE", f"/api/v1/namespaces/{ns}/configmaps/f")
    assert status == 200 and body["metadata"]["deletionTimestamp"]
    assert core.read_namespaced_config_map("f", ns).metadata.deletion_timestamp
    with pytest.raises(ApiException) as e:  # no new finalizers while deleting
        core.patch_namespaced_config_map(
            "f", ns, {"metadata": {"finalizers": ["x.io/hold", "y.io/new"]}}
        )
    assert e.value.status == 422
    core.patch_namespaced_config_map("f", ns, [{"op": "remove", "path": "/metadata/finalizers"}])
    t.join(10)
    wait_for(gone(core.read_namespaced_config_map, "f", ns))
    assert [t for t, _ in events] == ["MODIFIED", "DELETED"] and events[0][1]


def test_delete_preconditions(core, ns):
    a = core.create_namespaced_config_map(ns, {"metadata": {"name": "a"}})
    with pytest.raises(ApiException) as e:
        core.delete_namespaced_config_map("a", ns, body={"preconditions": {"uid": "not-the-uid"}})
    assert e.value.status == 409
    with pytest.raises(ApiException) as e:
        core.delete_namespaced_config_map("a", ns, body={"preconditions": {"resourceVersion": "1"}})
    assert e.value.status == 409
    core.delete_namespaced_config_map("a", ns, body={"preconditions": {"uid": a.metadata.uid}})


def test_background_gc_deletes_children_of_custom_parent(custom, core, widgets, ns):
    parent = custom.create_namespaced_custom_object("example.com", "v1", ns, "widgets", widget("p"))
    core.create_namespaced_config_map(ns, owned_cm("child", parent))
    core.create_namespaced_secret(ns, owned_cm("child-secret", parent))
    custom.delete_namespaced_custom_object("example.com", "v1", ns, "widgets", "p")
    wait_for(gone(core.read_namespaced_config_map, "child", ns))
    wait_for(gone(core.read_namespaced_secret, "child-secret", ns))


def test_gc_deletes_dependents_with_dangling_owner(core, ns):
    fake = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "ghost", "uid": "0000-gone"},
    }
    core.create_namespaced_config_map(ns, owned_cm("orphaned", fake))
    wait_for(gone(core.read_namespaced_config_map, "orphaned", ns))


def test_gc_keeps_dependent_with_a_live_owner(core, ns):
    a = core.create_namespaced_config_map(ns, {"metadata": {"name": "a"}}).to_dict()
    b = core.create_namespaced_config_map(ns, {"metadata": {"name": "b"}}).to_dict()
    for o in (a, b):
        o["apiVersion"], o["kind"], o["metadata"]["uid"] = "v1", "ConfigMap", o["metadata"]["uid"]
    dep = owned_cm("dep", a)
    dep["metadata"]["ownerReferences"].append(
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "b", "uid": b["metadata"]["uid"]}
    )
    core.create_namespaced_config_map(ns, dep)
    core.delete_namespaced_config_map("a", ns)
    wait_for(lambda: len(core.read_namespaced_config_map("dep", ns).metadata.owner_references) == 1)
    core.delete_namespaced_config_map("b", ns)
    wait_for(gone(core.read_namespaced_config_map, "dep", ns))


def test_foreground_waits_for_blocking_dependents(custom, core, widgets, ns):
    parent = custom.create_namespaced_custom_object("example.com", "v1", ns, "widgets", widget("p"))
    child = owned_cm("child", parent, block=True)
    child["metadata"]["finalizers"] = ["x.io/hold"]
    core.create_namespaced_config_map(ns, child)
    custom.delete_namespaced_custom_object(
        "example.com", "v1", ns, "widgets", "p", body={"propagationPolicy": "Foreground"}
    )
    p = custom.get_namespaced_custom_object("example.com", "v1", ns, "widgets", "p")
    assert (
        "foregroundDeletion" in p["metadata"]["finalizers"] and p["metadata"]["deletionTimestamp"]
    )
    wait_for(lambda: core.read_namespaced_config_map("child", ns).metadata.deletion_timestamp)
    # the blocking child still exists, so the parent does too
    assert custom.get_namespaced_custom_object("example.com", "v1", ns, "widgets", "p")
    core.patch_namespaced_config_map(
        "child", ns, [{"op": "remove", "path": "/metadata/finalizers"}]
    )
    wait_for(gone(custom.get_namespaced_custom_object, "example.com", "v1", ns, "widgets", "p"))


def test_orphan_keeps_dependents_and_drops_references(custom, core, widgets, ns):
    parent = custom.create_namespaced_custom_object("example.com", "v1", ns, "widgets", widget("p"))
    core.create_namespaced_config_map(ns, owned_cm("child", parent))
    custom.delete_namespaced_custom_object(
        "example.com", "v1", ns, "widgets", "p", body={"propagationPolicy": "Orphan"}
    )
    wait_for(gone(custom.get_namespaced_custom_object, "example.com", "v1", ns, "widgets", "p"))
    assert not core.read_namespaced_config_map("child", ns).metadata.owner_references


def test_deletecollection_by_label(client, core, ns):
    for i in range(3):
        core.create_namespaced_config_map(
            ns, {"metadata": {"name": f"c{i}", "labels": {"del": "yes" if i else "no"}}}
        )
    core.delete_collection_namespaced_config_map(ns, label_selector="del=yes")
    assert [c.metadata.name for c in core.list_namespaced_config_map(ns).items] == ["c0"]


def test_namespace_deletion_removes_content(core):
    core.create_namespace({"metadata": {"name": "doomed"}})
    core.create_namespaced_config_map("doomed", {"metadata": {"name": "x"}})
    core.delete_namespace("doomed")
    wait_for(gone(core.read_namespace, "doomed"))
    assert (
        core.list_config_map_for_all_namespaces(field_selector="metadata.namespace=doomed").items
        == []
    )


def test_terminating_namespace_forbids_creation(core):
    core.create_namespace({"metadata": {"name": "closing"}})
    core.create_namespaced_config_map(
        "closing", {"metadata": {"name": "held", "finalizers": ["x.io/h"]}}
    )
    core.delete_namespace("closing")
    assert core.read_namespace("closing").status.phase == "Terminating"
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map("closing", {"metadata": {"name": "new"}})
    assert e.value.status == 403
    core.patch_namespaced_config_map(
        "held", "closing", [{"op": "remove", "path": "/metadata/finalizers"}]
    )
    wait_for(gone(core.read_namespace, "closing"))
