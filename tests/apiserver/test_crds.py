"""CustomResourceDefinitions: serving new types, scopes, status subresource, removal."""

import kubernetes
import pytest
from kubernetes.client import ApiException

from .conftest import raw, wait_for


def widget(name, **spec):
    return {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": spec,
    }


def test_crd_is_established(client, widgets):
    crd = kubernetes.client.ApiextensionsV1Api(client).read_custom_resource_definition(
        "widgets.example.com"
    )
    conds = {c.type: c.status for c in crd.status.conditions}
    assert conds == {"NamesAccepted": "True", "Established": "True"}
    assert crd.status.accepted_names.kind == "Widget" and crd.status.stored_versions == ["v1"]


def test_namespaced_custom_object_crud(custom, widgets, ns):
    w = custom.create_namespaced_custom_object(
        "example.com", "v1", ns, "widgets", widget("w1", size=1)
    )
    assert w["metadata"]["generation"] == 1 and w["metadata"]["uid"]
    got = custom.get_namespaced_custom_object("example.com", "v1", ns, "widgets", "w1")
    assert got["spec"] == {"size": 1}
    items = custom.list_namespaced_custom_object("example.com", "v1", ns, "widgets")["items"]
    assert [i["metadata"]["name"] for i in items] == ["w1"] and items[0]["kind"] == "Widget"
    custom.delete_namespaced_custom_object("example.com", "v1", ns, "widgets", "w1")
    with pytest.raises(ApiException) as e:
        custom.get_namespaced_custom_object("example.com", "v1", ns, "widgets", "w1")
    assert e.value.status == 404


def test_status_subresource_split(custom, widgets, ns):
    w = custom.create_namespaced_custom_object(
        "example.com", "v1", ns, "widgets", dict(widget("w", size=1), status={"ready": True})
    )
    assert "status" not in w  # ignored on the main endpoint
    w = custom.patch_namespaced_custom_object_status(
        "example.com", "v1", ns, "widgets", "w", {"status": {"ready": True}, "spec": {"size": 99}}
    )
    assert w["status"] == {"ready": True} and w["spec"] == {"size": 1}  # /status ignores spec
    assert w["metadata"]["generation"] == 1
    w = custom.patch_namespaced_custom_object(
        "example.com", "v1", ns, "widgets", "w", {"spec": {"size": 2}, "status": {"ready": False}}
    )
    assert w["spec"] == {"size": 2} and w["status"] == {"ready": True}
    assert w["metadata"]["generation"] == 2
    w["status"] = {"ready": "replaced"}
    w = custom.replace_namespaced_custom_object_status("example.com", "v1", ns, "widgets", "w", w)
    assert w["status"] == {"ready": "replaced"}


def test_no_status_subresource_means_status_is_ordinary(api, custom, ns):
    api.apply_crd("plain.example.com", "v1", "Plain", namespaced=True, status_subresource=False)
    obj = {
        "apiVersion": "plain.example.com/v1",
        "kind": "Plain",
        "metadata": {"name": "p"},
        "status": {"x": 1},
    }
    out = custom.create_namespaced_custom_object("plain.example.com", "v1", ns, "plains", obj)
    assert out["status"] == {"x": 1}
    with pytest.raises(ApiException) as e:
        custom.get_namespaced_custom_object_status("plain.example.com", "v1", ns, "plains", "p")
    assert e.value.status == 404


def test_cluster_scoped_type(api, custom):
    api.apply_crd("cluster.example.com", "v1", "Tenant", namespaced=False)
    obj = {
        "apiVersion": "cluster.example.com/v1",
        "kind": "Tenant",
        "metadata": {"name": "acme"},
        "spec": {},
    }
    out = custom.create_cluster_custom_object("cluster.example.com", "v1", "tenants", obj)
    assert "namespace" not in out["metadata"]
    assert custom.get_cluster_custom_object("cluster.example.com", "v1", "tenants", "acme")[
        "metadata"
    ]["uid"]


def test_strategic_merge_patch_on_custom_resource_is_415(client, custom, widgets, ns):
    custom.create_namespaced_custom_object("example.com", "v1", ns, "widgets", widget("w", size=1))
    status, body = raw(
        client,
        "PATCH",
        f"/apis/example.com/v1/namespaces/{ns}/widgets/w",
        {"spec": {"size": 2}},
        ctype="application/strategic-merge-patch+json",
    )
    assert status == 415 and body["reason"] == "UnsupportedMediaType"


def test_deleting_crd_removes_objects_and_type(api, client, custom):
    api.apply_crd("gone.example.com", "v1", "Ghost", namespaced=False)
    obj = {"apiVersion": "gone.example.com/v1", "kind": "Ghost", "metadata": {"name": "g"}}
    custom.create_cluster_custom_object("gone.example.com", "v1", "ghosts", obj)
    kubernetes.client.ApiextensionsV1Api(client).delete_custom_resource_definition(
        "ghosts.gone.example.com"
    )

    def gone():
        status, _ = raw(client, "GET", "/apis/gone.example.com/v1/ghosts")
        return status == 404

    wait_for(gone)
    groups = {g.name for g in kubernetes.client.ApisApi(client).get_api_versions().groups}
    assert "gone.example.com" not in groups


def test_invalid_crd_is_422(client):
    bad = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "wrong.example.com"},
        "spec": {
            "group": "example.com",
            "names": {"plural": "things", "kind": "Thing"},
            "scope": "Namespaced",
            "versions": [{"name": "v1", "served": True, "storage": True}],
        },
    }
    status, body = raw(
        client, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", bad
    )
    assert status == 422 and body["reason"] == "Invalid"


def test_multiple_served_versions(client, custom):
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "multis.mv.example.com"},
        "spec": {
            "group": "mv.example.com",
            "names": {"plural": "multis", "kind": "Multi"},
            "scope": "Namespaced",
            "versions": [
                {"name": "v1beta1", "served": True, "storage": False},
                {"name": "v1", "served": True, "storage": True},
            ],
        },
    }
    kubernetes.client.ApiextensionsV1Api(client).create_custom_resource_definition(crd)
    obj = {
        "apiVersion": "mv.example.com/v1",
        "kind": "Multi",
        "metadata": {"name": "m"},
        "spec": {"a": 1},
    }
    custom.create_namespaced_custom_object("mv.example.com", "v1", "default", "multis", obj)
    old = custom.get_namespaced_custom_object("mv.example.com", "v1beta1", "default", "multis", "m")
    assert old["apiVersion"] == "mv.example.com/v1beta1" and old["spec"] == {"a": 1}
    status, doc = raw(client, "GET", "/apis/mv.example.com")
    assert doc["preferredVersion"]["version"] == "v1"
