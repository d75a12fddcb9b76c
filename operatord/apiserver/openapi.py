"""OpenAPI v3 documents: `/openapi/v3` (the index) and one document per group-version.

Guarantees:
- Every served group-version has a document; its index entry's `hash` changes whenever the
  document does (kubectl caches documents by that URL).
- Each resource's item path has operations that accept `fieldValidation`, which is what kubectl
  looks for before it hands validation to the server.
- Custom types carry their CRD's `openAPIV3Schema` (plus `apiVersion`, `kind` and `metadata`)
  under the name the real server uses (`com.example.v1.Widget`), with
  `x-kubernetes-group-version-kind`, and a `...List` schema: enough for `kubectl explain`.
  Built-in types are described by paths only (no schemas).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from . import patch as P
from .resources import Registry, ResourceType

_API_VERSION = (
    "APIVersion defines the versioned schema of this representation of an object. Servers "
    "should convert recognized schemas to the latest internal value, and may reject "
    "unrecognized values. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"
)
_KIND = (
    "Kind is a string value representing the REST resource this object represents. Servers may "
    "infer this from the endpoint the client submits requests to. Cannot be updated. In "
    "CamelCase. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"
)
_METADATA = (
    "Standard object's metadata. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"
)


def _group_versions(registry: Registry) -> dict[str, tuple[str, str]]:
    gvs: dict[str, tuple[str, str]] = {"api/v1": ("", "v1")}
    for g, vs in registry.group_versions().items():
        for v in vs:
            gvs[f"apis/{g}/{v}"] = (g, v)
    return gvs


def _types(registry: Registry, group: str, version: str) -> list[ResourceType]:
    return [
        rt
        for rt in registry.types()
        if rt.group == group and version in rt.versions and not rt.virtual
    ]


def schema_name(rt: ResourceType, version: str) -> str:
    """`com.example.v1.Widget` for example.com/v1 Widget, as the real server names it."""
    return ".".join(reversed(rt.group.split("."))) + f".{version}.{rt.kind}"


def _schemas(rt: ResourceType, version: str) -> dict[str, Any]:
    raw = rt.raw_schemas.get(version) or {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    schema = P.deepcopy(raw)
    props = schema.setdefault("properties", {})
    props.setdefault("apiVersion", {"type": "string", "description": _API_VERSION})
    props.setdefault("kind", {"type": "string", "description": _KIND})
    props["metadata"] = {"type": "object", "description": _METADATA}
    gvk = [{"group": rt.group, "version": version, "kind": rt.kind}]
    schema["x-kubernetes-group-version-kind"] = gvk
    name = schema_name(rt, version)
    list_schema = {
        "type": "object",
        "description": f"{rt.kind}List is a list of {rt.kind}",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string", "description": _API_VERSION},
            "items": {
                "type": "array",
                "description": f"List of {rt.plural}. More info: "
                "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md",
                "items": {"$ref": f"#/components/schemas/{name}"},
            },
            "kind": {"type": "string", "description": _KIND},
            "metadata": {"type": "object", "description": "ListMeta"},
        },
        "x-kubernetes-group-version-kind": [
            {"group": rt.group, "version": version, "kind": rt.kind + "List"}
        ],
    }
    return {name: schema, name + "List": list_schema}


def document(registry: Registry, gv_path: str) -> dict | None:
    """The document of one group-version (`api/v1`, `apis/G/V`); None if not served."""
    gvs = _group_versions(registry)
    if gv_path not in gvs:
        return None
    g, v = gvs[gv_path]
    paths: dict = {}
    schemas: dict = {}
    for rt in _types(registry, g, v):
        base = f"/{gv_path}/" + ("namespaces/{namespace}/" if rt.namespaced else "")
        gvk = {"group": g, "version": v, "kind": rt.kind}
        params = [
            {"name": n, "in": "query", "schema": {"type": "string"}, "uniqueItems": True}
            for n in ("dryRun", "fieldManager", "fieldValidation", "force")
        ]
        response: dict = {"description": "OK"}
        if rt.custom:
            ref = {"$ref": f"#/components/schemas/{schema_name(rt, v)}"}
            response["content"] = {"application/json": {"schema": ref}}
            schemas.update(_schemas(rt, v))
        op = {
            "x-kubernetes-group-version-kind": gvk,
            "parameters": params,
            "responses": {"200": response},
        }
        paths[base + rt.plural + "/{name}"] = {
            m: dict(op) for m in ("get", "put", "patch", "delete")
        }
        paths[base + rt.plural] = {"get": dict(op), "post": dict(op)}
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.31.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def index(registry: Registry) -> dict:
    """`/openapi/v3`: every group-version's document URL, with a hash of its content."""
    out = {}
    for p in sorted(_group_versions(registry)):
        doc = document(registry, p)
        digest = hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:128]
        out[p] = {"serverRelativeURL": f"/openapi/v3/{p}?hash={digest.upper()}"}
    return {"paths": out}
