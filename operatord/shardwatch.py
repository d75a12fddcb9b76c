"""Which replica shards this replica holds, and the write fence that follows from its leases.

Guarantees of `Fence`:
- One object answers "may this replica act on this parent now, and until when?" for both
  cases: a single leader lease (``lease_deadline()``; None: no election, no fence) and one
  lease per replica shard (``sharding.shards`` > 1: ``shard_deadline(k)``, held shards only).
- `grant(uid)` is what a dispatch checks: a parent of a shard that is not held, is being
  drained, or whose lease is stale is not dispatched (and `held(uid)` says whether it should
  be retried later). ``owned`` and ``draining`` change under one lock, so a dispatch and a drain
  never miss each other.
- `check(parent)` is what every leader-side write (Events) checks: it raises unless the lease
  of the parent (or the leader lease) is fresh.
- `updates()` lists the `LeaseUpdate` messages that bring a worker's fences up to date.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable

from operatord import protocol
from operatord.shards import shard_of

__all__ = ["Fence"]


class Fence:
    def __init__(self, shards: int = 1) -> None:
        self.shards = shards
        self.sharded = shards > 1
        self.lease_deadline: Callable[[], float | None] = lambda: None
        self.shard_deadline: Callable[[int], float] = lambda k: 0.0
        self.lock = threading.Lock()
        self.owned: set[int] = set()
        self.draining: set[int] = set()

    def shard(self, uid: str) -> int:
        """The replica shard of a parent uid (0 when not sharded)."""
        return _shard_of_cached(uid, self.shards)

    def ok(self) -> bool:
        """The replica may dispatch at all (sharded: checked per parent by `grant`)."""
        if self.sharded:
            return True
        valid = self.lease_deadline()
        return valid is None or time.monotonic() < valid

    def grant(self, uid: str) -> tuple[bool, float | None, int | None]:
        """(may dispatch, the task's write fence, its shard or None) for parent ``uid``."""
        if not self.sharded:
            return True, self.lease_deadline(), None
        k = self.shard(uid)
        lease = self.shard_deadline(k)
        with self.lock:
            ok = k in self.owned and k not in self.draining and time.monotonic() < lease
        return ok, lease, k

    def held(self, uid: str) -> bool:
        """The parent's shard is held (a refused dispatch of it is retried)."""
        return not self.sharded or self.shard(uid) in self.owned

    def check(self, parent: dict) -> None:
        """Raises unless this replica may still write about ``parent``."""
        if self.sharded:
            uid = (parent.get("metadata") or {}).get("uid") or ""
            if time.monotonic() >= self.shard_deadline(self.shard(uid)):
                raise RuntimeError("the lease of the parent's shard is not held")
            return
        if not self.ok():
            raise RuntimeError("the lease may have expired")

    def updates(self) -> list[protocol.LeaseUpdate]:
        """The lease messages that bring a (new) worker's fences up to date."""
        if self.sharded:
            return [protocol.LeaseUpdate(self.shard_deadline(k), k) for k in sorted(self.owned)]
        return [protocol.LeaseUpdate(self.lease_deadline())]


@functools.lru_cache(maxsize=1 << 17)
def _shard_of_cached(uid: str, shards: int) -> int:
    return shard_of(uid, shards)
