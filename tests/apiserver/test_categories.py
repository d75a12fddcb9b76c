"""Discovery categories: `kubectl get all` lists pods, services, deployments, statefulsets and
custom types in the `all` category, and a CRD's own categories work as resource names."""

import json

import pytest

from .conftest import raw, raw_http


@pytest.fixture(scope="module")
def doodads(api):
    crd = api.apply_crd("categories.example.com", "v1", "Doodad")
    crd["spec"]["names"]["categories"] = ["all", "toys"]
    status, _, body = raw_http(
        api,
        "PUT",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/doodads.categories.example.com",
        crd,
    )
    assert status == 200, body
    return crd


def test_discovery_lists_categories(client, doodads):
    _, core = raw(client, "GET", "/api/v1")
    cats = {r["name"]: r.get("categories") for r in core["resources"]}
    assert cats["pods"] == cats["services"] == ["all"]
    assert cats["configmaps"] is None and cats["secrets"] is None
    _, apps = raw(client, "GET", "/apis/apps/v1")
    cats = {r["name"]: r.get("categories") for r in apps["resources"]}
    assert cats["deployments"] == cats["statefulsets"] == ["all"]
    _, custom = raw(client, "GET", "/apis/categories.example.com/v1")
    assert custom["resources"][0]["categories"] == ["all", "toys"]


def test_kubectl_get_all(kubectl, doodads, ns):
    kubectl("create", "deployment", "d1", "-n", ns, "--image=nginx")
    kubectl("create", "service", "clusterip", "s1", "-n", ns, "--tcp=80:8080")
    kubectl("create", "configmap", "c1", "-n", ns)
    doodad = {
        "apiVersion": "categories.example.com/v1",
        "kind": "Doodad",
        "metadata": {"name": "x1", "namespace": ns},
    }
    kubectl("apply", "-f", "-", stdin=json.dumps(doodad))
    out = kubectl("get", "all", "-n", ns, "-o", "name").stdout.split()
    assert sorted(out) == sorted(
        ["service/s1", "deployment.apps/d1", "doodad.categories.example.com/x1"]
    )
    out = kubectl("get", "toys", "-n", ns, "-o", "name").stdout.split()
    assert out == ["doodad.categories.example.com/x1"]
    table = kubectl("get", "all", "-n", ns).stdout
    assert "NAME" in table and "service/s1" in table and "deployment.apps/d1" in table
