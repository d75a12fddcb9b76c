"""From client-side to server-side apply: kubectl's managers are upgraded instead of
conflicting, and writes may set or reset managedFields, as on a real server."""

import json

from .conftest import raw_http

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def cm_yaml(ns, **data):
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": ns},
            "data": data,
        }
    )


def managers(obj):
    return {(e["manager"], e["operation"]): e["fieldsV1"] for e in obj["metadata"]["managedFields"]}


def test_kubectl_apply_then_server_side_apply_of_a_changed_field(kubectl, ns):
    kubectl("apply", "-f", "-", stdin=cm_yaml(ns, a="1", b="2"))
    out = kubectl("apply", "--server-side", "-f", "-", stdin=cm_yaml(ns, a="9", b="2"))
    assert "serverside-applied" in out.stdout
    obj = json.loads(
        kubectl("get", "cm", "c", "-n", ns, "-o", "json", "--show-managed-fields").stdout
    )
    assert obj["data"] == {"a": "9", "b": "2"}
    owners = managers(obj)
    assert owners[("kubectl", "Apply")] == {"f:data": {"f:a": {}, "f:b": {}}}
    assert all("f:data" not in fields for m, fields in owners.items() if m[0] != "kubectl")
    # and the annotation follows, so that client-side apply keeps working
    assert json.loads(obj["metadata"]["annotations"][LAST_APPLIED])["data"] == {"a": "9", "b": "2"}
    kubectl("apply", "-f", "-", stdin=cm_yaml(ns, a="10"))
    obj = json.loads(kubectl("get", "cm", "c", "-n", ns, "-o", "json").stdout)
    assert obj["data"] == {"a": "10"}


def _csa_object(api, ns, name, data, live_data=None):
    """A ConfigMap as `kubectl apply` (client side) leaves it: last-applied annotation, fields
    owned by kubectl-client-side-apply through an Update."""
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}
    body = dict(config, metadata={"name": name, "annotations": {LAST_APPLIED: json.dumps(config)}})
    body["data"] = live_data or data
    path = f"/api/v1/namespaces/{ns}/configmaps?fieldManager=kubectl-client-side-apply"
    status, _, out = raw_http(api, "POST", path, body)
    assert status == 201, out


def _apply(api, ns, name, manager, data):
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}
    path = f"/api/v1/namespaces/{ns}/configmaps/{name}?fieldManager={manager}"
    return raw_http(api, "PATCH", path, body, "application/apply-patch+yaml")


def test_the_server_lets_kubectl_take_over_last_applied_fields(api, ns):
    _csa_object(api, ns, "c", {"a": "1"})
    status, _, body = _apply(api, ns, "c", "someone-else", {"a": "2"})
    assert status == 409 and 'conflict with "kubectl-client-side-apply"' in body["message"]
    status, _, body = _apply(api, ns, "c", "kubectl", {"a": "2"})
    assert status == 200, body
    assert body["data"] == {"a": "2"}
    assert managers(body)[("kubectl", "Apply")] == {"f:data": {"f:a": {}}}


def test_no_take_over_when_the_live_value_drifted_from_last_applied(api, ns):
    _csa_object(api, ns, "d", {"a": "1"}, live_data={"a": "edited"})
    status, _, body = _apply(api, ns, "d", "kubectl", {"a": "2"})
    assert status == 409 and body["details"]["causes"][0]["field"] == ".data.a"


def test_writes_may_replace_or_reset_managed_fields(api, ns):
    _csa_object(api, ns, "e", {"a": "1"})
    path = f"/api/v1/namespaces/{ns}/configmaps/e"
    moved = [
        {
            "manager": "mover",
            "operation": "Apply",
            "apiVersion": "v1",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:data": {"f:a": {}}},
        }
    ]
    patch = [{"op": "replace", "path": "/metadata/managedFields", "value": moved}]
    status, _, body = raw_http(api, "PATCH", path, patch, "application/json-patch+json")
    assert status == 200 and list(managers(body)) == [("mover", "Apply")]
    status, _, body = raw_http(
        api, "PATCH", path, {"metadata": {"managedFields": []}}, "application/merge-patch+json"
    )
    assert status == 200 and "managedFields" not in body["metadata"]
    # a malformed list is ignored
    bad = {"metadata": {"managedFields": [{"nope": 1}]}, "data": {"a": "3"}}
    status, _, body = raw_http(
        api, "PATCH", path + "?fieldManager=editor", bad, "application/merge-patch+json"
    )
    assert status == 200 and body["data"] == {"a": "3"}
    assert [e["manager"] for e in body["metadata"]["managedFields"]] == ["editor"]
