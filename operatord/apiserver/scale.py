"""The `/scale` subresource: an `autoscaling/v1` Scale view of objects that declare one (CRDs
with `subresources.scale`; Deployments and StatefulSets).

Guarantees: GET answers the Scale of the object (spec.replicas from `specReplicasPath`,
status.replicas from `statusReplicasPath`, status.selector from `labelSelectorPath`, or from
`spec.selector` of the built-in types); a PUT or patch of the Scale writes only the replicas
field of the object, with the object's resourceVersion as precondition when the Scale carries
one; replicas must be an integer >= 0 (else 422).
"""

from __future__ import annotations

from typing import Any

from . import patch as P
from .errors import ApiError, field_invalid, invalid
from .resources import ResourceType

BUILTIN = {
    "specReplicasPath": ".spec.replicas",
    "statusReplicasPath": ".status.replicas",
}


def spec_of(rt: ResourceType, version: str) -> dict | None:
    """The scale subresource `rt` declares at `version`, if any."""
    if rt.custom:
        return rt.scale.get(version)
    if rt.key in (("apps", "deployments"), ("apps", "statefulsets")):
        return BUILTIN
    return None


def _path(jsonpath: str | None) -> tuple[str, ...]:
    return tuple(p for p in (jsonpath or "").split(".") if p)


def _value(obj: dict, jsonpath: str | None) -> Any:
    """The value at a `.a.b` path, None when absent."""
    cur: Any = obj
    for p in _path(jsonpath):
        if not isinstance(cur, dict) or p not in cur:
            return None
        cur = cur[p]
    return cur


def _selector(rt: ResourceType, obj: dict, spec: dict) -> str | None:
    if spec.get("labelSelectorPath"):
        value = _value(obj, spec["labelSelectorPath"])
        return value if isinstance(value, str) else None
    if rt.custom:
        return None
    labels = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or None


def scale_of(rt: ResourceType, obj: dict, spec: dict) -> dict:
    """The autoscaling/v1 Scale of `obj`."""
    md = obj["metadata"]
    meta = {
        k: md[k]
        for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
        if k in md
    }
    replicas = _value(obj, spec["specReplicasPath"])
    current = _value(obj, spec.get("statusReplicasPath"))
    status: dict[str, Any] = {"replicas": current if isinstance(current, int) else 0}
    selector = _selector(rt, obj, spec)
    if selector:
        status["selector"] = selector
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": meta,
        "spec": {"replicas": replicas if isinstance(replicas, int) else 0},
        "status": status,
    }


def scaled(rt: ResourceType, obj: dict, spec: dict, scale: Any) -> dict:
    """A copy of `obj` with the replicas of `scale` (a Scale document) written into it."""
    if not isinstance(scale, dict):
        raise ApiError(400, "the body of the request must be a Scale object")
    replicas = (scale.get("spec") or {}).get("replicas", 0)
    name = obj["metadata"]["name"]
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise invalid(
            "Scale",
            name,
            "autoscaling",
            [field_invalid("spec.replicas", replicas, "must be greater than or equal to 0")],
        )
    new = P.deepcopy(obj)
    path = _path(spec["specReplicasPath"])
    cur = new
    for p in path[:-1]:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            nxt = cur[p] = {}
        cur = nxt
    cur[path[-1]] = replicas
    rv = (scale.get("metadata") or {}).get("resourceVersion")
    new["metadata"]["resourceVersion"] = rv or obj["metadata"]["resourceVersion"]
    return new
