"""The object store of the embedded API server: objects, resourceVersions and the write path
(create, update, patch, apply, delete) that every change goes through.

Guarantees:
- Single-threaded: every method runs on the server's event loop; no locking.
- One global resourceVersion counter, a decimal integer, bumped by exactly one for every
  committed change; a write that changes nothing commits nothing and emits no event.
- Committed objects are never mutated; writers build new dicts.
- Every committed change is delivered, in resourceVersion order, to every matching watcher
  before the call that made it returns (`watch.WatchHub`), and to the garbage collector's
  owner index (`gc.Collector`).
- Validation and defaulting (`validation`) run on every write; managed fields are tracked on
  every write that names a manager (`managed`).
"""

from __future__ import annotations

import base64
import binascii
import builtins
import json
import random
from collections.abc import Callable
from typing import Any

from . import managed as M
from . import patch as P
from .errors import ApiError, already_exists, conflict, field_required, invalid, not_found
from .gc import Collector
from .objects import (
    CRD_KEY,
    NS_KEY,
    Key,
    Matcher,
    Obj,
    encode,
    new_uid,
    now_time,
    ns_finalizers,
)
from .resources import Registry, ResourceType, type_from_crd
from .validation import Validator, check_meta
from .watch import Watcher, WatchHub

__all__ = ["Store", "Watcher", "encode", "now_time"]

_GEN_CHARS = "bcdfghjklmnpqrstvwxz2456789"
_NO_GENERATION = {"configmaps", "secrets", "serviceaccounts", "events", "leases", "namespaces"}


class Store:
    """All objects of one API server."""

    def __init__(self, registry: Registry, history_size: int = 10_000) -> None:
        self.registry = registry
        self.rv = 1
        self._data: dict[Key, dict[str, dict[str, Obj]]] = {}
        self._uids: dict[str, tuple[Key, str, str]] = {}
        self.hub = WatchHub(history_size)
        self.gc = Collector(self)
        self.validator = Validator(registry)
        self.wakeup: Callable[[], None] = lambda: None  # schedules `collect_garbage`
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.create(self.registry.get(NS_KEY), "", {"metadata": {"name": ns}})

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

    def find_key(self, key: Key, ns: str, name: str) -> Obj | None:
        return self._data.get(key, {}).get(ns, {}).get(name)

    def locate(self, uid: str) -> Key | None:
        """The type of the object with this uid, if it exists."""
        loc = self._uids.get(uid)
        return loc[0] if loc is not None else None

    def has_objects(self, key: Key, ns: str | None = None) -> bool:
        """Whether any object of `key` exists (in namespace `ns`, when given)."""
        by_ns = self._data.get(key)
        if not by_ns:
            return False
        return ns is None or bool(by_ns.get(ns))

    def iter_objects(self, key: Key, ns: str = "") -> list[Obj]:
        """Objects of a type in (namespace, name) order; all namespaces when ns is empty."""
        by_ns = self._data.get(key, {})
        if ns:
            names = by_ns.get(ns, {})
            return [names[n] for n in sorted(names)]
        out: list[Obj] = []
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
            if list_rv < self.hub.evicted(rt.key):
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
    ) -> tuple[Watcher, builtins.list[tuple[str, dict]]]:
        """Register a watcher; return it with the events it must send first (see
        `WatchHub.start`)."""
        return self.hub.start(rt.key, ns, match, rv, self.iter_objects(rt.key, ns))

    def unwatch(self, w: Watcher) -> None:
        self.hub.stop(w)

    def watchers(self) -> builtins.list[Watcher]:
        return self.hub.watchers()

    def compact(self) -> None:
        """Forget all event history: every watch from an older resourceVersion gets 410."""
        self.hub.compact(self._data, self.rv)

    # -- commit -------------------------------------------------------------------------------

    def commit(self, rt: ResourceType, etype: str, new: dict, old: Obj | None) -> Obj:
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
        self.gc.index_owners(key, ns, name, old, obj if etype != "DELETED" else None)
        self.hub.publish(key, rv, etype, obj, old)
        if etype == "DELETED":
            self.gc.after_removal(rt, obj)
        if key == CRD_KEY:
            self._crd_changed(obj, etype)
        return obj

    def _crd_changed(self, crd: Obj, etype: str) -> None:
        rt = type_from_crd(crd)
        if etype == "DELETED":
            self.gc.crd_gone(crd["metadata"]["name"])
            self._data.pop(rt.key, None)
            self.hub.drop_type(rt.key)
            self.registry.remove(rt.key)
        else:
            if crd["metadata"].get("deletionTimestamp"):
                self.gc.crd_terminating(crd["metadata"]["name"])
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
                    [field_required("metadata.name", "name or generateName is required")],
                )
        if rt.namespaced:
            md["namespace"] = ns
        else:
            md.pop("namespace", None)
        md["uid"] = new_uid()
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
        _managed: builtins.list[dict] | None = None,
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
        check_meta(rt, obj, None)
        self.validator.prepare(rt, obj, None)
        name = obj["metadata"]["name"]
        if self.find(rt, ns, name) is not None:
            raise already_exists(rt.gr, name, rt.group, rt.plural)
        if _managed is not None:
            obj["metadata"]["managedFields"] = _managed
        elif manager:
            M.track_update(obj, None, manager, "", obj["apiVersion"])
        if dry_run:
            obj["metadata"]["resourceVersion"] = str(self.rv)
            return obj
        return self.commit(rt, "ADDED", obj, None)

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
        return self.write(
            rt, old, new, subresource=subresource, manager=manager, version=version, dry_run=dry_run
        )

    def write(
        self,
        rt: ResourceType,
        old: Obj,
        new: dict,
        *,
        subresource: str,
        manager: str,
        version: str | None,
        dry_run: bool,
        managed: builtins.list[dict] | None = None,
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
        sent = new["metadata"].get("managedFields") if subresource != "status" else None
        new["metadata"]["managedFields"], reset = M.from_request(
            sent, old["metadata"].get("managedFields") or []
        )
        new["metadata"].pop("resourceVersion", None)
        check_meta(rt, new, old)
        self.validator.prepare(rt, new, old)
        if managed is not None:
            new["metadata"]["managedFields"] = managed
        elif manager and not reset:
            M.track_update(new, old, manager, subresource, rt.api_version(version))
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
        if (
            md.get("deletionTimestamp")
            and not md.get("finalizers")
            and not ns_finalizers(rt.key, new)
        ):
            return self.commit(rt, "DELETED", new, old)
        return self.commit(rt, "MODIFIED", new, old)

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
            managed = M.created_by_apply(manager, api_version, paths)
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
        new, managed = M.apply_fields(
            old,
            applied,
            paths,
            manager=manager,
            force=force,
            subresource=subresource,
            api_version=api_version,
        )
        if subresource != "status":
            M.update_last_applied(new, applied, manager)
            new["metadata"].pop("resourceVersion", None)
        result = self.write(
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
        return self.write(
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
            obj = self.commit(rt, "MODIFIED", new, old)
            self.gc.owner_pending(omd["uid"])
            return obj
        new = P.deepcopy(old)
        if fins or ns_finalizers(rt.key, old):
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
            obj = self.commit(rt, "MODIFIED", new, old)
            if rt.key == NS_KEY:
                self.gc.namespace_terminating(name)
            self.gc.owner_pending(omd["uid"])
            return obj
        if dry_run:
            return old
        return self.commit(rt, "DELETED", new, old)

    def has_pending_work(self) -> bool:
        """Whether the collector or a namespace/CRD finalizer still has something to do."""
        return self.gc.has_pending_work()

    def collect_garbage(self) -> None:
        """One pass of the garbage collector and the namespace and CRD finalizers."""
        self.gc.collect()

    def delete_collection(
        self,
        rt: ResourceType,
        ns: str,
        match: Matcher | None,
        options: dict | None = None,
        *,
        dry_run: bool = False,
    ) -> builtins.list[Obj | dict]:
        out: builtins.list[Obj | dict] = []
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


def _spec_of(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _check_write_preconditions(rt: ResourceType, name: str, md: dict, old: dict) -> None:
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
