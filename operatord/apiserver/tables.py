"""The `Table` format (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`): what kubectl
asks for to print `kubectl get`.

Guarantees:
- Custom types get `Name` plus the CRD's `additionalPrinterColumns` of the served version
  (`Age` when it declares none, as the apiextensions server defaults it); cells are typed as
  the real server types them (integer, number, boolean, string, and `date` as a human
  duration such as `5m10s`); a path that finds nothing gives a `null` cell.
- Built-in types get the columns kubectl shows for them on a real cluster (priority > 0 only
  with `-o wide`).
- Each row carries the object as `includeObject` asks: `Metadata` (the default: a
  `PartialObjectMetadata`), `Object` or `None`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from .resources import ResourceType

_NAME_DESCRIPTION = (
    "Name must be unique within a namespace. Is required when creating resources, although some "
    "resources may allow a client to request the generation of an appropriate name "
    "automatically. Name is primarily intended for creation idempotence and configuration "
    "definition. Cannot be updated. More info: "
    "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
)
_AGE_DESCRIPTION = (
    "CreationTimestamp is a timestamp representing the server time when this object was "
    "created. It is not guaranteed to be set in happens-before order across separate "
    "operations. Clients may not set this value. It is represented in RFC3339 form and is in "
    "UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"
)

Cell = Callable[[dict], Any]


def human_duration(seconds: float) -> str:
    """A duration as kubectl prints ages: `45s`, `3m20s`, `2h5m`, `3d4h`, `2y10d`."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m" if s % 60 == 0 else f"{minutes}m{s % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d" if hours % 24 == 0 else f"{hours // 24}d{hours % 24}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if days == 0 else f"{hours // 24 // 365}y{days}d"
    return f"{hours // 24 // 365}y"


def _age(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return "<invalid>"
    return human_duration(time.time() - t)


# -- JSONPath of printer columns: .a.b, [n], [*] (first match), [?(@.k=="v")] ----------------

_STEP = re.compile(
    r"\.([^.\[]+)|\[(\d+)\]|\[\?\(@\.([\w.-]+)\s*==\s*[\"']([^\"']*)[\"']\)\]|\[\*\]"
)


def compile_path(path: str) -> Callable[[Any], Any] | None:
    """A function returning the first value `path` finds (None when nothing), or None when
    `path` uses JSONPath this server does not support."""
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    steps = []
    pos = 0
    while pos < len(path):
        m = _STEP.match(path, pos)
        if not m:
            return None
        steps.append(m.groups())
        pos = m.end()

    def find(obj: Any) -> Any:
        cur = [obj]
        for key, index, fkey, fval in steps:
            nxt = []
            for c in cur:
                if key is not None:
                    if isinstance(c, dict) and key in c:
                        nxt.append(c[key])
                elif index is not None:
                    if isinstance(c, list) and int(index) < len(c):
                        nxt.append(c[int(index)])
                elif fkey is not None:
                    if isinstance(c, list):
                        nxt.extend(x for x in c if isinstance(x, dict) and str(x.get(fkey)) == fval)
                elif isinstance(c, list):
                    nxt.extend(c)
            cur = nxt
            if not cur:
                return None
        return cur[0]

    return find


def _typed(kind: str, value: Any) -> Any:
    """A cell of a custom column, typed as the apiextensions server types it."""
    if value is None:
        return None
    if kind == "integer":
        return (
            int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
        )
    if kind == "number":
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if kind == "boolean":
        return value if isinstance(value, bool) else None
    if kind == "date":
        return _age(value)
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        import json

        return json.dumps(value, separators=(",", ":"))
    return str(value)


# -- columns -------------------------------------------------------------------------------------


class Column:
    __slots__ = ("definition", "cell")

    def __init__(
        self, name: str, type_: str, cell: Cell, *, fmt: str = "", desc: str = "", priority: int = 0
    ) -> None:
        self.definition = {
            "name": name,
            "type": type_,
            "format": fmt,
            "description": desc,
            "priority": priority,
        }
        self.cell = cell


def _name(o: dict) -> str:
    return o["metadata"]["name"]


def _created(o: dict) -> str | None:
    return _age(o["metadata"].get("creationTimestamp"))


NAME = Column("Name", "string", _name, fmt="name", desc=_NAME_DESCRIPTION)
AGE = Column("Age", "string", _created, desc=_AGE_DESCRIPTION)


def _get(o: dict, *path: str, default: Any = None) -> Any:
    for p in path:
        if not isinstance(o, dict) or p not in o:
            return default
        o = o[p]
    return o


def _none(v: Any) -> Any:
    return v if v not in (None, "", []) else "<none>"


def _ports(o: dict) -> str:
    out = []
    for p in _get(o, "spec", "ports", default=[]) or []:
        s = str(p.get("port", ""))
        if p.get("nodePort"):
            s += f":{p['nodePort']}"
        out.append(f"{s}/{p.get('protocol', 'TCP')}")
    return ",".join(out) or "<none>"


def _selector(sel: Any) -> str:
    if isinstance(sel, dict) and "matchLabels" in sel:
        sel = sel["matchLabels"]
    if not sel:
        return "<none>"
    return ",".join(f"{k}={v}" for k, v in sorted(sel.items()))


def _containers(o: dict, what: str) -> str:
    cs = _get(o, "spec", "template", "spec", "containers", default=[]) or []
    return ",".join(str(c.get(what, "")) for c in cs) or "<none>"


def _pod_ready(o: dict) -> str:
    statuses = _get(o, "status", "containerStatuses", default=[]) or []
    total = len(_get(o, "spec", "containers", default=[]) or [])
    return f"{sum(1 for s in statuses if s.get('ready'))}/{total}"


def _pod_status(o: dict) -> str:
    if o["metadata"].get("deletionTimestamp"):
        return "Terminating"
    return _get(o, "status", "reason") or _get(o, "status", "phase") or "<none>"


def _restarts(o: dict) -> int:
    return sum(
        s.get("restartCount", 0) for s in _get(o, "status", "containerStatuses", default=[]) or []
    )


def _event_object(o: dict) -> str:
    ref = o.get("involvedObject") or o.get("regarding") or {}
    return f"{str(ref.get('kind', '')).lower()}/{ref.get('name', '')}"


def _event_last_seen(o: dict) -> str | None:
    for t in (o.get("lastTimestamp"), o.get("eventTime"), o["metadata"].get("creationTimestamp")):
        if t:
            return _age(t)
    return None


def _replicas_ready(o: dict) -> str:
    return (
        f"{_get(o, 'status', 'readyReplicas', default=0)}/{_get(o, 'spec', 'replicas', default=1)}"
    )


S, INT = "string", "integer"
_BUILTIN: dict[tuple[str, str], list[Column]] = {
    ("", "namespaces"): [NAME, Column("Status", S, lambda o: _get(o, "status", "phase")), AGE],
    ("", "configmaps"): [
        NAME,
        Column("Data", INT, lambda o: len(o.get("data") or {}) + len(o.get("binaryData") or {})),
        AGE,
    ],
    ("", "secrets"): [
        NAME,
        Column("Type", S, lambda o: o.get("type", "")),
        Column("Data", INT, lambda o: len(o.get("data") or {})),
        AGE,
    ],
    ("", "services"): [
        NAME,
        Column("Type", S, lambda o: _get(o, "spec", "type")),
        Column("Cluster-IP", S, lambda o: _none(_get(o, "spec", "clusterIP"))),
        Column(
            "External-IP",
            S,
            lambda o: _none(
                ",".join(
                    i.get("ip") or i.get("hostname", "")
                    for i in _get(o, "status", "loadBalancer", "ingress", default=[]) or []
                )
                or ",".join(_get(o, "spec", "externalIPs", default=[]) or [])
                or _get(o, "spec", "externalName")
            ),
        ),
        Column("Port(s)", S, _ports),
        AGE,
        Column("Selector", S, lambda o: _selector(_get(o, "spec", "selector")), priority=1),
    ],
    ("", "serviceaccounts"): [
        NAME,
        Column("Secrets", INT, lambda o: len(o.get("secrets") or [])),
        AGE,
    ],
    ("", "pods"): [
        NAME,
        Column("Ready", S, _pod_ready),
        Column("Status", S, _pod_status),
        Column("Restarts", S, lambda o: str(_restarts(o))),
        AGE,
        Column("IP", S, lambda o: _none(_get(o, "status", "podIP")), priority=1),
        Column("Node", S, lambda o: _none(_get(o, "spec", "nodeName")), priority=1),
    ],
    ("", "events"): [
        Column("Last Seen", S, _event_last_seen),
        Column("Type", S, lambda o: o.get("type", "")),
        Column("Reason", S, lambda o: o.get("reason", "")),
        Column("Object", S, _event_object),
        Column("Message", S, lambda o: o.get("message") or o.get("note") or ""),
    ],
    ("events.k8s.io", "events"): [
        Column("Last Seen", S, _event_last_seen),
        Column("Type", S, lambda o: o.get("type", "")),
        Column("Reason", S, lambda o: o.get("reason", "")),
        Column("Object", S, _event_object),
        Column("Message", S, lambda o: o.get("note") or ""),
    ],
    ("apps", "deployments"): [
        NAME,
        Column("Ready", S, _replicas_ready),
        Column("Up-to-date", INT, lambda o: _get(o, "status", "updatedReplicas", default=0)),
        Column("Available", INT, lambda o: _get(o, "status", "availableReplicas", default=0)),
        AGE,
        Column("Containers", S, lambda o: _containers(o, "name"), priority=1),
        Column("Images", S, lambda o: _containers(o, "image"), priority=1),
        Column("Selector", S, lambda o: _selector(_get(o, "spec", "selector")), priority=1),
    ],
    ("apps", "statefulsets"): [
        NAME,
        Column("Ready", S, _replicas_ready),
        AGE,
        Column("Containers", S, lambda o: _containers(o, "name"), priority=1),
        Column("Images", S, lambda o: _containers(o, "image"), priority=1),
    ],
    ("coordination.k8s.io", "leases"): [
        NAME,
        Column("Holder", S, lambda o: _get(o, "spec", "holderIdentity", default="")),
        AGE,
    ],
    ("apiextensions.k8s.io", "customresourcedefinitions"): [
        NAME,
        Column(
            "Created At",
            "date",
            lambda o: o["metadata"].get("creationTimestamp"),
            desc=_AGE_DESCRIPTION,
        ),
    ],
}


def columns(rt: ResourceType, version: str) -> list[Column]:
    """The columns of `rt` served at `version`."""
    if not rt.custom:
        return _BUILTIN.get(rt.key, [NAME, AGE])
    defs = rt.columns.get(version)
    if not defs:
        return [NAME, Column("Age", "date", _created, desc=_AGE_DESCRIPTION)]
    out = [NAME]
    for d in defs:
        find = compile_path(str(d.get("jsonPath", "")))
        kind = d.get("type", "string")

        def cell(o: dict, find: Callable[[Any], Any] | None = find, kind: str = kind) -> Any:
            return _typed(kind, find(o)) if find is not None else None

        desc = d.get("description") or (
            f"Custom resource definition column (in JSONPath format): {d.get('jsonPath', '')}"
        )
        out.append(
            Column(
                d.get("name", ""),
                kind,
                cell,
                fmt=d.get("format", ""),
                desc=desc,
                priority=int(d.get("priority", 0)),
            )
        )
    return out


def _row_object(obj: dict, include: str, api_version: str) -> dict | None:
    if include == "None":
        return None
    if include == "Object":
        return obj if obj.get("apiVersion") == api_version else {**obj, "apiVersion": api_version}
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj["metadata"],
    }


def table(
    rt: ResourceType,
    version: str,
    objs: Sequence[dict],
    meta: dict,
    *,
    include: str = "Metadata",
    headers: bool = True,
) -> dict:
    """A `meta.k8s.io/v1` Table of `objs` (list metadata in `meta`)."""
    cols = columns(rt, version)
    api_version = rt.api_version(version)
    rows = []
    for o in objs:
        row: dict[str, Any] = {"cells": [c.cell(o) for c in cols]}
        ro = _row_object(o, include, api_version)
        if ro is not None:
            row["object"] = ro
        rows.append(row)
    out: dict[str, Any] = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta}
    if headers:
        out["columnDefinitions"] = [c.definition for c in cols]
    out["rows"] = rows
    return out
