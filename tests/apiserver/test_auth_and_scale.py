"""`kubectl auth can-i` / `auth whoami` (the review APIs) and the `/scale` subresource of CRDs
that declare it (and of Deployments), through kubectl and the official client."""

import json

import kubernetes
import pytest
from kubernetes.client import ApiException

from .conftest import raw, raw_http


def test_kubectl_auth_can_i_and_whoami(kubectl, ns):
    p = kubectl("auth", "can-i", "create", "pods", "-n", ns)
    assert p.stdout.strip() == "yes"
    p = kubectl("auth", "can-i", "delete", "widgets.example.com", "--all-namespaces", check=False)
    assert p.stdout.strip() == "yes"
    rules = kubectl("auth", "can-i", "--list", "-n", ns).stdout.splitlines()
    assert rules[0].split()[:2] == ["Resources", "Non-Resource"]
    assert rules[1].split()[:3] == ["*.*", "[]", "[]"]
    who = kubectl("auth", "whoami", "-o", "json").stdout
    assert json.loads(who)["status"]["userInfo"] == {
        "username": "operatord",
        "groups": ["system:masters", "system:authenticated"],
    }
    table = kubectl("auth", "whoami").stdout
    assert "Username" in table and "operatord" in table


def test_access_review_through_the_official_client(client):
    api = kubernetes.client.AuthorizationV1Api(client)
    review = api.create_self_subject_access_review(
        {"spec": {"resourceAttributes": {"verb": "get", "resource": "secrets", "namespace": "x"}}}
    )
    assert review.status.allowed is True
    assert review.spec.resource_attributes.resource == "secrets"
    status, body = raw(client, "GET", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")
    assert status == 405
    _, disco = raw(client, "GET", "/apis/authentication.k8s.io/v1")
    assert {r["name"]: r["verbs"] for r in disco["resources"]} == {"selfsubjectreviews": ["create"]}


SCALE = {
    "specReplicasPath": ".spec.replicas",
    "statusReplicasPath": ".status.replicas",
    "labelSelectorPath": ".status.selector",
}


@pytest.fixture(scope="module")
def scalers(api):
    crd = api.apply_crd("scale.example.com", "v1", "Scaler")
    crd["spec"]["versions"][0]["subresources"]["scale"] = SCALE
    status, _, body = raw_http(
        api,
        "PUT",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/scalers.scale.example.com",
        crd,
    )
    assert status == 200, body
    return crd


def test_discovery_lists_scale(client, scalers):
    _, disco = raw(client, "GET", "/apis/scale.example.com/v1")
    sub = next(r for r in disco["resources"] if r["name"] == "scalers/scale")
    assert sub["kind"] == "Scale" and sub["group"] == "autoscaling" and sub["version"] == "v1"
    assert sub["verbs"] == ["get", "patch", "update"]
    _, apps = raw(client, "GET", "/apis/apps/v1")
    assert "deployments/scale" in {r["name"] for r in apps["resources"]}


def test_kubectl_scale_a_custom_object(kubectl, custom, scalers, ns):
    custom.create_namespaced_custom_object(
        "scale.example.com",
        "v1",
        ns,
        "scalers",
        {
            "apiVersion": "scale.example.com/v1",
            "kind": "Scaler",
            "metadata": {"name": "s"},
            "spec": {"replicas": 1},
        },
    )
    custom.patch_namespaced_custom_object_status(
        "scale.example.com",
        "v1",
        ns,
        "scalers",
        "s",
        {"status": {"replicas": 1, "selector": "app=s"}},
    )
    out = kubectl("scale", "scaler", "s", "-n", ns, "--replicas=3").stdout
    assert out.strip() == "scaler.scale.example.com/s scaled"
    got = custom.get_namespaced_custom_object("scale.example.com", "v1", ns, "scalers", "s")
    assert got["spec"] == {"replicas": 3} and got["metadata"]["generation"] == 2
    sc = custom.get_namespaced_custom_object_scale("scale.example.com", "v1", ns, "scalers", "s")
    assert sc["kind"] == "Scale" and sc["apiVersion"] == "autoscaling/v1"
    assert sc["spec"] == {"replicas": 3} and sc["status"] == {"replicas": 1, "selector": "app=s"}
    sc["spec"]["replicas"] = 5
    out = custom.replace_namespaced_custom_object_scale(
        "scale.example.com", "v1", ns, "scalers", "s", sc
    )
    assert out["spec"] == {"replicas": 5}
    with pytest.raises(ApiException) as e:  # a stale Scale is a conflict
        custom.replace_namespaced_custom_object_scale(
            "scale.example.com", "v1", ns, "scalers", "s", sc
        )
    assert e.value.status == 409
    with pytest.raises(ApiException) as e:
        custom.patch_namespaced_custom_object_scale(
            "scale.example.com", "v1", ns, "scalers", "s", {"spec": {"replicas": -1}}
        )
    assert e.value.status == 422
    assert json.loads(e.value.body)["message"] == (
        'Scale.autoscaling "s" is invalid: spec.replicas: Invalid value: -1: '
        "must be greater than or equal to 0"
    )


def test_no_scale_without_the_subresource(client, widgets, custom, ns):
    custom.create_namespaced_custom_object(
        "example.com",
        "v1",
        ns,
        "widgets",
        {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}},
    )
    status, _ = raw(client, "GET", f"/apis/example.com/v1/namespaces/{ns}/widgets/w/scale")
    assert status == 404


def test_kubectl_scale_a_deployment(kubectl, client, ns):
    kubectl("create", "deployment", "d", "-n", ns, "--image=nginx")
    kubectl("scale", "deployment", "d", "-n", ns, "--replicas=4")
    apps = kubernetes.client.AppsV1Api(client)
    assert apps.read_namespaced_deployment("d", ns).spec.replicas == 4
    sc = apps.read_namespaced_deployment_scale("d", ns)
    assert sc.spec.replicas == 4 and sc.status.selector == "app=d"
