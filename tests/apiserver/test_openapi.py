"""OpenAPI v3 documents carry the CRDs' schemas: `kubectl explain` works for custom types."""

import copy

import pytest

from .conftest import raw_http

SCHEMA = {
    "type": "object",
    "description": "A Knob turns.",
    "properties": {
        "spec": {
            "type": "object",
            "description": "What the knob should do.",
            "properties": {
                "angle": {"type": "integer", "description": "Degrees to turn."},
                "label": {"type": "string"},
            },
        }
    },
}


@pytest.fixture(scope="module")
def knobs(api):
    return api.apply_crd("openapi.example.com", "v1", "Knob", schema=SCHEMA)


def test_kubectl_explain_a_custom_type(kubectl, knobs):
    out = kubectl("explain", "knobs").stdout
    assert "KIND:       Knob" in out and "VERSION:    v1" in out
    assert "A Knob turns." in out
    assert "spec\t<Object>" in out and "apiVersion\t<string>" in out
    out = kubectl("explain", "knobs.spec.angle").stdout
    assert "FIELD: angle <integer>" in out and "Degrees to turn." in out
    out = kubectl("explain", "knobs", "--recursive").stdout
    assert "angle\t<integer>" in out and "label\t<string>" in out


def test_the_documents(api, knobs):
    status, _, index = raw_http(api, "GET", "/openapi/v3")
    assert status == 200
    url = index["paths"]["apis/openapi.example.com/v1"]["serverRelativeURL"]
    status, _, doc = raw_http(api, "GET", url)
    schemas = doc["components"]["schemas"]
    knob = schemas["com.example.openapi.v1.Knob"]
    assert knob["x-kubernetes-group-version-kind"] == [
        {"group": "openapi.example.com", "version": "v1", "kind": "Knob"}
    ]
    assert knob["properties"]["spec"] == SCHEMA["properties"]["spec"]
    assert set(knob["properties"]) == {"apiVersion", "kind", "metadata", "spec"}
    items = schemas["com.example.openapi.v1.KnobList"]["properties"]["items"]["items"]
    assert items == {"$ref": "#/components/schemas/com.example.openapi.v1.Knob"}
    path = doc["paths"]["/apis/openapi.example.com/v1/namespaces/{namespace}/knobs/{name}"]
    assert {p["name"] for p in path["patch"]["parameters"]} >= {"fieldValidation"}


def test_the_index_hash_follows_the_schema(api, knobs, kubectl):
    _, _, before = raw_http(api, "GET", "/openapi/v3")
    schema = copy.deepcopy(SCHEMA)
    schema["properties"]["spec"]["properties"]["color"] = {"type": "string"}
    api.apply_crd("openapi.example.com", "v1", "Knob", schema=schema)
    _, _, after = raw_http(api, "GET", "/openapi/v3")
    key = "apis/openapi.example.com/v1"
    assert before["paths"][key] != after["paths"][key]
    assert before["paths"]["api/v1"] == after["paths"]["api/v1"]
    assert "color\t<string>" in kubectl("explain", "knobs.spec").stdout
    api.apply_crd("openapi.example.com", "v1", "Knob", schema=SCHEMA)
