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
from .crdschema import normalize, structural_errors, validate
from .errors import (
    ApiError,
    FieldError,
    field_forbidden,
    field_invalid,
    field_not_supported,
    field_required,
    go_value,
    invalid,
)
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


_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex "
    "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
    "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex "
    "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
_DNS_1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
    "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
    "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)
_LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
    "'my_value',  or '12345', regex used for validation is "
    "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)
_QUALIFIED_NAME_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and "
    "end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex "
    "used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)


def _name_errors(rt: ResourceType, name: str) -> list[FieldError]:
    if rt.plural == "namespaces":
        limit, regex, msg = 63, _DNS_LABEL, _LABEL_MSG
    elif rt.plural == "services":
        limit, regex, msg = 63, _DNS_1035, _DNS_1035_MSG
    else:
        limit, regex, msg = 253, _DNS_SUBDOMAIN, _SUBDOMAIN_MSG
    out = []
    if len(name) > limit:
        out.append(field_invalid("metadata.name", name, f"must be no more than {limit} characters"))
    if not regex.match(name):
        out.append(field_invalid("metadata.name", name, msg))
    return out


def check_meta(rt: ResourceType, obj: dict, old: dict | None) -> None:
    """422 Invalid unless name, labels, annotations, finalizers and ownerReferences are valid
    (the name only on create; no new finalizers on a deleting object). Messages and causes are
    the real server's."""
    md = obj["metadata"]
    name = md.get("name", "")
    causes: list[FieldError] = []
    if old is None:
        causes.extend(_name_errors(rt, name))
    labels = md.get("labels")
    if labels is not None and not isinstance(labels, dict):
        causes.append(field_invalid("metadata.labels", labels, "must be a map of strings"))
    for k, v in (labels or {}).items():
        if not _valid_key(k):
            causes.append(field_invalid("metadata.labels", k, _QUALIFIED_NAME_MSG))
        if not isinstance(v, str) or len(v) > 63 or not LABEL_VALUE_RE.match(v):
            causes.append(field_invalid("metadata.labels", v, _LABEL_VALUE_MSG))
    ann = md.get("annotations")
    if ann is not None and not isinstance(ann, dict):
        causes.append(field_invalid("metadata.annotations", ann, "must be a map of strings"))
    for k, v in (ann or {}).items():
        if not _valid_key(k):
            causes.append(field_invalid("metadata.annotations", k, _QUALIFIED_NAME_MSG))
        if not isinstance(v, str):
            causes.append(field_invalid(f"metadata.annotations[{k}]", v, "must be a string"))
    fins = md.get("finalizers") or []
    if not isinstance(fins, list) or not all(isinstance(f, str) for f in fins):
        causes.append(field_invalid("metadata.finalizers", fins, "must be a list of strings"))
    elif old is not None and old["metadata"].get("deletionTimestamp"):
        added = [f for f in fins if f not in set(old["metadata"].get("finalizers") or [])]
        if added:
            listed = ", ".join(go_value(f) for f in added)
            causes.append(
                field_forbidden(
                    "metadata.finalizers",
                    "no new finalizers can be added if the object is being deleted, found new "
                    f"finalizers []string{{{listed}}}",
                )
            )
    for ref in md.get("ownerReferences") or []:
        if not isinstance(ref, dict):
            causes.append(field_invalid("metadata.ownerReferences", ref, "must be an object"))
            continue
        for f, what in (
            ("apiVersion", "version"),
            ("kind", "kind"),
            ("name", "name"),
            ("uid", "uid"),
        ):
            if not ref.get(f):
                causes.append(
                    field_invalid(f"metadata.ownerReferences.{f}", "", f"{what} must not be empty")
                )
    if causes:
        raise invalid(rt.kind, name, rt.group, causes)


class Validator:
    """Type-specific defaulting and validation; holds the state defaulting needs (the Service
    IP allocator) and the registry (CRD names must not shadow built-in types)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._ip = 0
        self._node_ports = 0
        # per request, set by the HTTP front end: the `fieldValidation` mode (Strict, Warn,
        # Ignore; Ignore between requests) and the warnings the request earned
        self.field_validation = "Ignore"
        self.warnings: list[str] = []

    def prepare(self, rt: ResourceType, obj: dict, old: dict | None) -> None:
        """Type-specific defaulting and validation, in place on a fresh dict."""
        if rt.custom:
            self._apply_schema(rt, obj)
            return
        key = rt.key
        for path in _MICROTIME_FIELDS.get(key, ()):
            cur: Any = obj
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
                        [
                            field_invalid(
                                f"data[{k}]", "<secret contents redacted>", "illegal base64 data"
                            )
                        ],
                    ) from None
        elif key == ("", "services"):
            self._default_service(obj, old)
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

    def _default_service(self, obj: dict, old: dict | None) -> None:
        """The real server's Service defaults: type, an allocated clusterIP (kept across
        updates), IP family fields, sessionAffinity, internal/external traffic policies, port
        protocol and targetPort, node ports for NodePort/LoadBalancer, `status.loadBalancer`."""
        spec = obj.setdefault("spec", {})
        old_spec = (old or {}).get("spec") or {}
        stype = spec.setdefault("type", "ClusterIP")
        for f in ("clusterIP", "clusterIPs"):
            if f in old_spec and f not in spec:
                spec[f] = old_spec[f]
        spec.setdefault("sessionAffinity", "None")
        old_ports = {
            (p.get("port"), p.get("protocol", "TCP")): p for p in old_spec.get("ports") or []
        }
        for port in spec.get("ports") or []:
            if not isinstance(port, dict):
                continue
            port.setdefault("protocol", "TCP")
            if stype != "ExternalName":
                port.setdefault("targetPort", port.get("port"))
            if stype in ("NodePort", "LoadBalancer") and not port.get("nodePort"):
                prev = old_ports.get((port.get("port"), port["protocol"])) or {}
                port["nodePort"] = prev.get("nodePort") or self._node_port()
        if stype == "ExternalName":
            return
        if not spec.get("clusterIP"):
            self._ip += 1
            ip = f"10.96.{(self._ip >> 8) & 255}.{self._ip & 255}"
            spec["clusterIP"] = ip
            spec["clusterIPs"] = [ip]
        elif "clusterIPs" not in spec:
            spec["clusterIPs"] = [spec["clusterIP"]]
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
        if stype in ("NodePort", "LoadBalancer"):
            spec.setdefault("externalTrafficPolicy", "Cluster")
        if stype == "LoadBalancer":
            spec.setdefault("allocateLoadBalancerNodePorts", True)
        if old is None:
            obj["status"] = {"loadBalancer": {}}

    def _node_port(self) -> int:
        self._node_ports += 1
        return 30000 + (self._node_ports - 1) % 2768

    def _apply_schema(self, rt: ResourceType, obj: dict) -> None:
        """Prune, default and validate a custom object against its version's schema."""
        version = obj["apiVersion"].rpartition("/")[2]
        node = rt.schemas.get(version)
        if node is None:
            return
        pruned = normalize(obj, node)
        if pruned:
            unknown = [f'unknown field "{p}"' for p in pruned]
            if self.field_validation == "Strict":
                raise ApiError(
                    400,
                    f'{rt.kind} in version "{version}" cannot be handled as a {rt.kind}: '
                    "strict decoding error: " + ", ".join(unknown),
                    "BadRequest",
                )
            if self.field_validation != "Ignore":
                self.warnings.extend(unknown)
        errors = validate(obj, node)
        if errors:
            raise invalid(rt.kind, obj["metadata"].get("name", ""), rt.group, errors)

    def _validate_crd(self, rt: ResourceType, obj: dict, old: dict | None) -> None:
        spec = obj.get("spec") or {}
        names = spec.get("names") or {}
        name = obj["metadata"]["name"]
        causes: list[FieldError] = []
        if not spec.get("group"):
            causes.append(field_required("spec.group"))
        if not names.get("plural"):
            causes.append(field_required("spec.names.plural"))
        if not names.get("kind"):
            causes.append(field_required("spec.names.kind"))
        if spec.get("scope") not in ("Namespaced", "Cluster"):
            causes.append(
                field_not_supported("spec.scope", spec.get("scope"), ["Cluster", "Namespaced"])
            )
        versions = spec.get("versions") or []
        if not versions:
            causes.append(field_required("spec.versions", "must have exactly one version"))
        elif sum(1 for v in versions if v.get("storage")) != 1:
            causes.append(
                field_invalid(
                    "spec.versions",
                    versions,
                    "must have exactly one version marked as storage version",
                )
            )
        for i, v in enumerate(versions):
            raw = (v.get("schema") or {}).get("openAPIV3Schema")
            if raw is not None:
                causes.extend(structural_errors(raw, f"spec.versions[{i}].schema.openAPIV3Schema"))
        if (
            names.get("plural")
            and spec.get("group")
            and name != f"{names['plural']}.{spec['group']}"
        ):
            causes.append(
                field_invalid("metadata.name", name, 'must be spec.names.plural+"."+spec.group')
            )
        if old is not None and spec.get("group") != (old.get("spec") or {}).get("group"):
            causes.append(field_invalid("spec.group", spec.get("group"), "field is immutable"))
        existing = self.registry.by_key((spec.get("group", ""), names.get("plural", "")))
        if old is None and existing is not None and not existing.custom:
            causes.append(
                field_invalid(
                    "spec.names.plural", names.get("plural"), "conflicts with a built-in type"
                )
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
