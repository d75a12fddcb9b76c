"""The object store of the embedded API server: objects, resourceVersions, watch history,
finalizers, garbage collection and the namespace and CRD lifecycles.

Guarantees:
- Single-threaded: every method runs on the server's event loop; no locking.
- One global resourceVersion counter, a decimal integer, bumped by exactly one for every
  committed change; a write that changes nothing commits nothing and emits no event.
- Committed objects are never mutated; writers build new dicts.
- Every committed change is delivered, in resourceVersion order, to every matching watcher
  before the call that made it returns.
- Per-resource event history of `history_size` events; watching from a resourceVersion older
  than the history raises 410 Expired.
"""

from __future__ import annotations

import base64
import binascii
import json
import random
import re
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from . import patch as P
from .errors import ApiError, already_exists, conflict, invalid, not_found
from .resources import Registry, ResourceType, type_from_crd
from .selectors import _KEY as LABEL_KEY_RE
from .selectors import _VALUE as LABEL_VALUE_RE

Key = tuple[str, str]  # (group, plural)
Matcher = Callable[[dict], bool]

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_GEN_CHARS = "bcdfghjklmnpqrstvwxz2456789"
_NO_GENERATION = {"configmaps", "secrets", "serviceaccounts", "events", "leases", "namespaces"}
_MICROTIME_FIELDS = {
    ("coordination.k8s.io", "leases"): (("spec", "acquireTime"), ("spec", "renewTime")),
    ("events.k8s.io", "events"): (("eventTime",),),
    ("", "events"): (("eventTime",),),
}
NS_FINALIZER = "kubernetes"
CRD_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"
CRD_KEY = ("apiextensions.k8s.io", "customresourcedefinitions")
NS_KEY = ("", "namespaces")


def now_time() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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


class Obj(dict):
    """A committed object; `raw` caches its JSON encoding."""

    __slots__ = ("raw",)


def encode(obj: dict) -> bytes:
    if isinstance(obj, Obj):
        raw = obj.raw
        if raw is None:
            raw = obj.raw = json.dumps(obj, separators=(",", ":")).encode()
        return raw
    return json.dumps(obj, separators=(",", ":")).encode()


class Watcher:
    """One watch stream's server side: a filter and a buffer of pending events."""

    __slots__ = ("key", "ns", "match", "events", "wake", "closed", "overflowed", "limit")

    def __init__(self, key: Key, ns: str, match: Matcher | None, limit: int = 200_000) -> None:
        self.key = key
        self.ns = ns
        self.match = match
        self.events: deque = deque()
        self.wake: Callable[[], None] | None = None
        self.closed = False
        self.overflowed = False
        self.limit = limit

    def classify(self, etype: str, obj: dict, old: dict | None) -> str | None:
        if self.ns and obj["metadata"].get("namespace", "") != self.ns:
            return None
        m = self.match
        if m is None:
            return etype
        now = m(obj)
        if etype == "MODIFIED":
            before = old is not None and m(old)
            if now and before:
                return "MODIFIED"
            if now:
                return "ADDED"
            if before:
                return "DELETED"
            return None
        return etype if now else None

    def offer(self, etype: str, obj: dict, old: dict | None) -> None:
        t = self.classify(etype, obj, old)
        if t is None or self.closed:
            return
        if len(self.events) >= self.limit:
            self.overflowed = True
            return
        self.events.append((t, obj))
        if self.wake is not None:
            self.wake()


class Store:
    """All objects of one API server."""

    def __init__(self, registry: Registry, history_size: int = 10_000) -> None:
        self.registry = registry
        self.history_size = history_size
        self.rv = 1
        self._data: dict[Key, dict[str, dict[str, Obj]]] = {}
        self._history: dict[Key, deque] = {}
        self._evicted: dict[Key, int] = {}  # events with rv <= this are gone
        self._watchers: dict[Key, set[Watcher]] = {}
        self._uids: dict[str, tuple[Key, str, str]] = {}
        self._dependents: dict[str, set[tuple[Key, str, str]]] = {}
        self._gc_pending: set[str] = set()
        self._terminating_ns: set[str] = set()
        self._terminating_crds: set[str] = set()
        self.wakeup: Callable[[], None] = lambda: None  # schedules `collect_garbage`
        self._ip = 0
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.create(self.registry.by_key(NS_KEY), "", {"metadata": {"name": ns}})

    # -- reads --------------------------------------------------------------------------------

    def get(self, rt: ResourceType, ns: str, name: str) -> Obj:
        obj = self._data.get(rt.key, {}).get(ns, {}).get(name)
        if obj is None:
            raise not_found(rt.gr, name, rt.group, rt.plural)
        return obj

    def find(self, rt: ResourceType, ns: str, name: str) -> Obj | None:
        return self._data.get(rt.key, {}).get(ns, {}).get(name)

    def by_uid(self, uid: str) -> Obj | None:
        loc = self._uids.get(uid)
        if loc is None:
            return None
        key, ns, name = loc
        return self._data.get(key, {}).get(ns, {}).get(name)

    def iter_objects(self, key: Key, ns: str = "") -> list[Obj]:
        """Objects of a type in (namespace, name) order; all namespaces when ns is empty."""
        by_ns = self._data.get(key, {})
        if ns:
            names = by_ns.get(ns, {})
            return [names[n] for n in sorted(names)]
        out = []
        for n in sorted(by_ns):
            names = by_ns[n]
            out.extend(names[x] for x in sorted(names))
        return out

    def list(
        self,
        rt: ResourceType,
        ns: str,
        match: Matcher | None,
        limit: int = 0,
        cont: str | None = None,
    ) -> tuple[list[Obj], str, str | None, int | None]:
        """(items, resourceVersion, continue token, remainingItemCount) of one page.

        A continued list reads the current state after the last returned key; it reports the
        resourceVersion of the first page, and fails with 410 when that version has been
        compacted away."""
        list_rv = self.rv
        start: tuple[str, str] | None = None
        if cont:
            try:
                tok = json.loads(base64.urlsafe_b64decode(cont.encode()))
                list_rv, start = int(tok["rv"]), (tok["start"][0], tok["start"][1])
            except (ValueError, KeyError, TypeError, IndexError, binascii.Error):
                raise ApiError(400, "continue key is not valid") from None
            if list_rv < self._evicted.get(rt.key, 0):
                raise ApiError(
                    410,
                    "The provided continue parameter is too old to display a consistent list "
                    "result. You can start a new list without the continue parameter.",
                    "Expired",
                )
        items: list[Obj] = []
        remaining = 0
        last: tuple[str, str] | None = None
        for obj in self.iter_objects(rt.key, ns):
            md = obj["metadata"]
            k = (md.get("namespace", ""), md["name"])
            if start is not None and k <= start:
                continue
            if match is not None and not match(obj):
                continue
            if limit and len(items) >= limit:
                remaining += 1
                continue
            items.append(obj)
            last = k
        token = None
        if remaining and last is not None:
            raw = json.dumps({"rv": list_rv, "start": list(last)}).encode()
            token = base64.urlsafe_b64encode(raw).decode()
        return items, str(list_rv), token, (remaining if token else None)

    # -- watch --------------------------------------------------------------------------------

    def watch(
        self, rt: ResourceType, ns: str, match: Matcher | None, rv: str | None
    ) -> tuple[Watcher, list[tuple[str, dict]]]:
        """Register a watcher; return it with the events it must send first.

        No resourceVersion (or "0"): synthetic ADDED for every matching object. Otherwise every
        event after `rv` from the history; 410 Expired if the history no longer reaches back."""
        w = Watcher(rt.key, ns, match)
        initial: list[tuple[str, dict]] = []
        if rv in (None, "", "0"):
            for obj in self.iter_objects(rt.key, ns):
                if match is None or match(obj):
                    initial.append(("ADDED", obj))
        else:
            try:
                since = int(rv)
            except ValueError:
                raise ApiError(400, f"invalid resource version {rv!r}") from None
            if since < self._evicted.get(rt.key, 0):
                raise ApiError(
                    410,
                    f"too old resource version: {since} ({self._evicted.get(rt.key, 0) + 1})",
                    "Expired",
                )
            for erv, etype, obj, old in self._history.get(rt.key, ()):
                if erv > since:
                    t = w.classify(etype, obj, old)
                    if t is not None:
                        initial.append((t, obj))
        self._watchers.setdefault(rt.key, set()).add(w)
        return w, initial

    def unwatch(self, w: Watcher) -> None:
        w.closed = True
        ws = self._watchers.get(w.key)
        if ws is not None:
            ws.discard(w)

    def watchers(self) -> list[Watcher]:
        return [w for ws in self._watchers.values() for w in ws]

    def compact(self) -> None:
        """Forget all event history: every watch from an older resourceVersion gets 410."""
        for key in list(self._history) + list(self._data):
            self._history.get(key, deque()).clear()
            self._evicted[key] = self.rv

    # -- commit -------------------------------------------------------------------------------

    def _commit(self, rt: ResourceType, etype: str, new: dict, old: Obj | None) -> Obj:
        self.rv += 1
        rv = self.rv
        new["metadata"]["resourceVersion"] = str(rv)
        obj = Obj(new)
        obj.raw = None
        md = obj["metadata"]
        ns = md.get("namespace", "")
        name = md["name"]
        key = rt.key
        bucket = self._data.setdefault(key, {})
        if etype == "DELETED":
            names = bucket.get(ns)
            if names is not None:
                names.pop(name, None)
                if not names:
                    del bucket[ns]
            self._uids.pop(md["uid"], None)
        else:
            bucket.setdefault(ns, {})[name] = obj
            self._uids[md["uid"]] = (key, ns, name)
        self._index_owners(key, ns, name, old, obj if etype != "DELETED" else None)
        hist = self._history.setdefault(key, deque())
        if len(hist) >= self.history_size:
            self._evicted[key] = hist.popleft()[0]
        hist.append((rv, etype, obj, old))
        for w in tuple(self._watchers.get(key, ())):
            w.offer(etype, obj, old)
        if etype == "DELETED":
            self._after_removal(rt, obj)
        if key == CRD_KEY:
            self._crd_changed(obj, etype)
        return obj

    def _index_owners(
        self, key: Key, ns: str, name: str, old: dict | None, new: dict | None
    ) -> None:
        old_uids = {
            r.get("uid") for r in (old or {}).get("metadata", {}).get("ownerReferences") or []
        }
        new_uids = {
            r.get("uid") for r in (new or {}).get("metadata", {}).get("ownerReferences") or []
        }
        loc = (key, ns, name)
        for u in old_uids - new_uids:
            deps = self._dependents.get(u)
            if deps is not None:
                deps.discard(loc)
                if not deps:
                    del self._dependents[u]
        for u in new_uids - old_uids:
            self._dependents.setdefault(u, set()).add(loc)
            if u not in self._uids:  # dangling from the start: the collector decides
                self._gc_pending.add(u)
                self.wakeup()

    def _after_removal(self, rt: ResourceType, obj: Obj) -> None:
        md = obj["metadata"]
        pend = False
        if md["uid"] in self._dependents:
            self._gc_pending.add(md["uid"])
            pend = True
        for r in md.get("ownerReferences") or []:
            self._gc_pending.add(r.get("uid"))
            pend = True
        if md.get("namespace") in self._terminating_ns or self._terminating_crds:
            pend = True
        if pend:
            self.wakeup()

    # -- writes -------------------------------------------------------------------------------

    def _check_meta(self, rt: ResourceType, obj: dict, old: dict | None) -> None:
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
                causes.append(
                    ("metadata.annotations", k, "name part must be a valid qualified name")
                )
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

    def _prepare(self, rt: ResourceType, obj: dict, old: dict | None) -> None:
        """Type-specific defaulting and validation (in place on a fresh dict)."""
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

    def _crd_changed(self, crd: Obj, etype: str) -> None:
        rt = type_from_crd(crd)
        if etype == "DELETED":
            self._terminating_crds.discard(crd["metadata"]["name"])
            self._data.pop(rt.key, None)
            self._history.pop(rt.key, None)
            self._evicted.pop(rt.key, None)
            for w in self._watchers.pop(rt.key, set()):
                w.closed = True
                if w.wake:
                    w.wake()
            self.registry.remove(rt.key)
        else:
            if crd["metadata"].get("deletionTimestamp"):
                self._terminating_crds.add(crd["metadata"]["name"])
                self.wakeup()
            self.registry.add(rt)

    def _fill_new(self, rt: ResourceType, ns: str, obj: dict) -> dict:
        md = obj.setdefault("metadata", {})
        if not isinstance(md, dict):
            raise ApiError(400, "metadata must be an object")
        if not md.get("name"):
            gen = md.get("generateName")
            if gen:
                md["name"] = gen + "".join(random.choice(_GEN_CHARS) for _ in range(5))
            else:
                raise invalid(
                    rt.kind,
                    "",
                    rt.group,
                    [("metadata.name", None, "Required value: name or generateName is required")],
                )
        if rt.namespaced:
            md["namespace"] = ns
        else:
            md.pop("namespace", None)
        md["uid"] = _uid()
        md["creationTimestamp"] = now_time()
        for f in ("deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion", "selfLink"):
            md.pop(f, None)
        if rt.plural not in _NO_GENERATION:
            md["generation"] = 1
        else:
            md.pop("generation", None)
        return obj

    def _set_type(self, rt: ResourceType, obj: dict, version: str | None) -> None:
        av = obj.get("apiVersion")
        kind = obj.get("kind")
        if kind and kind != rt.kind:
            raise ApiError(
                400,
                f"the kind of the object ({kind}) does not match the kind on the URL ({rt.kind})",
            )
        if av and av not in tuple(rt.api_version(v) for v in rt.versions):
            raise ApiError(
                400,
                f"the API version in the data ({av}) does not match the expected API version ({rt.api_version(version)})",
            )
        obj["apiVersion"] = rt.api_version(version if version else None)
        obj["kind"] = rt.kind

    def create(
        self,
        rt: ResourceType,
        ns: str,
        body: dict,
        *,
        manager: str = "",
        version: str | None = None,
        dry_run: bool = False,
        _managed: list | None = None,
    ) -> Obj | dict:
        if not isinstance(body, dict):
            raise ApiError(400, "the body of the request must be a JSON object")
        self._check_namespace(rt, ns, creating=True)
        obj = P.deepcopy(body)
        self._set_type(rt, obj, version)
        md = obj.get("metadata") or {}
        if rt.namespaced and md.get("namespace") and md["namespace"] != ns:
            raise ApiError(
                400,
                "the namespace of the provided object does not match the namespace sent on the request",
            )
        self._fill_new(rt, ns, obj)
        if rt.status_subresource and rt.key != NS_KEY:
            obj.pop("status", None)
        self._check_meta(rt, obj, None)
        self._prepare(rt, obj, None)
        name = obj["metadata"]["name"]
        if self.find(rt, ns, name) is not None:
            raise already_exists(rt.gr, name, rt.group, rt.plural)
        if _managed is not None:
            obj["metadata"]["managedFields"] = _managed
        elif manager:
            self._track_update(obj, None, manager, "", obj["apiVersion"])
        if dry_run:
            obj["metadata"]["resourceVersion"] = str(self.rv)
            return obj
        return self._commit(rt, "ADDED", obj, None)

    def _check_namespace(self, rt: ResourceType, ns: str, creating: bool) -> None:
        if not rt.namespaced:
            return
        nso = self._data.get(NS_KEY, {}).get("", {}).get(ns)
        if nso is None:
            raise not_found("namespaces", ns, "", "namespaces")
        if creating and nso["metadata"].get("deletionTimestamp"):
            raise ApiError(
                403,
                f"{rt.kind.lower()} is forbidden: unable to create new content in namespace {ns} "
                f"because it is being terminated",
                "Forbidden",
                {
                    "name": ns,
                    "kind": "namespaces",
                    "causes": [{"reason": "NamespaceTerminating", "field": "metadata.namespace"}],
                },
            )
        if creating and rt.custom:
            crd = self._data.get(CRD_KEY, {}).get("", {}).get(f"{rt.plural}.{rt.group}")
            if crd is not None and crd["metadata"].get("deletionTimestamp"):
                raise ApiError(
                    405, "create not allowed while custom resource definition is terminating"
                )

    def update(
        self,
        rt: ResourceType,
        ns: str,
        name: str,
        body: dict,
        *,
        subresource: str = "",
        manager: str = "",
        version: str | None = None,
        dry_run: bool = False,
    ) -> Obj | dict:
        """PUT: replace the object (or its status when subresource == "status")."""
        if not isinstance(body, dict):
            raise ApiError(400, "the body of the request must be a JSON object")
        old = self.get(rt, ns, name)
        new = P.deepcopy(body)
        self._set_type(rt, new, version)
        md = new.get("metadata")
        if not isinstance(md, dict):
            md = new["metadata"] = {}
        if md.get("name") and md["name"] != name:
            raise ApiError(
                400,
                f"the name of the object ({md['name']}) does not match the name on the URL ({name})",
            )
        if rt.namespaced and md.get("namespace") and md["namespace"] != ns:
            raise ApiError(
                400,
                "the namespace of the provided object does not match the namespace sent on the request",
            )
        _check_write_preconditions(rt, name, md, old)
        return self._write(
            rt, old, new, subresource=subresource, manager=manager, version=version, dry_run=dry_run
        )

    def _write(
        self,
        rt: ResourceType,
        old: Obj,
        new: dict,
        *,
        subresource: str,
        manager: str,
        version: str | None,
        dry_run: bool,
        managed: list | None = None,
    ) -> Obj | dict:
        """Common path of every modification: merge server-owned state, validate, track
        managed fields, bump generation, skip no-ops, honour finalizer removal."""
        if subresource == "status":
            status = new.get("status")
            new = P.deepcopy(old)
            if status is None:
                new.pop("status", None)
            else:
                new["status"] = P.deepcopy(status)
        else:
            if subresource:
                raise ApiError(
                    404, f"the server could not find the requested resource ({subresource})"
                )
            md = new["metadata"]
            omd = old["metadata"]
            for f in (
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ):
                if f in omd:
                    md[f] = omd[f]
                else:
                    md.pop(f, None)
            if rt.status_subresource:
                if "status" in old:
                    new["status"] = P.deepcopy(old["status"])
                else:
                    new.pop("status", None)
            if rt.key == CRD_KEY:
                new.setdefault("status", P.deepcopy(old.get("status") or {}))
        new["metadata"]["managedFields"] = P.deepcopy(old["metadata"].get("managedFields") or [])
        new["metadata"].pop("resourceVersion", None)
        self._check_meta(rt, new, old)
        self._prepare(rt, new, old)
        if managed is not None:
            new["metadata"]["managedFields"] = managed
        elif manager:
            self._track_update(new, old, manager, subresource, rt.api_version(version))
        if not new["metadata"]["managedFields"]:
            new["metadata"].pop("managedFields")
        if "generation" in old["metadata"] and subresource != "status":
            if _spec_of(new) != _spec_of(old):
                new["metadata"]["generation"] = old["metadata"]["generation"] + 1
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        if new == old:
            return old
        if dry_run:
            return new
        md = new["metadata"]
        if md.get("deletionTimestamp") and not md.get("finalizers") and not _ns_finalizers(rt, new):
            return self._commit(rt, "DELETED", new, old)
        return self._commit(rt, "MODIFIED", new, old)

    # -- managed fields -----------------------------------------------------------------------

    def _track_update(
        self, new: dict, old: dict | None, manager: str, sub: str, api_version: str
    ) -> None:
        changed = P.changed_paths(old or {}, new) if old is not None else P.field_paths(new)
        if sub == "status":
            changed = {p for p in changed if p[0] == "status"}
        if not changed:
            return
        entries = _read_managed(new["metadata"].get("managedFields") or [])
        live = P.field_paths(new)
        out = []
        mine = None
        for e in entries:
            if e["manager"] == manager and e["operation"] == "Update" and e["subresource"] == sub:
                mine = e
                continue
            e["paths"] = (e["paths"] - changed) & live
            out.append(e)
        paths = ((mine["paths"] if mine else set()) | changed) & live
        out.append(
            {
                "manager": manager,
                "operation": "Update",
                "subresource": sub,
                "apiVersion": api_version,
                "time": now_time(),
                "paths": paths,
            }
        )
        new["metadata"]["managedFields"] = _write_managed(out)

    def apply(
        self,
        rt: ResourceType,
        ns: str,
        name: str,
        applied: dict,
        *,
        manager: str,
        force: bool,
        subresource: str = "",
        version: str | None = None,
        dry_run: bool = False,
    ) -> tuple[Obj | dict, bool]:
        """Server-side apply; returns (object, created)."""
        if not manager:
            raise ApiError(400, "PATCH requests with apply content type require fieldManager")
        if not isinstance(applied, dict):
            raise ApiError(400, "apply patch must be an object")
        applied = P.deepcopy(applied)
        if not applied.get("apiVersion") or not applied.get("kind"):
            raise ApiError(400, "apiVersion and kind must be set in an apply patch")
        self._set_type(rt, applied, version)
        amd = applied.setdefault("metadata", {})
        if amd.get("name") and amd["name"] != name:
            raise ApiError(
                400,
                f"the name of the object ({amd['name']}) does not match the name on the URL ({name})",
            )
        amd["name"] = name
        if rt.namespaced and amd.get("namespace") and amd["namespace"] != ns:
            raise ApiError(
                400,
                "the namespace of the provided object does not match the namespace sent on the request",
            )
        if subresource == "status":
            applied = {
                k: v
                for k, v in applied.items()
                if k in ("apiVersion", "kind", "metadata", "status")
            }
            applied["metadata"] = {"name": name}
        elif rt.status_subresource:
            applied.pop("status", None)
        paths = P.field_paths(applied)
        if subresource == "status":
            paths = {p for p in paths if p[0] == "status"}
        old = self.find(rt, ns, name)
        api_version = rt.api_version(version)
        if old is None:
            if subresource:
                raise not_found(rt.gr, name, rt.group, rt.plural)
            managed = _write_managed(
                [
                    {
                        "manager": manager,
                        "operation": "Apply",
                        "subresource": "",
                        "apiVersion": api_version,
                        "time": now_time(),
                        "paths": paths,
                    }
                ]
            )
            body = P.deepcopy(applied)
            return self.create(
                rt, ns, body, version=version, dry_run=dry_run, _managed=managed
            ), True
        want_rv = amd.get("resourceVersion")
        if want_rv and want_rv != old["metadata"]["resourceVersion"]:
            raise conflict(
                rt.gr,
                name,
                rt.group,
                rt.plural,
                "the object has been modified; please apply your changes to the latest version and try again",
            )
        entries = _read_managed(old["metadata"].get("managedFields") or [])
        mine_prev: set = set()
        conflicts: list[tuple[str, P.Path]] = []
        for e in entries:
            if (
                e["manager"] == manager
                and e["operation"] == "Apply"
                and e["subresource"] == subresource
            ):
                mine_prev = e["paths"]
                continue
            if e["manager"] == manager:
                continue
            for p in e["paths"] & paths:
                if P.get_path(old, p) != P.get_path(applied, p):
                    conflicts.append((e["manager"], p))
        if conflicts and not force:
            conflicts.sort()
            causes = [
                {
                    "type": "FieldManagerConflict",
                    "message": f'conflict with "{m}"',
                    "field": "." + ".".join(p),
                }
                for m, p in conflicts
            ]
            lines = "\n".join(f"- {c['message']}: {c['field']}" for c in causes)
            n = len(conflicts)
            raise ApiError(
                409,
                f"Apply failed with {n} conflict{'s' if n > 1 else ''}: {lines}",
                "Conflict",
                {"name": name, "kind": rt.plural, "group": rt.group, "causes": causes},
            )
        stolen = {p for _, p in conflicts}
        new = P.deepcopy(old)
        others_own: set = set()
        out = []
        for e in entries:
            if (
                e["manager"] == manager
                and e["operation"] == "Apply"
                and e["subresource"] == subresource
            ):
                continue
            e["paths"] = e["paths"] - stolen
            others_own |= e["paths"]
            out.append(e)
        for p in mine_prev - paths - others_own:
            P.remove_path(new, p)
        new = P.apply_merge(new, applied)
        out.append(
            {
                "manager": manager,
                "operation": "Apply",
                "subresource": subresource,
                "apiVersion": api_version,
                "time": now_time(),
                "paths": paths,
            }
        )
        live = P.field_paths(new)
        for e in out:
            e["paths"] &= live
        managed = _write_managed(out)
        # unchanged managed fields of a no-op apply are kept as they were
        if _strip_times(managed) == _strip_times(old["metadata"].get("managedFields") or []):
            managed = P.deepcopy(old["metadata"].get("managedFields") or [])
        if subresource != "status":
            new["metadata"].pop("resourceVersion", None)
        result = self._write(
            rt,
            old,
            new,
            subresource=subresource,
            manager="",
            version=version,
            dry_run=dry_run,
            managed=managed,
        )
        return result, False

    def patch(
        self,
        rt: ResourceType,
        ns: str,
        name: str,
        kind: str,
        body: Any,
        *,
        subresource: str = "",
        manager: str = "",
        version: str | None = None,
        dry_run: bool = False,
    ) -> Obj | dict:
        """merge, json or strategic patch of an existing object."""
        old = self.get(rt, ns, name)
        try:
            if kind == "merge":
                new = P.merge_patch(old, body)
            elif kind == "json":
                new = P.json_patch(old, body)
            elif kind == "strategic":
                new = P.strategic_merge_patch(old, body)
            else:
                raise ApiError(415, f"unsupported patch type {kind}")
        except P.PatchError as e:
            raise ApiError(e.code, str(e)) from None
        if not isinstance(new, dict):
            raise ApiError(400, "patch produced a non-object")
        md = new.get("metadata")
        if not isinstance(md, dict):
            md = new["metadata"] = {}
        _check_write_preconditions(rt, name, md, old)
        if md.get("name", name) != name:
            raise ApiError(
                400,
                f"the name of the object ({md.get('name')}) does not match the name on the URL ({name})",
            )
        self._set_type(rt, new, version)
        return self._write(
            rt, old, new, subresource=subresource, manager=manager, version=version, dry_run=dry_run
        )

    # -- deletion -----------------------------------------------------------------------------

    def delete(
        self,
        rt: ResourceType,
        ns: str,
        name: str,
        options: dict | None = None,
        *,
        dry_run: bool = False,
    ) -> Obj | dict:
        """Delete with preconditions and propagationPolicy; returns the object as it is after
        the call (with deletionTimestamp when finalizers keep it, else its final state)."""
        opts = options or {}
        old = self.get(rt, ns, name)
        pre = opts.get("preconditions") or {}
        omd = old["metadata"]
        if pre.get("uid") and pre["uid"] != omd["uid"]:
            raise conflict(
                rt.gr,
                name,
                rt.group,
                rt.plural,
                f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: {omd['uid']}",
            )
        if pre.get("resourceVersion") and pre["resourceVersion"] != omd["resourceVersion"]:
            raise conflict(
                rt.gr,
                name,
                rt.group,
                rt.plural,
                f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, "
                f"ResourceVersion in object meta: {omd['resourceVersion']}",
            )
        policy = opts.get("propagationPolicy")
        if policy is None and opts.get("orphanDependents") is not None:
            policy = "Orphan" if opts["orphanDependents"] else "Background"
        policy = policy or "Background"
        if policy not in ("Background", "Foreground", "Orphan"):
            raise ApiError(422, f"propagationPolicy: Unsupported value: {policy!r}", "Invalid")
        fins = list(omd.get("finalizers") or [])
        if policy == "Foreground" and "foregroundDeletion" not in fins:
            fins.append("foregroundDeletion")
        elif policy == "Orphan" and "orphan" not in fins:
            fins.append("orphan")
        if omd.get("deletionTimestamp"):
            if fins == list(omd.get("finalizers") or []) or dry_run:
                return old
            new = P.deepcopy(old)
            new["metadata"]["finalizers"] = fins
            obj = self._commit(rt, "MODIFIED", new, old)
            self._gc_pending.add(omd["uid"])
            self.wakeup()
            return obj
        new = P.deepcopy(old)
        if fins or _ns_finalizers(rt, old):
            md = new["metadata"]
            md["deletionTimestamp"] = now_time()
            md["deletionGracePeriodSeconds"] = 0
            if fins:
                md["finalizers"] = fins
            if "generation" in md:
                md["generation"] += 1
            if rt.key == NS_KEY:
                new.setdefault("status", {})["phase"] = "Terminating"
            if dry_run:
                return new
            obj = self._commit(rt, "MODIFIED", new, old)
            if rt.key == NS_KEY:
                self._terminating_ns.add(name)
            self._gc_pending.add(omd["uid"])
            self.wakeup()
            return obj
        if dry_run:
            return old
        return self._commit(rt, "DELETED", new, old)

    def delete_collection(
        self,
        rt: ResourceType,
        ns: str,
        match: Matcher | None,
        options: dict | None = None,
        *,
        dry_run: bool = False,
    ) -> list[dict]:
        out = []
        for obj in self.iter_objects(rt.key, ns):
            if match is not None and not match(obj):
                continue
            md = obj["metadata"]
            try:
                out.append(
                    self.delete(rt, md.get("namespace", ""), md["name"], options, dry_run=dry_run)
                )
            except ApiError:
                continue
        return out

    # -- garbage collection and lifecycles ----------------------------------------------------

    def has_pending_work(self) -> bool:
        return bool(self._gc_pending or self._terminating_ns or self._terminating_crds)

    def collect_garbage(self) -> None:
        """One pass of the garbage collector and the namespace and CRD finalizers.

        Dependents whose owners (by uid) are all gone are deleted in the background; dangling
        references to gone owners are removed while another owner lives; owners deleted in the
        foreground lose their `foregroundDeletion` finalizer once no dependent with
        blockOwnerDeletion remains; owners deleted with Orphan have their dependents'
        references removed, then lose their `orphan` finalizer."""
        pending, self._gc_pending = self._gc_pending, set()
        for uid in pending:
            self._collect_owner(uid)
        for ns in list(self._terminating_ns):
            self._finish_namespace(ns)
        for name in list(self._terminating_crds):
            self._finish_crd(name)

    def _deps(self, uid: str) -> list[tuple[ResourceType, Obj]]:
        out = []
        for key, ns, name in list(self._dependents.get(uid, ())):
            rt = self.registry.by_key(key)
            obj = self._data.get(key, {}).get(ns, {}).get(name)
            if rt is not None and obj is not None:
                out.append((rt, obj))
        return out

    def _collect_owner(self, uid: str) -> None:
        owner = self.by_uid(uid)
        if owner is None:
            for rt, dep in self._deps(uid):
                md = dep["metadata"]
                refs = md.get("ownerReferences") or []
                alive = [
                    r for r in refs if r.get("uid") != uid and self.by_uid(r.get("uid")) is not None
                ]
                if alive and len(alive) < len(refs):
                    new = P.deepcopy(dep)
                    new["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid]
                    self._write(
                        rt, dep, new, subresource="", manager="", version=None, dry_run=False
                    )
                elif not alive and not md.get("deletionTimestamp"):
                    self._gc_delete(rt, dep, "Background")
            return
        omd = owner["metadata"]
        if not omd.get("deletionTimestamp"):
            return
        fins = omd.get("finalizers") or []
        ort = self.registry.by_key(self._uids[uid][0])
        if "orphan" in fins:
            for rt, dep in self._deps(uid):
                refs = dep["metadata"].get("ownerReferences") or []
                new = P.deepcopy(dep)
                new["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid]
                if not new["metadata"]["ownerReferences"]:
                    new["metadata"].pop("ownerReferences")
                self._write(rt, dep, new, subresource="", manager="", version=None, dry_run=False)
            self._drop_finalizer(ort, owner, "orphan")
        elif "foregroundDeletion" in fins:
            for rt, dep in self._deps(uid):
                md = dep["metadata"]
                if not md.get("deletionTimestamp"):
                    policy = "Foreground" if md["uid"] in self._dependents else "Background"
                    self._gc_delete(rt, dep, policy)
            blocking = any(_blocks(d, uid) for _, d in self._deps(uid))
            owner = self.by_uid(uid)
            if not blocking and owner is not None:
                self._drop_finalizer(ort, owner, "foregroundDeletion")
        elif self._dependents.get(uid):
            # owner deleted in the background but kept by finalizers: nothing to do yet
            pass

    def _gc_delete(self, rt: ResourceType, obj: Obj, policy: str) -> None:
        md = obj["metadata"]
        try:
            self.delete(
                rt,
                md.get("namespace", ""),
                md["name"],
                {"propagationPolicy": policy, "preconditions": {"uid": md["uid"]}},
            )
        except ApiError:
            pass

    def _drop_finalizer(self, rt: ResourceType | None, obj: Obj, fin: str) -> None:
        if rt is None:
            return
        new = P.deepcopy(obj)
        new["metadata"]["finalizers"] = [
            f for f in new["metadata"].get("finalizers") or [] if f != fin
        ]
        if not new["metadata"]["finalizers"]:
            new["metadata"].pop("finalizers")
        self._write(rt, obj, new, subresource="", manager="", version=None, dry_run=False)

    def _finish_namespace(self, name: str) -> None:
        nsrt = self.registry.by_key(NS_KEY)
        nso = self.find(nsrt, "", name)
        if nso is None:
            self._terminating_ns.discard(name)
            return
        for rt in self.registry.types():
            if not rt.namespaced:
                continue
            for obj in list(self._data.get(rt.key, {}).get(name, {}).values()):
                if not obj["metadata"].get("deletionTimestamp"):
                    self._gc_delete(rt, obj, "Background")
        if any(
            self._data.get(rt.key, {}).get(name) for rt in self.registry.types() if rt.namespaced
        ):
            return
        self._terminating_ns.discard(name)
        new = P.deepcopy(nso)
        new["spec"]["finalizers"] = []
        if nso["metadata"].get("finalizers"):
            self._commit(nsrt, "MODIFIED", new, nso)
        else:
            self._commit(nsrt, "DELETED", new, nso)

    def _finish_crd(self, name: str) -> None:
        crt = self.registry.by_key(CRD_KEY)
        crd = self.find(crt, "", name)
        if crd is None:
            self._terminating_crds.discard(name)
            return
        rt = type_from_crd(crd)
        srt = self.registry.by_key(rt.key)
        if srt is not None:
            for obj in self.iter_objects(rt.key):
                if not obj["metadata"].get("deletionTimestamp"):
                    self._gc_delete(srt, obj, "Background")
        if self._data.get(rt.key):
            return
        self._terminating_crds.discard(name)
        self._drop_finalizer(crt, crd, CRD_FINALIZER)


def _blocks(dep: dict, owner_uid: str) -> bool:
    for r in dep["metadata"].get("ownerReferences") or []:
        if r.get("uid") == owner_uid and r.get("blockOwnerDeletion"):
            return True
    return False


def _ns_finalizers(rt: ResourceType, obj: dict) -> bool:
    return rt.key == NS_KEY and bool((obj.get("spec") or {}).get("finalizers"))


def _spec_of(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _valid_key(k: Any) -> bool:
    if not isinstance(k, str) or not LABEL_KEY_RE.match(k):
        return False
    prefix, _, name = k.rpartition("/")
    return len(name) <= 63 and len(prefix) <= 253


def _uid() -> str:
    import uuid

    return str(uuid.uuid4())


def _read_managed(entries: list) -> list[dict]:
    out = []
    for e in entries:
        if not isinstance(e, dict):
            continue
        out.append(
            {
                "manager": e.get("manager", ""),
                "operation": e.get("operation", "Update"),
                "subresource": e.get("subresource", ""),
                "apiVersion": e.get("apiVersion", ""),
                "time": e.get("time", ""),
                "paths": P.fields_v1_to_paths(e.get("fieldsV1") or {}),
            }
        )
    return out


def _write_managed(entries: list[dict]) -> list[dict]:
    out = []
    for e in entries:
        if not e["paths"]:
            continue
        d = {
            "manager": e["manager"],
            "operation": e["operation"],
            "apiVersion": e["apiVersion"],
            "time": e["time"],
            "fieldsType": "FieldsV1",
            "fieldsV1": P.paths_to_fields_v1(e["paths"]),
        }
        if e["subresource"]:
            d["subresource"] = e["subresource"]
        out.append(d)
    return out


def _strip_times(entries: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if k != "time"} for e in entries]


_ = time  # reserved for future rate limiting


def _check_write_preconditions(rt, name: str, md: dict, old: dict) -> None:
    """409 Conflict when the written metadata names another resourceVersion or uid than the
    stored object's (optimistic concurrency for update and patch)."""
    want_rv = md.get("resourceVersion")
    if want_rv and want_rv != old["metadata"]["resourceVersion"]:
        raise conflict(
            rt.gr,
            name,
            rt.group,
            rt.plural,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    if md.get("uid") and md["uid"] != old["metadata"]["uid"]:
        raise conflict(
            rt.gr,
            name,
            rt.group,
            rt.plural,
            f"Precondition failed: UID in precondition: {md['uid']}, UID in object meta: {old['metadata']['uid']}",
        )
