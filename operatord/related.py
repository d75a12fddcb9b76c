"""Related objects: the types a handler reads without owning them, and which parents select what.

A handler's ``related(parent)`` (run in a worker) returns a *selection*: objects of the
configured ``related`` types, by names, by label selector, or both (both: an object must have
one of the names and match the selector). The worker sends it back as plain data
(`Selection`); the leader keeps each parent's last selection in a `RelatedIndex`, caches the
related types with informers, and

- attaches to every task the cached objects its parent's selection matches, and
- maps a change of a related object to the parents whose selection matches it.

Guarantees of `RelatedIndex` (thread-safe; every method is atomic):

- Finding the parents of a changed object never scans all parents: name selections are found
  by a dict lookup on ``(apiVersion, kind, namespace, name)``; label selections are indexed by
  ``(apiVersion, kind, namespace)`` and only those are evaluated, against the changed object's
  labels (old and new version: a parent whose selector the object stops matching is affected
  too).
- An object no parent selects affects no parent.
- A parent's selection replaces its previous one entirely: after a re-point it no longer reacts
  to the objects it selected before. `forget` drops it.
- An object never goes back in time (as in `operatord.cache`): an event that is not newer
  than the cached version is ignored and affects nobody.

Selectors are parsed by `operatord.selectors.parse_selector`.

Cache modes (``related[].cache``, `operatord.config.RELATED_CACHE_MODES`), per type:

- ``full``: the leader's informer holds whole objects; tasks carry them as cached.
- ``metadata``: the informer lists and watches PartialObjectMetadata and keeps only
  `trim_metadata` of each object (a `MetaStub`: apiVersion, kind, namespace, name,
  resourceVersion, labels), which is all the index needs to find the parents a change
  affects: no other field (data, annotations, managedFields) is ever held by the leader. Tasks carry those stubs; the worker
  replaces them by the objects it GETs (`SelectedReader`) before the handler runs.
- ``none``: no informer and nothing in the index; the worker GETs (or, for a label
  selection, lists) the selected objects itself at each sync. A change to them causes no sync.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

import structlog

from operatord.cache import newer
from operatord.selectors import Labels, Matcher, Selection, SelectorError, parse_selector

if TYPE_CHECKING:
    from operatord.config import Config, RelatedType
    from operatord.informer import Informer
    from operatord.kube import Kube, Resource

log = structlog.get_logger("operatord.related")

TypeKey = tuple[str, str]


# ---- the index ---------------------------------------------------------------------------------


def _meta(obj: dict) -> dict:
    return obj.get("metadata") or {}


class MetaStub(NamedTuple):
    """What the leader keeps of an object of a ``metadata`` related type (`trim_metadata`):
    a tuple, about a third of the smallest dict form, with the type and namespace strings
    shared between objects. `to_object` is its wire form for tasks."""

    api_version: str
    kind: str
    namespace: str  # "" for cluster-scoped objects
    name: str
    resource_version: int | str | None  # an int when it is one (half the memory of its text)
    labels: Labels | None  # None: no labels

    def to_object(self) -> dict:
        meta: dict[str, Any] = {"name": self.name, "labels": dict(self.labels or {})}
        if self.namespace:
            meta["namespace"] = self.namespace
        if self.resource_version is not None:
            meta["resourceVersion"] = str(self.resource_version)
        return {"apiVersion": self.api_version, "kind": self.kind, "metadata": meta}


Stored = dict | MetaStub  # what the index holds per object: a whole object, or a stub
_Fields = tuple[str, str, str, str, "int | str | None", Labels]


def _fields(obj: Stored) -> _Fields:
    """(apiVersion, kind, namespace or "", name, resourceVersion, labels) of either form."""
    if isinstance(obj, MetaStub):
        return (obj[0], obj[1], obj[2], obj[3], obj[4], obj[5] or _NO_LABELS)
    meta = obj.get("metadata") or {}
    return (
        obj.get("apiVersion", ""),
        obj.get("kind", ""),
        meta.get("namespace") or "",
        meta.get("name", ""),
        meta.get("resourceVersion"),
        meta.get("labels") or _NO_LABELS,
    )


_NO_LABELS: Labels = {}


def trim_metadata(obj: dict) -> MetaStub:
    """What the leader keeps of an object of a ``metadata`` related type: its type, name,
    namespace, labels and resourceVersion (the index's needs), nothing else."""
    meta = _meta(obj)
    rv = meta.get("resourceVersion")
    return MetaStub(
        sys.intern(obj.get("apiVersion", "")),
        sys.intern(obj.get("kind", "")),
        sys.intern(meta.get("namespace") or ""),
        meta.get("name", ""),
        int(rv) if isinstance(rv, str) and rv.isdigit() else rv,
        meta.get("labels") or None,
    )


class _Selector:
    """One resolved selector: namespace None means every namespace."""

    __slots__ = ("type_key", "namespace", "names", "matcher")

    def __init__(
        self,
        type_key: TypeKey,
        namespace: str | None,
        names: tuple[str, ...],
        matcher: Matcher | None,
    ) -> None:
        self.type_key = type_key
        self.namespace: str | None = namespace
        self.names: tuple[str, ...] = names
        self.matcher = matcher  # None: no label selector


class RelatedIndex:
    """Cached related objects and, per parent, the selection its last sync returned."""

    def __init__(self, namespaced: dict[TypeKey, bool] | None = None):
        self._lock = threading.Lock()
        # (apiVersion, kind) -> namespaced? (from discovery); unknown types select nothing.
        self.namespaced: dict[TypeKey, bool] = dict(namespaced or {})
        # (apiVersion, kind) -> namespace ("" for cluster-scoped) -> name -> object or stub
        self._objects: dict[TypeKey, dict[str, dict[str, Stored]]] = {}
        self._selections: dict[str, tuple[Selection, list[_Selector]]] = {}
        # (apiVersion, kind, namespace | None, name) -> {uid: selectors of that uid}
        self._by_name: dict[tuple, dict[str, list[_Selector]]] = {}
        # (apiVersion, kind, namespace | None) -> {uid: label-only selectors of that uid}
        self._by_label: dict[tuple, dict[str, list[_Selector]]] = {}

    # ---- selections ------------------------------------------------------------------------

    def _resolve(self, wire: Selection, parent: dict) -> list[_Selector]:
        parent_ns = _meta(parent).get("namespace") or None
        out = []
        for api_version, kind, names, namespace, label_selector in wire:
            key = (api_version, kind)
            namespaced = self.namespaced.get(key)
            if namespaced is None:
                continue  # not a configured related type: the worker refuses those
            if not namespaced:
                ns: str | None = ""
            elif namespace is not None:
                ns = namespace
            else:
                ns = parent_ns  # None for a cluster-scoped parent: every namespace
            try:
                matcher = None if label_selector is None else parse_selector(label_selector)
            except SelectorError:
                continue  # the worker refuses those too
            out.append(_Selector(key, ns, tuple(names), matcher))
        return out

    def selection(self, uid: str) -> Selection | None:
        """The selection last recorded for ``uid`` (None: never recorded)."""
        with self._lock:
            entry = self._selections.get(uid)
            return entry[0] if entry else None

    def set_selection(self, uid: str, wire: Selection, parent: dict) -> None:
        """Record ``uid``'s selection (replacing any previous one); ``parent`` gives the
        default namespace."""
        wire = tuple(wire)
        with self._lock:
            current = self._selections.get(uid)
            if current is not None and current[0] == wire:
                return
            self._unindex_locked(uid)
            if not wire:
                return
            selectors = self._resolve(wire, parent)
            self._selections[uid] = (wire, selectors)
            for sel in selectors:
                if sel.names:
                    for name in sel.names:
                        key = (*sel.type_key, sel.namespace, name)
                        self._by_name.setdefault(key, {}).setdefault(uid, []).append(sel)
                else:
                    label_key = (*sel.type_key, sel.namespace)
                    self._by_label.setdefault(label_key, {}).setdefault(uid, []).append(sel)

    def forget(self, uid: str) -> None:
        """Drop ``uid``'s selection (the parent is gone)."""
        with self._lock:
            self._unindex_locked(uid)

    def _unindex_locked(self, uid: str) -> None:
        entry = self._selections.pop(uid, None)
        if entry is None:
            return
        for sel in entry[1]:
            keys: list[tuple[str | None, ...]]
            index: dict[Any, dict[str, list[_Selector]]]
            if sel.names:
                keys = [(*sel.type_key, sel.namespace, n) for n in sel.names]
                index = self._by_name
            else:
                keys = [(*sel.type_key, sel.namespace)]
                index = self._by_label
            for key in keys:
                bucket = index.get(key)
                if bucket is not None:
                    bucket.pop(uid, None)
                    if not bucket:
                        del index[key]

    def selected(self, uid: str) -> list[dict]:
        """The cached objects ``uid``'s selection matches, each once, in selection order
        (`MetaStub` objects in their wire form)."""
        with self._lock:
            entry = self._selections.get(uid)
            if entry is None:
                return []
            out: dict[int, Stored] = {}
            for sel in entry[1]:
                by_ns = self._objects.get(sel.type_key)
                if not by_ns:
                    continue
                spaces: Iterable[dict[str, Stored]]
                if sel.namespace is not None:
                    spaces = [by_ns.get(sel.namespace) or {}]
                else:
                    spaces = list(by_ns.values())
                for objects in spaces:
                    candidates: Iterable[Stored]
                    if sel.names:
                        candidates = [objects[n] for n in sel.names if n in objects]
                    else:
                        candidates = objects.values()
                    for obj in candidates:
                        if sel.matcher is None or sel.matcher(_fields(obj)[5]):
                            out.setdefault(id(obj), obj)
            return [o.to_object() if isinstance(o, MetaStub) else o for o in out.values()]

    def _affected_locked(self, obj: Stored | None) -> set[str]:
        if obj is None:
            return set()
        api_version, kind, ns, name, _, labels = _fields(obj)
        out: set[str] = set()
        for key in ((api_version, kind, ns, name), (api_version, kind, None, name)):
            for uid, selectors in self._by_name.get(key, {}).items():
                if any(s.matcher is None or s.matcher(labels) for s in selectors):
                    out.add(uid)
        for label_key in ((api_version, kind, ns), (api_version, kind, None)):
            for uid, selectors in self._by_label.get(label_key, {}).items():
                if uid not in out and any(
                    s.matcher is None or s.matcher(labels) for s in selectors
                ):
                    out.add(uid)
        return out

    # ---- objects ----------------------------------------------------------------------------

    def upsert(self, obj: Stored) -> set[str]:
        """Store a related object (or its `MetaStub`); returns the parents whose selection
        matches it (before or after the change). An object that is not newer than the cached
        one affects nobody."""
        api_version, kind, ns, name, rv, _ = _fields(obj)
        with self._lock:
            space = self._objects.setdefault((api_version, kind), {}).setdefault(ns, {})
            old = space.get(name)
            if old is not None and not newer(rv, _fields(old)[4]):
                return set()
            space[name] = obj
            return self._affected_locked(old) | self._affected_locked(obj)

    def delete(self, obj: Stored) -> set[str]:
        """Forget a related object; returns the parents whose selection matched it."""
        api_version, kind, ns, name, _, _ = _fields(obj)
        with self._lock:
            spaces = self._objects.get((api_version, kind), {})
            old = spaces.get(ns, {}).pop(name, None)
            if ns in spaces and not spaces[ns]:
                del spaces[ns]
            return self._affected_locked(old) | self._affected_locked(obj)

    def replace(
        self, api_version: str, kind: str, objs: Iterable[Stored], namespace: str | None = None
    ) -> set[str]:
        """Make the cached objects of one type (in ``namespace``; None: in every namespace)
        exactly ``objs`` (a relist); returns the parents affected by what was added, changed
        or removed."""
        fresh: dict[str, dict[str, Stored]] = {}
        for obj in objs:
            f = _fields(obj)
            fresh.setdefault(f[2], {})[f[3]] = obj
        with self._lock:
            old = self._objects.get((api_version, kind), {})
            if namespace is not None:
                old = {namespace: old[namespace]} if namespace in old else {}
            affected: set[str] = set()
            for ns, objects in old.items():
                for name, cur in objects.items():
                    new = fresh.get(ns, {}).get(name)
                    if new is None:
                        affected |= self._affected_locked(cur)
                    elif _fields(new)[4] != _fields(cur)[4]:
                        affected |= self._affected_locked(cur) | self._affected_locked(new)
            for ns, objects in fresh.items():
                for name, new in objects.items():
                    if name not in old.get(ns, {}):
                        affected |= self._affected_locked(new)
            if namespace is None:
                self._objects[(api_version, kind)] = fresh
            else:
                spaces = self._objects.setdefault((api_version, kind), {})
                spaces.pop(namespace, None)
                if fresh.get(namespace):
                    spaces[namespace] = fresh[namespace]
            return affected

    def count(self, api_version: str, kind: str) -> int:
        with self._lock:
            return sum(len(o) for o in self._objects.get((api_version, kind), {}).values())

    def selection_count(self) -> int:
        with self._lock:
            return len(self._selections)


# ---- the leader's side -------------------------------------------------------------------------


class RelatedTypes:
    """The leader's related machinery: informers for the ``related`` types of every controller
    feeding one `RelatedIndex` (a type two controllers name is cached once), and a callback
    that enqueues the parents a change affects.

    ``enqueue(uids)`` is called from informer threads with the parents whose selection matches
    an object that was created, changed or deleted (or changed by a relist).
    """

    def __init__(self, config: Config, enqueue: Callable[[set[str]], None]) -> None:
        self.config = config
        self.enqueue = enqueue
        self.index = RelatedIndex()
        types: dict[tuple[str, str], RelatedType] = {}
        for ctl in config.controllers:
            for rt in ctl.related:
                types.setdefault(rt.key, rt)
        self.types: list[RelatedType] = list(types.values())
        self.resources: list[Resource] = []  # once resolved
        self.cached = any(rt.cache != "none" for rt in self.types)

    def resolve(self, resolve: Callable[[str, str], Resource]) -> None:
        """Resolve every related type through discovery (``resolve(apiVersion, kind)``)."""
        self.resources = [resolve(r.api_version, r.kind) for r in self.types]
        self.index.namespaced.update(
            {(res.api_version, res.kind): res.namespaced for res in self.resources}
        )

    def informers(
        self,
        kube: Kube,
        namespaces: Iterable[str | None] = (None,),
        wrap: Callable[[Any, Any], tuple[Any, Any]] | None = None,
        **informer_args: Any,
    ) -> list[Informer]:
        """Informers for every related type cached by the leader (``cache`` not ``none``),
        each limited to its ``labelSelector``: a namespaced type once per namespace of
        ``namespaces`` (None: all namespaces), a cluster-scoped type once. ``metadata`` types
        watch PartialObjectMetadata and keep `trim_metadata` of each object; ``full`` types
        keep `operatord.cache.compact` objects. ``wrap(on_list, on_event)`` may filter the
        callbacks (the daemon's namespace scope, its replica shards)."""
        from operatord.cache import compact
        from operatord.informer import Informer

        spaces = list(namespaces)
        out = []
        for rt, res in zip(self.types, self.resources, strict=True):
            if rt.cache == "none":
                continue
            metadata = rt.cache == "metadata"
            for ns in spaces if res.namespaced else [None]:
                on_list: Any = partial(self._on_list, res, ns)
                on_event: Any = self._on_event
                if wrap is not None:
                    on_list, on_event = wrap(on_list, on_event)
                out.append(
                    Informer(
                        kube,
                        res,
                        namespace=ns,
                        label_selector=rt.label_selector or None,
                        on_list=on_list,
                        on_event=on_event,
                        metadata_only=metadata,
                        transform=trim_metadata if metadata else compact,
                        **informer_args,
                    )
                )
        return out

    def _on_list(self, res: Resource, namespace: str | None, items: list[dict]) -> None:
        affected = self.index.replace(res.api_version, res.kind, items, namespace)
        if affected:
            self.enqueue(affected)

    def _on_event(self, etype: str, obj: dict) -> None:
        if etype == "DELETED":
            affected = self.index.delete(obj)
        else:
            affected = self.index.upsert(obj)
        if affected:
            self.enqueue(affected)

    def task_fields(self, uid: str) -> dict:
        """The `SyncTask` fields for ``uid``: its selected objects and its recorded selection."""
        if not self.types:
            return {}
        related = self.index.selected(uid) if self.cached else []
        return {"related": related, "selection": self.index.selection(uid)}

    def record(self, uid: str, selection: Selection | None, parent: dict) -> None:
        """Record the selection a result carried (None: the result carried none)."""
        if selection is not None:
            self.index.set_selection(uid, selection, parent)

    def forget(self, uid: str) -> None:
        self.index.forget(uid)

    def counts(self) -> list[tuple[Resource, int]]:
        """(resource, cached objects) per related type the leader caches, for
        ``operatord_cached_objects``."""
        return [
            (res, self.index.count(res.api_version, res.kind))
            for rt, res in zip(self.types, self.resources, strict=True)
            if rt.cache != "none"
        ]


# ---- the worker's side -------------------------------------------------------------------------


class _Wanted:
    """One entry of a selection as the worker resolves it."""

    __slots__ = ("res", "namespace", "names", "selector", "matcher", "type_matcher")

    def __init__(
        self,
        res: Resource,
        namespace: str | None,
        names: tuple[str, ...],
        selector: str | None,
        type_matcher: Matcher | None,
    ) -> None:
        self.res = res
        self.namespace = namespace  # None: every namespace (or a cluster-scoped type)
        self.names = names
        self.selector = selector  # the entry's label selector (None: none)
        self.matcher = None if selector is None else parse_selector(selector)
        self.type_matcher = type_matcher  # the type's configured labelSelector

    def matches(self, obj: dict) -> bool:
        meta = _meta(obj)
        if (obj.get("apiVersion"), obj.get("kind")) != (self.res.api_version, self.res.kind):
            return False
        if self.res.namespaced and self.namespace is not None:
            if (meta.get("namespace") or "") != self.namespace:
                return False
        if self.names and meta.get("name") not in self.names:
            return False
        labels = meta.get("labels") or {}
        return (self.matcher is None or self.matcher(labels)) and (
            self.type_matcher is None or self.type_matcher(labels)
        )


class SelectedReader:
    """The worker's side of ``metadata`` and ``none`` related types: the objects a parent
    selected, read from the API server through the worker's own connection at sync time.

    Guarantees of `read`:

    - Objects of ``full`` types are the task's cached objects, unchanged.
    - Each object of a ``metadata`` type is re-read by name; one that is gone, or whose labels
      no longer match the selection (or the type's ``labelSelector``), is absent.
    - Objects of ``none`` types are read now: each named object by GET (in every namespace, for
      a cluster-scoped parent, by a list with a ``metadata.name`` field selector), a label
      selection by a list with that selector (and the type's ``labelSelector``).
    - Every object appears once, without ``metadata.managedFields``; ``full`` and ``metadata``
      objects first (in the task's order), then ``none`` objects in selection order.
    - API errors other than 404 propagate (the sync fails and is retried like any API error).
    """

    def __init__(self, kube: Kube, types: Iterable[RelatedType]) -> None:
        self.kube = kube
        self.types = {rt.key: rt for rt in types}
        self.needed = any(rt.cache != "full" for rt in self.types.values())

    def _wanted(self, selection: Selection, parent: dict) -> list[tuple[RelatedType, _Wanted]]:
        parent_ns = _meta(parent).get("namespace") or None
        out = []
        for api_version, kind, names, namespace, label_selector in selection:
            rt = self.types.get((api_version, kind))
            if rt is None or rt.cache == "full":
                continue
            res = self.kube.resource(api_version, kind)
            ns = (namespace if namespace is not None else parent_ns) if res.namespaced else None
            type_matcher = parse_selector(rt.label_selector) if rt.label_selector else None
            out.append((rt, _Wanted(res, ns, tuple(names), label_selector, type_matcher)))
        return out

    def read(self, selection: Selection, parent: dict, cached: Iterable[dict]) -> list[dict]:
        """``request.related`` of a parent whose selection is ``selection`` (see the class)."""
        from operatord.cache import slim

        wanted = self._wanted(selection, parent)
        out: dict[tuple[str, str, str, str], dict] = {}

        def keep(obj: dict) -> None:
            meta = _meta(obj)
            key = (
                obj.get("apiVersion", ""),
                obj.get("kind", ""),
                meta.get("namespace") or "",
                meta.get("name", ""),
            )
            out.setdefault(key, slim(obj))

        for obj in cached:
            rt = self.types.get((obj.get("apiVersion", ""), obj.get("kind", "")))
            if rt is None or rt.cache != "metadata":
                keep(obj)
                continue
            meta = _meta(obj)
            res = self.kube.resource(rt.api_version, rt.kind)
            fresh = self._get(res, meta.get("name", ""), meta.get("namespace") or None)
            if fresh is not None and any(w.matches(fresh) for r, w in wanted if r.key == rt.key):
                keep(fresh)
        for rt, w in wanted:
            if rt.cache != "none":
                continue
            for obj in self._read_now(rt, w):
                if w.matches(obj):
                    keep(obj)
        return list(out.values())

    def _get(self, res: Resource, name: str, namespace: str | None) -> dict | None:
        from operatord.kube import is_not_found

        try:
            obj = self.kube.get(res, name, namespace)
        except Exception as exc:
            if is_not_found(exc):
                return None
            raise
        obj.setdefault("apiVersion", res.api_version)
        obj.setdefault("kind", res.kind)
        return obj

    def _read_now(self, rt: RelatedType, w: _Wanted) -> list[dict]:
        """The candidates of one ``none`` selection entry, straight from the API server."""
        all_namespaces = w.res.namespaced and w.namespace is None
        if w.names and not all_namespaces:
            found = (self._get(w.res, name, w.namespace) for name in w.names)
            return [obj for obj in found if obj is not None]
        if w.names:
            out = []
            for name in w.names:
                items, _ = self.kube.list(
                    w.res,
                    None,
                    label_selector=rt.label_selector or None,
                    field_selector=f"metadata.name={name}",
                )
                out.extend(items)
            return out
        selector = ",".join(s for s in (rt.label_selector, w.selector) if s)
        items, _ = self.kube.list(w.res, w.namespace, label_selector=selector or None)
        return items
