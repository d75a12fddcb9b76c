"""Parent uid -> worker index.

Guarantees of `shard_for(uid, shards)`:

- Stable: the same uid and shard count give the same index in every process, on every host and
  in every Python run. It never uses `hash()` (salted per process by PYTHONHASHSEED); the uid
  is reduced to a 64-bit integer by an 8-byte BLAKE2b digest of its UTF-8 bytes.
- In range: the result is in `range(shards)`.
- Balanced: uids spread evenly over the shards (jump consistent hash of a uniform 64-bit key).
- Minimal movement: growing from `n` to `n + 1` shards moves about `1 / (n + 1)` of the uids, and
  every uid that moves goes to the new shard `n` (Lamping & Veach, "A Fast, Minimal Memory,
  Consistent Hash Algorithm", 2014). Shrinking is the mirror image: only uids of the removed
  shard move.
"""

from __future__ import annotations

import hashlib

__all__ = ["shard_for", "uid_key"]

_MASK64 = (1 << 64) - 1
_LCG_MULTIPLIER = 2862933555777941757  # the constant of the paper's reference implementation


def uid_key(uid: str) -> int:
    """Return the stable unsigned 64-bit key of `uid` (big-endian BLAKE2b-64 of its UTF-8)."""
    return int.from_bytes(hashlib.blake2b(uid.encode("utf-8"), digest_size=8).digest(), "big")


def _jump_consistent_hash(key: int, buckets: int) -> int:
    """Lamping & Veach jump consistent hash of a 64-bit `key` into `range(buckets)`."""
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * _LCG_MULTIPLIER + 1) & _MASK64
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


def shard_for(uid: str, shards: int) -> int:
    """Return the worker index in `range(shards)` that owns the parent with this `uid`.

    Raises ValueError when `shards < 1`.
    """
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    return _jump_consistent_hash(uid_key(uid), shards)
