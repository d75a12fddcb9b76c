"""The leader's view of the cluster: parents by uid, children indexed by their parent's uid.

Guarantees:
- Thread-safe; every method is atomic.
- An object never goes back in time: an upsert whose resourceVersion is not newer than the
  one cached (compared as integers when both are integers) is ignored and reported as
  "no change". This is what lets workers feed their own writes back in (so the next sync sees
  them) without the later, identical watch event causing another sync.
- A child deleted by a worker stays deleted (a tombstone remembers its resourceVersion) until
  a newer version of it is seen.
- Children are attached to a parent by the ``operatord.io/parent-uid`` label only.
- One cache serves every controller of a daemon: parents of several types live side by side
  (uids are unique across types), and a list replaces only the part of the cache it covers
  (one parent or child type, in one namespace when the type is watched per namespace).
- Objects are stored `pack`\\ ed: a `Packed` record of what the leader looks at without the
  object (key, uid, owner, resourceVersion, deletionTimestamp) and the object itself as
  compact JSON compressed against a dictionary of its type (about 100 bytes for an operatord
  parent or child, from 900 and 550 bytes of JSON), without ``metadata.managedFields`` (the
  field-ownership bookkeeping of server-side apply, as controller-runtime's
  ``TransformStripManagedFields`` drops it). The stored bytes never change; every read
  (`parent`, `snapshot`) decodes a fresh copy, equal to the object passed in except for
  managedFields, which the caller owns.
- `has_parent`, `parent_type`, `versions`, `deletions`, `counts` and `parent_counts` decode
  nothing: they read the records and the indexes kept as objects are stored and removed.
- `deletions` is O(parents being deleted), not O(parents).
"""

from __future__ import annotations

import datetime
import json
import sys
import threading
import zlib
from collections.abc import Iterable
from typing import Any, NamedTuple

from operatord.config import PARENT_UID_LABEL

ChildKey = tuple[str, str, str, str]  # (apiVersion, kind, namespace, name)


def _meta(obj: dict) -> dict:
    return obj.get("metadata") or {}


def slim(obj: dict) -> dict:
    """``obj`` without ``metadata.managedFields`` (removed in place); returns ``obj``."""
    meta = obj.get("metadata")
    if meta and "managedFields" in meta:
        del meta["managedFields"]
    return obj


SHARED_STRING_MAX = 32  # longer strings (uids are 36) are rarely equal between objects

_intern = sys.intern


def _shared(node: Any) -> Any:
    cls = node.__class__
    if cls is dict:
        return {_intern(k): _shared(v) for k, v in node.items()}
    if cls is list:
        return [_shared(v) for v in node]
    if cls is str and len(node) <= SHARED_STRING_MAX:
        return _intern(node)
    return node


def compact(obj: dict) -> dict:
    """A copy of ``obj`` without ``metadata.managedFields``, its keys and short strings
    interned (shared with every other object compacted in this process); ``obj`` itself loses
    its managedFields only. About 40% less memory for an operatord parent, 25% for a child,
    than the same object decoded by ``json.loads``. (The `Cache` stores `Packed` objects;
    this is the form of the related objects a ``cache: full`` type keeps.)

    An object that is compact already (its first key is the interned string, which no JSON
    decode or unpickling produces) is returned as it is, so compacting twice costs nothing."""
    first = next(iter(obj), None)
    if first is not None and first is _intern(first):
        return slim(obj)
    return _shared(slim(obj))


def child_key(obj: dict) -> ChildKey:
    m = _meta(obj)
    return (
        obj.get("apiVersion", ""),
        obj.get("kind", ""),
        m.get("namespace", ""),
        m.get("name", ""),
    )


def deletion_time(obj: dict) -> float | None:
    """``metadata.deletionTimestamp`` as seconds since the epoch (None: not being deleted; an
    unparsable timestamp counts as now)."""
    stamp = _meta(obj).get("deletionTimestamp")
    if not stamp:
        return None
    try:
        return datetime.datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return datetime.datetime.now(datetime.UTC).timestamp()


def newer(candidate: str | int | None, current: str | int | None) -> bool:
    """True when resourceVersion ``candidate`` is newer than ``current`` (unknown counts as newer)."""
    if not current:
        return True
    if not candidate:
        return False
    try:
        return int(candidate) > int(current)
    except ValueError:
        return candidate != current


# ---- the stored form --------------------------------------------------------------------------

# zlib settings of the stored bytes: raw deflate (no header or checksum), level 3 and memLevel 4
# (as small as level 9 within 5% for these objects, at half its CPU: about 5 us to compress and
# 2 us to decompress an operatord parent).
_WBITS = -15
_LEVEL = 3
_MEM_LEVEL = 4
# A type's dictionary: at most this many bytes (each KiB costs about 1.5 us per compression),
# grown at most _VERSIONS - 1 times by an object that compressed worse than 1/_POOR.
_DICT_MAX = 4 * 1024
_VERSIONS = 8
_POOR = 4

_encode = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode
_decode = json.JSONDecoder().decode


class Codec:
    """Compression of one type's objects against a dictionary: the compact JSON of objects of
    that type this process stored. Objects of one type share most of their bytes (keys,
    apiVersion, kind, namespace, labels, condition types, timestamps of the same minute), so
    each stored object is little more than what makes it different. A codec never changes
    (the objects packed with it refer to it); a type gets a new one, its dictionary grown by
    an object the current one compressed poorly (e.g. the first stored object of a type was
    new, without the status later versions have), a bounded number of times."""

    __slots__ = ("version", "zdict")

    def __init__(self, zdict: bytes, version: int = 1) -> None:
        self.zdict = zdict[-_DICT_MAX:]
        self.version = version

    def pack(self, data: bytes) -> bytes:
        c = zlib.compressobj(
            _LEVEL, zlib.DEFLATED, _WBITS, _MEM_LEVEL, zlib.Z_DEFAULT_STRATEGY, self.zdict
        )
        return c.compress(data) + c.flush()

    def unpack(self, blob: bytes) -> bytes:
        d = zlib.decompressobj(_WBITS, self.zdict)
        return d.decompress(blob) + d.flush()


_codecs: dict[tuple[Any, Any], Codec] = {}  # the current codec of each type
_codecs_lock = threading.Lock()


def _compressed(api_version: Any, kind: Any, data: bytes) -> tuple[Codec, bytes]:
    """``data`` (an object of this type) compressed by the type's current codec, which is
    made from ``data`` when the type has none, or grown by it when it compresses poorly."""
    t = (api_version, kind)
    codec = _codecs.get(t)
    if codec is None:
        with _codecs_lock:
            codec = _codecs.setdefault(t, Codec(data))
    blob = codec.pack(data)
    if len(blob) * _POOR > len(data) and codec.version < _VERSIONS:
        with _codecs_lock:
            current = _codecs[t]
            if current is codec:  # not grown meanwhile by another thread
                current = _codecs[t] = Codec(codec.zdict + data, codec.version + 1)
        codec, blob = current, current.pack(data)
    return codec, blob


def _shared_str(value: Any) -> Any:
    return _intern(value) if value.__class__ is str else value


def _version(value: Any) -> str | int:
    """A resourceVersion as stored: an int when it is a canonical decimal (28 bytes instead
    of a string's 50 and more), else the string ("" when unknown)."""
    if value.__class__ is str and value.isdigit() and value.isascii() and value[0] != "0":
        return int(value)
    return value or ""


def version_str(value: str | int) -> str:
    """The resourceVersion string of a stored version (`_version` undone)."""
    return str(value) if value.__class__ is int else value  # type: ignore[return-value]


class Packed(NamedTuple):
    """One cached object: what the cache reads without decoding, and the object itself.

    Build one with `pack` (or `Cache.pack`); `Cache` methods take it wherever they take an
    object, and ``unpack`` returns the object (a fresh dict on every call)."""

    key: ChildKey  # (apiVersion, kind, namespace, name), each string shared
    uid: str  # metadata.uid (shared) or ""
    owner: str | None  # the parent-uid label (shared), None without it
    rv: str | int  # metadata.resourceVersion (`_version`)
    deleting: float | None  # metadata.deletionTimestamp, seconds since the epoch
    blob: bytes  # the object without managedFields, compact JSON compressed by ``codec``
    codec: Codec

    def unpack(self) -> dict:
        obj: dict = _decode(self.codec.unpack(self.blob).decode())
        return obj

    @property
    def namespace(self) -> str:
        return self.key[2]


def _without_managed_fields(obj: dict) -> dict:
    meta = obj.get("metadata")
    if meta and "managedFields" in meta:
        return {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
    return obj


def _packed(
    obj: dict, key: ChildKey, rv: str | int, owner: str | None, keep_uid: bool = True
) -> Packed:
    data = _encode(_without_managed_fields(obj)).encode()
    codec, blob = _compressed(key[0], key[1], data)
    uid = _meta(obj).get("uid") if keep_uid else None
    return Packed(key, _shared_str(uid) if uid else "", owner, rv, deletion_time(obj), blob, codec)


def _head(obj: dict, owner_label: str) -> tuple[ChildKey, str | int, str | None]:
    meta = _meta(obj)
    key = (
        _shared_str(obj.get("apiVersion", "")),
        _shared_str(obj.get("kind", "")),
        _shared_str(meta.get("namespace", "")),
        _shared_str(meta.get("name", "")),
    )
    owner = (meta.get("labels") or {}).get(owner_label)
    return key, _version(meta.get("resourceVersion")), _shared_str(owner)


def pack(
    obj: dict | Packed, owner_label: str = PARENT_UID_LABEL, *, keep_uid: bool = True
) -> Packed:
    """``obj`` in its stored form (``obj`` is not changed; a `Packed` is returned as it is).
    ``owner_label``: the label that names an object's parent (the `Cache`'s); without
    ``keep_uid`` the record's uid is "" (a child's, which the cache never looks up: 85 bytes
    less per child; the object itself keeps it)."""
    if isinstance(obj, Packed):
        return obj
    return _packed(obj, *_head(obj, owner_label), keep_uid)


# A parent's children: the child itself when it is the only one, a tuple while they are few
# (64 bytes for two, against 224 for a dict), a dict by key beyond that.
_Bucket = Packed | tuple[Packed, ...] | dict[ChildKey, Packed]
_TUPLE_MAX = 16


def _bucket_with(bucket: _Bucket | None, p: Packed) -> _Bucket:
    """``bucket`` with ``p`` in it (in place of the same key)."""
    if bucket is None:
        return p
    if isinstance(bucket, Packed):
        return p if bucket.key == p.key else (bucket, p)
    if isinstance(bucket, dict):
        bucket[p.key] = p
        return bucket
    kids: tuple[Packed, ...] = bucket
    key = p.key
    for i, q in enumerate(kids):
        if q.key == key:
            return kids[:i] + (p,) + kids[i + 1 :]
    if len(kids) < _TUPLE_MAX:
        return kids + (p,)
    out = {q.key: q for q in kids}
    out[key] = p
    return out


def _bucket_without(bucket: _Bucket, key: ChildKey) -> _Bucket | None:
    """``bucket`` without ``key`` (None when nothing is left)."""
    if isinstance(bucket, Packed):
        return None if bucket.key == key else bucket
    if isinstance(bucket, dict):
        bucket.pop(key, None)
        return bucket or None
    kids: tuple[Packed, ...] = tuple(q for q in bucket if q.key != key)
    if len(kids) == 1:
        return kids[0]
    return kids or None


def _bucket_items(bucket: _Bucket | None) -> Iterable[Packed]:
    if bucket is None:
        return ()
    if isinstance(bucket, Packed):
        return (bucket,)
    if isinstance(bucket, dict):
        return bucket.values()
    return bucket


class Cache:
    def __init__(self, parent_uid_label: str = PARENT_UID_LABEL):
        self.label = parent_uid_label
        self._lock = threading.Lock()
        self._parents: dict[str, Packed] = {}
        self._parent_types: dict[tuple[str, str], int] = {}  # (apiVersion, kind) -> parents
        self._children: dict[str, _Bucket] = {}  # parent uid -> its children
        self._child: dict[ChildKey, Packed] = {}  # every child with a parent-uid label
        self._tombstones: dict[ChildKey, str | int] = {}
        self._type_counts: dict[str, int] = {}  # "apiVersion/kind" -> children cached
        self._deleting: dict[str, float] = {}  # parent uid -> its deletionTimestamp (epoch)

    def pack(self, obj: dict | Packed) -> Packed:
        """``obj`` in the form this cache stores (the informers' ``transform``: a listed
        object is packed as it arrives, so a full list never holds decoded objects)."""
        return pack(obj, self.label)

    def pack_child(self, obj: dict | Packed) -> Packed:
        """``obj`` in the form this cache stores a child (without the record's uid)."""
        return pack(obj, self.label, keep_uid=False)

    def _count_locked(self, key: ChildKey, delta: int) -> None:
        name = f"{key[0]}/{key[1]}"
        self._type_counts[name] = self._type_counts.get(name, 0) + delta

    # ---- parents --------------------------------------------------------------------------

    def upsert_parent(self, obj: dict | Packed, *, only_existing: bool = False) -> bool:
        """Store a parent unless the cached one is as new; with ``only_existing`` a parent that
        is not cached (e.g. deleted meanwhile) is not brought back."""
        if isinstance(obj, Packed):
            uid, rv = obj.uid, obj.rv
        else:
            uid = _meta(obj).get("uid") or ""
            rv = _version(_meta(obj).get("resourceVersion"))
        if not uid:
            return False
        with self._lock:
            cur = self._parents.get(uid)
            if cur is None and only_existing:
                return False
            if cur is not None and not newer(rv, cur.rv):
                return False  # an echo of what is cached: not even packed
            p = obj if isinstance(obj, Packed) else _packed(obj, *_head(obj, self.label))
            if cur is None:
                self._count_parent_locked(p, 1)
            self._parents[p.uid] = p
            self._index_deletion_locked(p)
            return True

    def _count_parent_locked(self, p: Packed, delta: int) -> None:
        key = (p.key[0], p.key[1])
        self._parent_types[key] = self._parent_types.get(key, 0) + delta

    def _index_deletion_locked(self, p: Packed) -> None:
        if p.deleting is None:
            self._deleting.pop(p.uid, None)
        else:
            self._deleting[p.uid] = p.deleting

    def delete_parent(self, obj: dict | Packed) -> bool:
        uid = obj.uid if isinstance(obj, Packed) else _meta(obj).get("uid") or ""
        with self._lock:
            gone = self._parents.pop(uid, None)
            if gone is not None:
                self._count_parent_locked(gone, -1)
            self._deleting.pop(uid, None)
            self._drop_children_locked(uid)
            return gone is not None

    def _drop_children_locked(self, uid: str) -> None:
        for p in _bucket_items(self._children.pop(uid, None)):
            if self._child.pop(p.key, None) is not None:
                self._count_locked(p.key, -1)

    def replace_parents(
        self,
        objs: Iterable[dict | Packed],
        *,
        api_version: str | None = None,
        kind: str | None = None,
        namespace: str | None = None,
    ) -> tuple[set[str], set[str]]:
        """Make the parents exactly ``objs``; returns (changed or new uids, removed uids).

        With ``api_version`` and ``kind`` (and ``namespace``), only the cached parents of that
        type (in that namespace) are replaced; the others stay."""
        fresh = {p.uid: p for p in map(self.pack, objs) if p.uid}
        with self._lock:
            if kind is None:
                covered = set(self._parents)
            else:
                covered = {
                    uid
                    for uid, p in self._parents.items()
                    if p.key[1] == kind
                    and p.key[0] == api_version
                    and (namespace is None or p.key[2] == namespace)
                }
            removed = covered - set(fresh)
            changed = set()
            for uid, p in fresh.items():
                cur = self._parents.get(uid)
                if cur is None or cur.rv != p.rv:
                    changed.add(uid)
            if kind is None:
                self._parents = fresh
                self._deleting = {}
                self._parent_types = {}
                for p in fresh.values():
                    self._count_parent_locked(p, 1)
            else:
                for uid in removed:
                    self._count_parent_locked(self._parents.pop(uid), -1)
                    self._deleting.pop(uid, None)
                for uid, p in fresh.items():
                    if uid not in self._parents:
                        self._count_parent_locked(p, 1)
                self._parents.update(fresh)
            for p in fresh.values():
                self._index_deletion_locked(p)
            for uid in removed:
                self._drop_children_locked(uid)
            return changed, removed

    def parent(self, uid: str) -> dict | None:
        """The cached parent (a fresh copy, decoded), None when not cached."""
        with self._lock:
            p = self._parents.get(uid)
        return p.unpack() if p is not None else None

    def has_parent(self, uid: str) -> bool:
        with self._lock:
            return uid in self._parents

    def parent_type(self, uid: str) -> tuple[str, str] | None:
        """``(apiVersion, kind)`` of a cached parent (None: not cached)."""
        with self._lock:
            p = self._parents.get(uid)
        return (p.key[0], p.key[1]) if p is not None else None

    def parent_name(self, uid: str) -> tuple[str, str] | None:
        """``(namespace, name)`` of a cached parent (None: not cached)."""
        with self._lock:
            p = self._parents.get(uid)
        return (p.key[2], p.key[3]) if p is not None else None

    def parent_uids(self) -> list[str]:
        with self._lock:
            return list(self._parents)

    def parent_count(self) -> int:
        with self._lock:
            return len(self._parents)

    def deletions(self) -> list[float]:
        """The deletionTimestamps (seconds since the epoch) of the cached parents that are
        being deleted (finalizers still pending)."""
        with self._lock:
            return list(self._deleting.values())

    # ---- children -------------------------------------------------------------------------

    def _remove_child_locked(self, key: ChildKey) -> str | None:
        p = self._child.pop(key, None)
        if p is None:
            return None
        owner = p.owner
        self._count_locked(key, -1)
        bucket = self._children.get(owner)  # type: ignore[arg-type]
        if bucket is not None:
            rest = _bucket_without(bucket, key)
            if rest is None:
                del self._children[owner]  # type: ignore[arg-type]
            else:
                self._children[owner] = rest  # type: ignore[index]
        return owner

    def upsert_child(self, obj: dict | Packed) -> set[str]:
        """Store a child; returns the parent uids whose children changed."""
        if isinstance(obj, Packed):
            key, rv, owner = obj.key, obj.rv, obj.owner
        else:
            key, rv, owner = _head(obj, self.label)
        with self._lock:
            tomb = self._tombstones.get(key)
            if tomb is not None:
                if not newer(rv, tomb):
                    return set()
                del self._tombstones[key]
            cur = self._child.get(key)
            if cur is not None and not newer(rv, cur.rv):
                return set()
            p = obj if isinstance(obj, Packed) else _packed(obj, key, rv, owner, False)
            return self._place_child_locked(p, cur)

    def _place_child_locked(self, p: Packed, cur: Packed | None) -> set[str]:
        """Store ``p`` under its owner (in place of ``cur``, the cached version, under its
        owner); returns the affected parent uids. A child without an owner is not kept."""
        affected = set()
        owner = p.owner
        if cur is not None and cur.owner != owner:
            self._remove_child_locked(p.key)
            affected.add(cur.owner)
            cur = None
        if owner:
            self._children[owner] = _bucket_with(self._children.get(owner), p)
            if cur is None:
                self._count_locked(p.key, 1)
            self._child[p.key] = p
            affected.add(owner)
        return affected  # type: ignore[return-value]

    def delete_child(self, obj: dict | Packed, *, tombstone: bool = False) -> set[str]:
        """Forget a child; with ``tombstone`` older versions of it are ignored from now on."""
        if isinstance(obj, Packed):
            key, rv = obj.key, obj.rv
        else:
            key, rv, _ = _head(obj, self.label)
        with self._lock:
            if tombstone and rv:
                self._tombstones[key] = rv
            elif not tombstone:
                self._tombstones.pop(key, None)
            owner = self._remove_child_locked(key)
            return {owner} if owner else set()

    def replace_children(
        self,
        api_version: str,
        kind: str,
        objs: Iterable[dict | Packed],
        namespace: str | None = None,
    ) -> set[str]:
        """Make the cached children of one type (in ``namespace``, or in every namespace when
        None) exactly ``objs``; returns affected parent uids."""
        fresh = {p.key: p for p in map(self.pack_child, objs)}

        def covered(k: ChildKey) -> bool:
            return k[0] == api_version and k[1] == kind and (namespace is None or k[2] == namespace)

        with self._lock:
            affected: set[str] = set()
            for key in [k for k in self._child if covered(k)]:
                if key not in fresh:
                    owner = self._remove_child_locked(key)
                    if owner:
                        affected.add(owner)
            self._tombstones = {k: v for k, v in self._tombstones.items() if not covered(k)}
            for key, p in fresh.items():
                cur = self._child.get(key)
                if cur is not None and cur.rv == p.rv:
                    continue
                affected |= self._place_child_locked(p, cur)
            return affected

    def drop_namespace(self, namespace: str) -> set[str]:
        """Forget every parent and child in ``namespace`` (no longer served); returns the uids
        of the parents forgotten."""
        with self._lock:
            gone = {uid for uid, p in self._parents.items() if p.key[2] == namespace}
            for uid in gone:
                self._count_parent_locked(self._parents.pop(uid), -1)
                self._deleting.pop(uid, None)
            for key in [k for k in self._child if k[2] == namespace]:
                self._remove_child_locked(key)
            self._tombstones = {k: v for k, v in self._tombstones.items() if k[2] != namespace}
            return gone

    def parent_counts(self) -> dict[tuple[str, str], int]:
        """Cached parents by ``(apiVersion, kind)``, kept as parents come and go (a scrape
        reads it without walking the cache)."""
        with self._lock:
            return {k: v for k, v in self._parent_types.items() if v}

    def snapshot(self, uid: str) -> tuple[dict | None, list[dict]]:
        """A parent and its children as cached now (fresh copies, decoded)."""
        with self._lock:
            p = self._parents.get(uid)
            kids = list(_bucket_items(self._children.get(uid)))
        return (p.unpack() if p is not None else None), [k.unpack() for k in kids]

    def versions(self, uid: str) -> dict[ChildKey, str]:
        """resourceVersion of the parent and of each of its children, by object key."""
        with self._lock:
            out = {}
            p = self._parents.get(uid)
            if p is not None:
                out[p.key] = version_str(p.rv)
            for k in _bucket_items(self._children.get(uid)):
                out[k.key] = version_str(k.rv)
            return out

    def counts(self) -> dict[str, int]:
        """Cached objects by type, e.g. ``{"parents": 10, "v1/ConfigMap": 12}`` (O(types))."""
        with self._lock:
            out: dict[str, int] = {"parents": len(self._parents)}
            out.update((k, v) for k, v in self._type_counts.items() if v)
            return out
