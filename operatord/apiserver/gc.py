"""The garbage collector and the namespace and CRD finalizers of the embedded API server,
doing what kube-controller-manager and the apiextensions server do on a real cluster.

Guarantees (each pass of `collect`, which the server runs `gc_delay` after a cause):
- Dependents whose owners (by uid, across all types) are all gone are deleted in the
  background; references to gone owners are removed while another owner lives; a dependent
  created with a dangling owner reference is deleted.
- An owner deleted in the foreground loses its `foregroundDeletion` finalizer once no dependent
  with `blockOwnerDeletion` remains; one deleted with Orphan has its dependents' references
  removed, then loses its `orphan` finalizer.
- A terminating namespace has its contents deleted, then is removed; a terminating CRD has its
  objects deleted, then loses its cleanup finalizer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import patch as P
from .errors import ApiError
from .objects import CRD_FINALIZER, CRD_KEY, NS_KEY, Key, Obj
from .resources import ResourceType, type_from_crd

if TYPE_CHECKING:
    from .store import Store


class Collector:
    """Owner-reference index and pending work of the collector and finalizers of one store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._dependents: dict[str, set[tuple[Key, str, str]]] = {}
        self._pending: set[str] = set()  # owner uids to look at
        self._terminating_ns: set[str] = set()
        self._terminating_crds: set[str] = set()

    def owner_pending(self, uid: str) -> None:
        """Look at the dependents of `uid` (and its own finalizers) on the next pass."""
        self._pending.add(uid)
        self.store.wakeup()

    def namespace_terminating(self, name: str) -> None:
        self._terminating_ns.add(name)

    def crd_terminating(self, name: str) -> None:
        self._terminating_crds.add(name)
        self.store.wakeup()

    def crd_gone(self, name: str) -> None:
        self._terminating_crds.discard(name)

    def index_owners(
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
            if self.store.locate(u) is None:  # dangling from the start: the collector decides
                self._pending.add(u)
                self.store.wakeup()

    def after_removal(self, rt: ResourceType, obj: Obj) -> None:
        md = obj["metadata"]
        pend = False
        if md["uid"] in self._dependents:
            self._pending.add(md["uid"])
            pend = True
        for r in md.get("ownerReferences") or []:
            self._pending.add(r.get("uid"))
            pend = True
        if md.get("namespace") in self._terminating_ns or self._terminating_crds:
            pend = True
        if pend:
            self.store.wakeup()

    def has_pending_work(self) -> bool:
        return bool(self._pending or self._terminating_ns or self._terminating_crds)

    def collect(self) -> None:
        """One pass of the garbage collector and the namespace and CRD finalizers.

        Dependents whose owners (by uid) are all gone are deleted in the background; dangling
        references to gone owners are removed while another owner lives; owners deleted in the
        foreground lose their `foregroundDeletion` finalizer once no dependent with
        blockOwnerDeletion remains; owners deleted with Orphan have their dependents'
        references removed, then lose their `orphan` finalizer."""
        pending, self._pending = self._pending, set()
        for uid in pending:
            self._collect_owner(uid)
        for ns in list(self._terminating_ns):
            self._finish_namespace(ns)
        for name in list(self._terminating_crds):
            self._finish_crd(name)

    def _deps(self, uid: str) -> list[tuple[ResourceType, Obj]]:
        out = []
        for key, ns, name in list(self._dependents.get(uid, ())):
            rt = self.store.registry.by_key(key)
            obj = self.store.find_key(key, ns, name)
            if rt is not None and obj is not None:
                out.append((rt, obj))
        return out

    def _collect_owner(self, uid: str) -> None:
        owner = self.store.by_uid(uid)
        if owner is None:
            for rt, dep in self._deps(uid):
                md = dep["metadata"]
                refs = md.get("ownerReferences") or []
                alive = [
                    r
                    for r in refs
                    if r.get("uid") != uid and self.store.by_uid(r.get("uid")) is not None
                ]
                if alive and len(alive) < len(refs):
                    new = P.deepcopy(dep)
                    new["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid]
                    self.store.write(
                        rt, dep, new, subresource="", manager="", version=None, dry_run=False
                    )
                elif not alive and not md.get("deletionTimestamp"):
                    self._gc_delete(rt, dep, "Background")
            return
        omd = owner["metadata"]
        if not omd.get("deletionTimestamp"):
            return
        fins = omd.get("finalizers") or []
        loc = self.store.locate(uid)  # not None: the owner exists
        ort = self.store.registry.by_key(loc) if loc is not None else None
        if "orphan" in fins:
            for rt, dep in self._deps(uid):
                refs = dep["metadata"].get("ownerReferences") or []
                new = P.deepcopy(dep)
                new["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid]
                if not new["metadata"]["ownerReferences"]:
                    new["metadata"].pop("ownerReferences")
                self.store.write(
                    rt, dep, new, subresource="", manager="", version=None, dry_run=False
                )
            self._drop_finalizer(ort, owner, "orphan")
        elif "foregroundDeletion" in fins:
            for rt, dep in self._deps(uid):
                md = dep["metadata"]
                if not md.get("deletionTimestamp"):
                    policy = "Foreground" if md["uid"] in self._dependents else "Background"
                    self._gc_delete(rt, dep, policy)
            blocking = any(_blocks(d, uid) for _, d in self._deps(uid))
            owner = self.store.by_uid(uid)
            if not blocking and owner is not None:
                self._drop_finalizer(ort, owner, "foregroundDeletion")
        elif self._dependents.get(uid):
            # owner deleted in the background but kept by finalizers: nothing to do yet
            pass

    def _gc_delete(self, rt: ResourceType, obj: Obj, policy: str) -> None:
        md = obj["metadata"]
        try:
            self.store.delete(
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
        self.store.write(rt, obj, new, subresource="", manager="", version=None, dry_run=False)

    def _finish_namespace(self, name: str) -> None:
        nsrt = self.store.registry.get(NS_KEY)
        nso = self.store.find(nsrt, "", name)
        if nso is None:
            self._terminating_ns.discard(name)
            return
        for rt in self.store.registry.types():
            if not rt.namespaced:
                continue
            for obj in self.store.iter_objects(rt.key, name):
                if not obj["metadata"].get("deletionTimestamp"):
                    self._gc_delete(rt, obj, "Background")
        if any(
            self.store.has_objects(rt.key, name)
            for rt in self.store.registry.types()
            if rt.namespaced
        ):
            return
        self._terminating_ns.discard(name)
        new = P.deepcopy(nso)
        new["spec"]["finalizers"] = []
        if nso["metadata"].get("finalizers"):
            self.store.commit(nsrt, "MODIFIED", new, nso)
        else:
            self.store.commit(nsrt, "DELETED", new, nso)

    def _finish_crd(self, name: str) -> None:
        crt = self.store.registry.get(CRD_KEY)
        crd = self.store.find(crt, "", name)
        if crd is None:
            self._terminating_crds.discard(name)
            return
        rt = type_from_crd(crd)
        srt = self.store.registry.by_key(rt.key)
        if srt is not None:
            for obj in self.store.iter_objects(rt.key):
                if not obj["metadata"].get("deletionTimestamp"):
                    self._gc_delete(srt, obj, "Background")
        if self.store.has_objects(rt.key):
            return
        self._terminating_crds.discard(name)
        self._drop_finalizer(crt, crd, CRD_FINALIZER)


def _blocks(dep: dict, owner_uid: str) -> bool:
    for r in dep["metadata"].get("ownerReferences") or []:
        if r.get("uid") == owner_uid and r.get("blockOwnerDeletion"):
            return True
    return False
