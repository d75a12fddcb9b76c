"""Discovery documents, validated by the official client's strict models."""

import kubernetes

from .conftest import raw


def test_version(client):
    info = kubernetes.client.VersionApi(client).get_code()
    assert info.major == "1" and info.git_version.startswith("v1.")


def test_core_and_groups(client):
    assert kubernetes.client.CoreApi(client).get_api_versions().versions == ["v1"]
    groups = {g.name: g for g in kubernetes.client.ApisApi(client).get_api_versions().groups}
    for g in ("apps", "coordination.k8s.io", "events.k8s.io", "apiextensions.k8s.io"):
        assert g in groups and groups[g].preferred_version.version == "v1"


def test_resource_lists(client):
    core = {r.name: r for r in kubernetes.client.CoreV1Api(client).get_api_resources().resources}
    for name in (
        "namespaces",
        "configmaps",
        "secrets",
        "services",
        "serviceaccounts",
        "pods",
        "events",
    ):
        assert name in core and "watch" in core[name].verbs
    assert core["namespaces"].namespaced is False and core["pods"].namespaced is True
    assert "pods/status" in core
    apps = {r.name for r in kubernetes.client.AppsV1Api(client).get_api_resources().resources}
    assert {"deployments", "statefulsets"} <= apps
    leases = kubernetes.client.CoordinationV1Api(client).get_api_resources().resources
    assert [r.kind for r in leases] == ["Lease"]
    assert kubernetes.client.EventsV1Api(client).get_api_resources().resources[0].kind == "Event"
    crds = kubernetes.client.ApiextensionsV1Api(client).get_api_resources().resources
    assert crds[0].name == "customresourcedefinitions"


def test_group_document_and_unknown(client):
    status, doc = raw(client, "GET", "/apis/apps")
    assert (
        status == 200
        and doc["kind"] == "APIGroup"
        and doc["preferredVersion"]["groupVersion"] == "apps/v1"
    )
    status, doc = raw(client, "GET", "/apis/nope.example.com/v1")
    assert status == 404 and doc["kind"] == "Status" and doc["reason"] == "NotFound"


def test_crd_appears_in_discovery(api, client):
    api.apply_crd("disc.example.com", "v1alpha1", "Gadget", "gadgets", namespaced=False)
    groups = {g.name for g in kubernetes.client.ApisApi(client).get_api_versions().groups}
    assert "disc.example.com" in groups
    status, doc = raw(client, "GET", "/apis/disc.example.com/v1alpha1")
    assert status == 200
    res = {r["name"]: r for r in doc["resources"]}
    assert res["gadgets"]["namespaced"] is False and res["gadgets"]["kind"] == "Gadget"
    assert "gadgets/status" in res
