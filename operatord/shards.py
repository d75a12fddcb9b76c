"""Parent uid -> replica shard: fixed UID-hash ranges, the same hash as the API server's
``shardRange`` (KEP-5866, Kubernetes v1.36 feature gate ShardedListAndWatch).

Guarantees:

- `fnv1a64(text)` is the 64-bit FNV-1a hash of the UTF-8 bytes of ``text`` (offset basis
  0xcbf29ce484222325, prime 0x100000001b3), the function kube-apiserver evaluates for
  ``shardRange(object.metadata.uid, start, end)``.
- Shard ``k`` of ``S`` owns the hashes in ``[k * 2**64 / S, (k + 1) * 2**64 / S)`` (real-number
  bounds). `shard_of` maps a uid to its shard; `shard_bounds` gives the integer bounds
  ``[ceil(k * 2**64 / S), ceil((k + 1) * 2**64 / S))`` of exactly the same set, so every hash
  belongs to exactly one shard and a range selector built from the bounds selects exactly
  the uids `shard_of` assigns to those shards.
- `range_selector` renders a set of shards as a ``shardSelector`` string: one ``shardRange``
  per run of adjacent shards, joined by ``||``, bounds as quoted ``0x`` hex (16 digits; the end
  of the last shard is ``0x10000000000000000``). An empty set renders as ``""``.
- Stable: no ``hash()``, no randomness; the same on every host and Python run.

This is not `operatord.sharding.shard_for` (parent -> worker process inside one replica).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "FNV_OFFSET",
    "FNV_PRIME",
    "SPACE",
    "fnv1a64",
    "range_selector",
    "shard_bounds",
    "shard_of",
    "shards_of_selector_ranges",
]

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
SPACE = 1 << 64
_MASK = SPACE - 1
UID_FIELD = "object.metadata.uid"


def fnv1a64(text: str | bytes) -> int:
    """The 64-bit FNV-1a hash of ``text`` (UTF-8 when a str)."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    h = FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * FNV_PRIME) & _MASK
    return h


def shard_of(uid: str, shards: int) -> int:
    """The shard in ``range(shards)`` that owns ``uid``. Raises ValueError when ``shards < 1``."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    return (fnv1a64(uid) * shards) >> 64


def shard_bounds(k: int, shards: int) -> tuple[int, int]:
    """Integer ``[start, end)`` of the hashes shard ``k`` of ``shards`` owns."""
    if not 0 <= k < shards:
        raise ValueError(f"shard {k} is not in range({shards})")
    return -(-k * SPACE // shards), -(-(k + 1) * SPACE // shards)


def _hex(n: int) -> str:
    return f"0x{n:016x}"


def range_selector(owned: Iterable[int], shards: int, field: str = UID_FIELD) -> str:
    """The ``shardSelector`` for the shards in ``owned`` (adjacent shards merged)."""
    ks = sorted(set(owned))
    runs: list[tuple[int, int]] = []
    for k in ks:
        start, end = shard_bounds(k, shards)
        if runs and runs[-1][1] == start:
            runs[-1] = (runs[-1][0], end)
        else:
            runs.append((start, end))
    return " || ".join(f"shardRange({field}, '{_hex(s)}', '{_hex(e)}')" for s, e in runs)


def shards_of_selector_ranges(ranges: Iterable[tuple[int, int]], shards: int) -> set[int]:
    """The shards whose whole range lies within one of ``ranges`` (for diagnostics and tests)."""
    out = set()
    spans = list(ranges)
    for k in range(shards):
        s, e = shard_bounds(k, shards)
        if any(a <= s and e <= b for a, b in spans):
            out.add(k)
    return out
