"""CRD structural schemas: validation with the real server's 422 bodies, defaulting, pruning of
unknown fields and `fieldValidation` — through the official client, kubectl and plain HTTP."""

import json

import pytest
from kubernetes.client import ApiException

from .conftest import raw, raw_http

SCHEMA = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 8},
                "size": {"type": "integer", "minimum": 0, "maximum": 10, "default": 1},
                "ratio": {"type": "number", "exclusiveMinimum": True, "minimum": 0},
                "color": {"type": "string", "enum": ["red", "blue"]},
                "tags": {"type": "array", "maxItems": 2, "items": {"type": "string"}},
                "port": {"x-kubernetes-int-or-string": True},
                "note": {"type": "string", "nullable": True},
                "mode": {"type": "string", "default": "auto"},
                "limits": {
                    "type": "object",
                    "default": {},
                    "properties": {"cpu": {"type": "integer", "default": 2}},
                },
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            },
        },
        "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
    },
}


@pytest.fixture(scope="module")
def gadgets(api):
    api.apply_crd("schema.example.com", "v1", "Gadget", schema=SCHEMA)
    return ("schema.example.com", "v1")


def gadget(obj_name, **spec):
    return {
        "apiVersion": "schema.example.com/v1",
        "kind": "Gadget",
        "metadata": {"name": obj_name},
        "spec": spec,
    }


def create(custom, ns, body):
    return custom.create_namespaced_custom_object("schema.example.com", "v1", ns, "gadgets", body)


def rejected(custom, ns, body) -> dict:
    with pytest.raises(ApiException) as e:
        create(custom, ns, body)
    assert e.value.status == 422
    return json.loads(e.value.body)


def test_a_value_below_minimum_is_422_shaped_like_the_real_server(custom, gadgets, ns):
    body = rejected(custom, ns, gadget("g", name="ok", size=-1))
    assert body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'Gadget.schema.example.com "g" is invalid: spec.size: Invalid value: -1: '
        "spec.size in body should be greater than or equal to 0",
        "reason": "Invalid",
        "details": {
            "name": "g",
            "group": "schema.example.com",
            "kind": "Gadget",
            "causes": [
                {
                    "reason": "FieldValueInvalid",
                    "message": "Invalid value: -1: spec.size in body should be greater than or "
                    "equal to 0",
                    "field": "spec.size",
                }
            ],
        },
        "code": 422,
    }


def test_every_violation_is_a_cause(custom, gadgets, ns):
    body = rejected(
        custom,
        ns,
        gadget(
            "g",
            size="big",
            ratio=0,
            color="pink",
            tags=["a", "b", "c"],
            port=True,
            labels={"a": 1},
        ),
    )
    causes = {(c["field"], c["reason"]): c["message"] for c in body["details"]["causes"]}
    assert causes == {
        ("spec.name", "FieldValueRequired"): "Required value",
        ("spec.size", "FieldValueInvalid"): 'Invalid value: "string": spec.size in body must be '
        'of type integer: "string"',
        ("spec.ratio", "FieldValueInvalid"): "Invalid value: 0: spec.ratio in body should be "
        "greater than 0",
        ("spec.color", "FieldValueNotSupported"): 'Unsupported value: "pink": supported values: '
        '"red", "blue"',
        ("spec.tags", "FieldValueTooMany"): "Too many: 3: must have at most 2 items",
        ("spec.port", "FieldValueInvalid"): 'Invalid value: "boolean": spec.port in body must '
        'be of type integer or string: "boolean"',
        ("spec.labels.a", "FieldValueInvalid"): 'Invalid value: "integer": spec.labels.a in '
        'body must be of type string: "integer"',
    }
    assert body["message"].startswith('Gadget.schema.example.com "g" is invalid: [')
    assert body["message"].endswith("]")


def test_strings_pattern_and_length(custom, gadgets, ns):
    body = rejected(custom, ns, gadget("g", name="Too-Long-Name"))
    causes = {(c["field"], c["reason"]): c["message"] for c in body["details"]["causes"]}
    assert causes == {
        ("spec.name", "FieldValueTooLong"): "Too long: may not be longer than 8",
        ("spec.name", "FieldValueInvalid"): 'Invalid value: "Too-Long-Name": spec.name in body '
        "should match '^[a-z]+$'",
    }


def test_defaults_are_applied_and_unknown_fields_pruned(custom, gadgets, ns):
    g = create(
        custom,
        ns,
        gadget("g", name="ok", bogus=1, note=None, mode=None, extra={"any": {"thing": 1}}),
    )
    assert g["spec"] == {
        "name": "ok",
        "size": 1,  # default
        "mode": "auto",  # null of a non-nullable field with a default: defaulted
        "note": None,  # nullable: kept
        "limits": {"cpu": 2},  # defaulted object, defaulted inside
        "extra": {"any": {"thing": 1}},  # x-kubernetes-preserve-unknown-fields
    }
    got = custom.get_namespaced_custom_object("schema.example.com", "v1", ns, "gadgets", "g")
    assert got["spec"] == g["spec"]
    # int-or-string takes both
    for n, port in enumerate((8080, "http")):
        assert create(custom, ns, gadget(f"p{n}", name="ok", port=port))["spec"]["port"] == port


def test_patches_and_status_writes_are_validated(custom, gadgets, ns):
    create(custom, ns, gadget("g", name="ok"))
    with pytest.raises(ApiException) as e:
        custom.patch_namespaced_custom_object(
            "schema.example.com", "v1", ns, "gadgets", "g", {"spec": {"size": 11}}
        )
    assert e.value.status == 422
    assert (
        "spec.size in body should be less than or equal to 10"
        in json.loads(e.value.body)["message"]
    )
    with pytest.raises(ApiException) as e:
        custom.patch_namespaced_custom_object_status(
            "schema.example.com", "v1", ns, "gadgets", "g", {"status": {"ready": "yes"}}
        )
    assert e.value.status == 422
    g = custom.patch_namespaced_custom_object_status(
        "schema.example.com", "v1", ns, "gadgets", "g", {"status": {"ready": True, "x": 1}}
    )
    assert g["status"] == {"ready": True}


def test_field_validation_strict_rejects_and_warn_warns(api, gadgets, ns):
    path = f"/apis/schema.example.com/v1/namespaces/{ns}/gadgets"
    status, _, body = raw_http(
        api, "POST", path + "?fieldValidation=Strict", gadget("s", name="ok", bogus=1, more=2)
    )
    assert status == 400 and body["reason"] == "BadRequest"
    assert body["message"] == (
        'Gadget in version "v1" cannot be handled as a Gadget: strict decoding error: '
        'unknown field "spec.bogus", unknown field "spec.more"'
    )
    status, headers, body = raw_http(api, "POST", path, gadget("w", name="ok", bogus=1))
    assert status == 201 and "bogus" not in body["spec"]
    assert ("Warning", '299 - "unknown field \\"spec.bogus\\""') in headers
    status, headers, _ = raw_http(
        api, "POST", path + "?fieldValidation=Ignore", gadget("i", name="ok", bogus=1)
    )
    assert status == 201 and not [h for h in headers if h[0] == "Warning"]


def test_kubectl_reports_invalid_and_unknown_fields(kubectl, gadgets, ns):
    doc = {**gadget("k", name="ok", size=-1), "metadata": {"name": "k", "namespace": ns}}
    p = kubectl("apply", "-f", "-", stdin=json.dumps(doc), check=False)
    assert p.returncode != 0
    assert (
        'The Gadget "k" is invalid: spec.size: Invalid value: -1: spec.size in body should be '
        "greater than or equal to 0" in p.stderr
    )
    doc["spec"] = {"name": "ok", "bogus": 1}
    p = kubectl("apply", "-f", "-", stdin=json.dumps(doc), check=False)
    assert p.returncode != 0 and 'strict decoding error: unknown field "spec.bogus"' in p.stderr
    doc["spec"] = {"name": "ok"}
    kubectl("apply", "-f", "-", stdin=json.dumps(doc))
    out = json.loads(kubectl("get", "gadget", "k", "-n", ns, "-o", "json").stdout)
    assert out["spec"] == {"name": "ok", "size": 1, "mode": "auto", "limits": {"cpu": 2}}


def test_a_non_structural_schema_is_422(client):
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "bad.schema.example.com"},
        "spec": {
            "group": "schema.example.com",
            "names": {"plural": "bad", "kind": "Bad"},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {"spec": {"properties": {"a": {"type": "list"}}}},
                        }
                    },
                }
            ],
        },
    }
    status, body = raw(
        client, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd
    )
    assert status == 422
    fields = {c["field"]: c["reason"] for c in body["details"]["causes"]}
    base = "spec.versions[0].schema.openAPIV3Schema.properties[spec]"
    assert fields == {
        base + ".type": "FieldValueRequired",
        base + ".properties[a].type": "FieldValueNotSupported",
    }


def test_types_without_schema_keep_everything(custom, widgets, ns):
    w = custom.create_namespaced_custom_object(
        "example.com",
        "v1",
        ns,
        "widgets",
        {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "x": 1},
    )
    assert w["x"] == 1


def test_the_garbage_collector_writes_objects_a_newer_schema_would_prune(api, core, ns):
    """Objects stored before their schema tightened still get the collector's writes, whatever
    fieldValidation the last request asked for."""
    loose = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    api.apply_crd("gc.example.com", "v1", "Holder", schema=loose)
    owners = [
        core.create_namespaced_config_map(ns, {"metadata": {"name": f"o{i}"}}) for i in (1, 2)
    ]
    refs = [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": o.metadata.name, "uid": o.metadata.uid}
        for o in owners
    ]
    path = f"/apis/gc.example.com/v1/namespaces/{ns}/holders"
    body = {
        "apiVersion": "gc.example.com/v1",
        "kind": "Holder",
        "metadata": {"name": "h", "ownerReferences": refs},
        "spec": {"old": 1},
    }
    status, _, created = raw_http(api, "POST", path, body)
    assert status == 201
    strict = {"type": "object", "properties": {"spec": {"type": "object", "properties": {}}}}
    api.apply_crd("gc.example.com", "v1", "Holder", schema=strict)
    status, _, _ = raw_http(
        api, "POST", path + "?fieldValidation=Strict", dict(body, spec={"x": 1})
    )
    assert status == 400
    # the last request before the collector runs asks for Strict; a watch (which does not
    # touch the mode) sees the collector's write
    status, _, _ = raw_http(
        api, "DELETE", f"/api/v1/namespaces/{ns}/configmaps/o1?fieldValidation=Strict"
    )
    assert status == 200
    rv = created["metadata"]["resourceVersion"]
    _, _, stream = raw_http(api, "GET", f"{path}?watch=1&resourceVersion={rv}&timeoutSeconds=2")
    events = [json.loads(line) for line in stream.decode().splitlines()]
    owners_left = [[r["name"] for r in e["object"]["metadata"]["ownerReferences"]] for e in events]
    assert owners_left == [["o2"]]
