"""Validation and defaulting of the embedded API server: what every object's metadata must
satisfy, and the per-type rules of the built-in types and CRDs.

Guarantees: invalid objects raise `ApiError` 422 (Invalid) with one cause per problem, or 400
for malformed values; `Validator.prepare` only changes the fresh dict it is given.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime
from typing import Any

from . import patch as P
from .errors import ApiError, invalid
from .objects import CRD_FINALIZER, CRD_KEY, NS_FINALIZER, NS_KEY, now_time
from .resources import Registry, ResourceType
from .selectors import _KEY as LABEL_KEY_RE
from .selectors import _VALUE as LABEL_VALUE_RE

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_MICROTIME_FIELDS = {
    ("coordination.k8s.io", "leases"): (("spec", "acquireTime"), ("spec", "renewTime")),
    ("events.k8s.io", "events"): (("eventTime",),),
    ("", "events"): (("eventTime",),),
}


def _micro(value: Any, field: str) -> Any:
    """Normalize a MicroTime to RFC 3339 with exactly six fractional digits and `Z`."""
    if value is None or not isinstance(value, str):
        return value
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, f"{field}: invalid MicroTime {value!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _valid_key(k: Any) -> bool:
    if not isinstance(k, str) or not LABEL_KEY_RE.match(k):
        return False
    prefix, _, name = k.rpartition("/")
    return len(name) <= 63 and len(prefix) <= 253


def check_meta(rt: ResourceType, obj: dict, old: dict | None) -> None:
    """422 Invalid unless name, labels, annotations, finalizers and ownerReferences are valid
    (the name only on create; no new finalizers on a deleting object)."""
    md = obj["metadata"]
    name = md.get("name", "")
    causes: list[tuple[str, Any, str]] = []
    if old is None:
        if rt.plural in ("namespaces",) and (len(name) > 63 or not _DNS_LABEL.match(name)):
            causes.append(
                (
                    "metadata.name",
                    name,
                    "a lowercase RFC 1123 label must consist of lower case alphanumeric "
                    "characters or '-', and must start and end with an alphanumeric character",
                )
            )
        elif rt.plural == "services" and (len(name) > 63 or not _DNS_1035.match(name)):
            causes.append(
                (
                    "metadata.name",
                    name,
                    "a DNS-1035 label must consist of lower case alphanumeric characters or "
                    "'-', start with an alphabetic character, and end with an alphanumeric "
                    "character",
                )
            )
        elif len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
            causes.append(
                (
                    "metadata.name",
                    name,
                    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                    "characters, '-' or '.', and must start and end with an alphanumeric "
                    "character",
                )
            )
    labels = md.get("labels")
    if labels is not None and not isinstance(labels, dict):
        causes.append(("metadata.labels", None, "must be a map of strings"))
    for k, v in (labels or {}).items():
        if not _valid_key(k):
            causes.append(("metadata.labels", k, "name part must be a valid qualified name"))
        if not isinstance(v, str) or len(v) > 63 or not LABEL_VALUE_RE.match(v):
            causes.append(
                (
                    "metadata.labels",
                    v,
                    "a valid label must be an empty string or consist of alphanumeric "
                    "characters, '-', '_' or '.', and must start and end with an "
                    "alphanumeric character",
                )
            )
    ann = md.get("annotations")
    if ann is not None and not isinstance(ann, dict):
        causes.append(("metadata.annotations", None, "must be a map of strings"))
    for k, v in (ann or {}).items():
        if not _valid_key(k):
            causes.append(("metadata.annotations", k, "name part must be a valid qualified name"))
        if not isinstance(v, str):
            causes.append(("metadata.annotations", v, "must be a string"))
    fins = md.get("finalizers") or []
    if not isinstance(fins, list) or not all(isinstance(f, str) for f in fins):
        causes.append(("metadata.finalizers", None, "must be a list of strings"))
    elif old is not None and old["metadata"].get("deletionTimestamp"):
        added = set(fins) - set(old["metadata"].get("finalizers") or [])
        if added:
            causes.append(
                (
                    "metadata.finalizers",
                    None,
                    f"Forbidden: no new finalizers can be added if the object is being "
                    f"deleted, found new finalizers {sorted(added)!r}",
                )
            )
    for i, ref in enumerate(md.get("ownerReferences") or []):
        if not isinstance(ref, dict) or not all(
            ref.get(f) for f in ("apiVersion", "kind", "name", "uid")
        ):
            causes.append(
                (
                    f"metadata.ownerReferences[{i}]",
                    None,
                    "apiVersion, kind, name and uid are required",
                )
            )
    if causes:
        raise invalid(rt.kind, name, rt.group, causes)


class Validator:
    """Type-specific defaulting and validation; holds the state defaulting needs (the Service
    IP allocator) and the registry (CRD names must not shadow built-in types)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._ip = 0

    def prepare(self, rt: ResourceType, obj: dict, old: dict | None) -> None:
        """Type-specific defaulting and validation, in place on a fresh dict."""
        key = rt.key
        for path in _MICROTIME_FIELDS.get(key, ()):
            cur = obj
            for p in path[:-1]:
                cur = cur.get(p) if isinstance(cur, dict) else None
            if isinstance(cur, dict) and path[-1] in cur:
                cur[path[-1]] = _micro(cur[path[-1]], ".".join(path))
        if key == ("", "secrets"):
            sd = obj.pop("stringData", None)
            if sd:
                data = dict(obj.get("data") or {})
                for k, v in sd.items():
                    data[k] = base64.b64encode(str(v).encode()).decode()
                obj["data"] = data
            obj.setdefault("type", "Opaque")
            for k, v in (obj.get("data") or {}).items():
                try:
                    base64.b64decode(v, validate=True)
                except (binascii.Error, TypeError, ValueError):
                    raise invalid(
                        rt.kind,
                        obj["metadata"]["name"],
                        "",
                        [(f"data[{k}]", None, "illegal base64 data")],
                    ) from None
        elif key == ("", "services"):
            spec = obj.setdefault("spec", {})
            spec.setdefault("type", "ClusterIP")
            if old is not None:
                for f in ("clusterIP", "clusterIPs"):
                    if f in (old.get("spec") or {}) and f not in spec:
                        spec[f] = old["spec"][f]
            if spec["type"] != "ExternalName" and not spec.get("clusterIP"):
                self._ip += 1
                ip = f"10.96.{(self._ip >> 8) & 255}.{self._ip & 255}"
                spec["clusterIP"] = ip
                spec["clusterIPs"] = [ip]
        elif key == NS_KEY:
            if old is None:
                obj["spec"] = {"finalizers": [NS_FINALIZER]}
                obj["status"] = {"phase": "Active"}
            else:
                obj["spec"] = P.deepcopy(old.get("spec") or {})
        elif key == ("", "pods") and old is None:
            obj["status"] = {"phase": "Pending"}
        elif key == CRD_KEY:
            self._validate_crd(rt, obj, old)

    def _validate_crd(self, rt: ResourceType, obj: dict, old: dict | None) -> None:
        spec = obj.get("spec") or {}
        names = spec.get("names") or {}
        name = obj["metadata"]["name"]
        causes = []
        if not spec.get("group"):
            causes.append(("spec.group", None, "Required value"))
        if not names.get("plural"):
            causes.append(("spec.names.plural", None, "Required value"))
        if not names.get("kind"):
            causes.append(("spec.names.kind", None, "Required value"))
        if spec.get("scope") not in ("Namespaced", "Cluster"):
            causes.append(("spec.scope", spec.get("scope"), "must be Namespaced or Cluster"))
        versions = spec.get("versions") or []
        if not versions:
            causes.append(
                ("spec.versions", None, "must have exactly one version marked as storage")
            )
        elif sum(1 for v in versions if v.get("storage")) != 1:
            causes.append(
                ("spec.versions", None, "must have exactly one version marked as storage")
            )
        if (
            names.get("plural")
            and spec.get("group")
            and name != f"{names['plural']}.{spec['group']}"
        ):
            causes.append(("metadata.name", name, 'must be spec.names.plural+"."+spec.group'))
        if old is not None:
            for f in ("group", "scope"):
                if spec.get(f) != (old.get("spec") or {}).get(f) and f == "group":
                    causes.append((f"spec.{f}", spec.get(f), "field is immutable"))
        existing = self.registry.by_key((spec.get("group", ""), names.get("plural", "")))
        if old is None and existing is not None and not existing.custom:
            causes.append(
                ("spec.names.plural", names.get("plural"), "conflicts with a built-in type")
            )
        if causes:
            raise invalid(rt.kind, name, rt.group, causes)
        if old is None:
            fins = obj["metadata"].setdefault("finalizers", [])
            if CRD_FINALIZER not in fins:
                fins.append(CRD_FINALIZER)
        storage = next(v["name"] for v in versions if v.get("storage"))
        stored = list((old or {}).get("status", {}).get("storedVersions") or [])
        if storage not in stored:
            stored.append(storage)
        t = now_time()
        prev_conds = {
            c.get("type"): c for c in ((old or {}).get("status") or {}).get("conditions") or []
        }
        conds = []
        for ctype, reason, msg in (
            ("NamesAccepted", "NoConflicts", "no conflicts found"),
            ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ):
            prev = prev_conds.get(ctype)
            conds.append(
                {
                    "type": ctype,
                    "status": "True",
                    "lastTransitionTime": (prev or {}).get("lastTransitionTime", t),
                    "reason": reason,
                    "message": msg,
                }
            )
        accepted = {k: v for k, v in names.items()}
        accepted.setdefault("singular", names.get("kind", "").lower())
        accepted.setdefault("listKind", names.get("kind", "") + "List")
        obj["status"] = {"conditions": conds, "acceptedNames": accepted, "storedVersions": stored}
