"""merge, JSON, strategic merge and server-side apply patches."""

import json

import pytest
from kubernetes.client import ApiException

from .conftest import cm, raw

APPLY = "application/apply-patch+yaml"


def test_merge_patch_removes_with_null(client, core, ns):
    core.create_namespaced_config_map(ns, {"metadata": {"name": "a"}, "data": {"x": "1", "y": "2"}})
    status, body = raw(
        client,
        "PATCH",
        f"/api/v1/namespaces/{ns}/configmaps/a",
        {"data": {"x": None, "z": "3"}},
        ctype="application/merge-patch+json",
    )
    assert status == 200 and body["data"] == {"y": "2", "z": "3"}


def test_json_patch(core, ns):
    core.create_namespaced_config_map(ns, cm("a"))
    out = core.patch_namespaced_config_map(
        "a",
        ns,
        [{"op": "add", "path": "/data/n", "value": "1"}, {"op": "remove", "path": "/data/k"}],
    )
    assert out.data == {"n": "1"}
    with pytest.raises(ApiException) as e:
        core.patch_namespaced_config_map("a", ns, [{"op": "test", "path": "/data/n", "value": "2"}])
    assert e.value.status == 422


def test_strategic_merge_patch_merges_containers_by_name(client, ns):
    import kubernetes

    core = kubernetes.client.CoreV1Api(client)
    core.create_namespaced_pod(
        ns,
        {
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]},
        },
    )
    pod = core.patch_namespaced_pod(
        "p", ns, {"spec": {"containers": [{"name": "b", "image": "z"}]}}
    )
    assert [(c.name, c.image) for c in pod.spec.containers] == [("a", "x"), ("b", "z")]


def test_patch_with_stale_resource_version_conflicts(core, ns):
    a = core.create_namespaced_config_map(ns, cm("a"))
    core.patch_namespaced_config_map("a", ns, {"data": {"k": "2"}})
    with pytest.raises(ApiException) as e:
        core.patch_namespaced_config_map(
            "a",
            ns,
            {"metadata": {"resourceVersion": a.metadata.resource_version}, "data": {"k": "3"}},
        )
    assert e.value.status == 409


def _apply(client, ns, obj, manager, force=False):
    q = {"fieldManager": manager}
    if force:
        q["force"] = "true"
    return raw(
        client,
        "PATCH",
        f"/api/v1/namespaces/{ns}/configmaps/{obj['metadata']['name']}",
        obj,
        query=q,
        ctype=APPLY,
    )


def test_server_side_apply_creates_and_tracks_manager(client, ns):
    obj = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "s", "labels": {"a": "1"}},
        "data": {"x": "1"},
    }
    status, body = _apply(client, ns, obj, "op-a")
    assert status == 201
    mf = body["metadata"]["managedFields"]
    assert [(m["manager"], m["operation"]) for m in mf] == [("op-a", "Apply")]
    assert mf[0]["fieldsV1"] == {"f:data": {"f:x": {}}, "f:metadata": {"f:labels": {"f:a": {}}}}
    # the same apply again is a no-op
    status, again = _apply(client, ns, obj, "op-a")
    assert (
        status == 200
        and again["metadata"]["resourceVersion"] == body["metadata"]["resourceVersion"]
    )


def test_server_side_apply_removes_fields_it_no_longer_applies(client, ns):
    _apply(
        client,
        ns,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "s"},
            "data": {"x": "1", "y": "2"},
        },
        "m",
    )
    _, body = _apply(
        client,
        ns,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {"x": "1"}},
        "m",
    )
    assert body["data"] == {"x": "1"}


def test_server_side_apply_conflicts_and_force(client, ns):
    _apply(
        client,
        ns,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {"x": "1"}},
        "a",
    )
    other = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {"x": "2"}}
    status, body = _apply(client, ns, other, "b")
    assert status == 409
    assert body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'Apply failed with 1 conflict: conflict with "a": .data.x',
        "reason": "Conflict",
        "details": {
            "causes": [
                {
                    "reason": "FieldManagerConflict",
                    "message": 'conflict with "a"',
                    "field": ".data.x",
                }
            ]
        },
        "code": 409,
    }
    # the same value is shared ownership, not a conflict
    status, body = _apply(
        client,
        ns,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {"x": "1"}},
        "c",
    )
    assert status == 200
    status, body = _apply(client, ns, other, "b", force=True)
    assert status == 200 and body["data"] == {"x": "2"}
    owners = {m["manager"]: m["fieldsV1"] for m in body["metadata"]["managedFields"]}
    assert owners == {"b": {"f:data": {"f:x": {}}}}


def test_update_takes_ownership_from_applier(client, core, ns):
    _apply(
        client,
        ns,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {"x": "1"}},
        "a",
    )
    status, body = raw(
        client,
        "PATCH",
        f"/api/v1/namespaces/{ns}/configmaps/s",
        {"data": {"x": "9"}},
        query={"fieldManager": "editor"},
        ctype="application/merge-patch+json",
    )
    owners = {
        m["manager"]: (m["operation"], m["fieldsV1"]) for m in body["metadata"]["managedFields"]
    }
    assert owners == {"editor": ("Update", {"f:data": {"f:x": {}}})}


def test_apply_requires_field_manager(client, ns):
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}}
    status, body = raw(client, "PATCH", f"/api/v1/namespaces/{ns}/configmaps/s", obj, ctype=APPLY)
    assert status == 400


def test_apply_yaml_body_on_custom_status(client, custom, widgets, ns):
    custom.create_namespaced_custom_object(
        "example.com",
        "v1",
        ns,
        "widgets",
        {
            "apiVersion": "example.com/v1",
            "kind": "Widget",
            "metadata": {"name": "w"},
            "spec": {"a": 1},
        },
    )
    yaml_body = (
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\nstatus:\n  ready: true\n"
    )
    req = client.param_serialize(
        "PATCH",
        f"/apis/example.com/v1/namespaces/{ns}/widgets/w/status",
        query_params=[("fieldManager", "ctl"), ("force", "true")],
        header_params={"Content-Type": APPLY, "Accept": "application/json"},
        body=yaml_body,
        auth_settings=["BearerToken"],
    )
    resp = client.call_api(*req)
    body = json.loads(resp.read())
    assert resp.status == 200 and body["status"] == {"ready": True} and body["spec"] == {"a": 1}
    assert any(m.get("subresource") == "status" for m in body["metadata"]["managedFields"])
