"""Per-parent work queue with client-go workqueue semantics and two priority lanes.

A key (a parent uid) moves through three states: *delayed* (waiting for a due time), *ready*
(waiting to be handed out by `get`) and *processing* (handed out, `done` not yet called).

Guarantees of `WorkQueue`:

- Coalescing: a key is ready at most once. Adding a key that is already ready changes nothing
  (except promotion, below); many events for one parent cause one sync.
- Exclusivity: a key is never handed out while it is processing. Adding a processing key marks
  it *dirty*; `done(key)` puts a dirty key back into the ready queue. So every add that happens
  after a `get` of the key is followed by another `get` of it (no event is lost), and at most
  one sync per parent runs at a time.
- FIFO within a lane: ready keys of a lane are handed out in the order they became ready.
- Two lanes: "event" (watch events, retries, `resync_after`) and "resync" (periodic resync).
  `get` hands out a resync-lane key only when no event-lane key is ready, so a resync flood
  never delays event work. Adding a key to the event lane while it is ready in the resync lane
  promotes it to the end of the event lane. (A steady event load can therefore postpone
  resync work indefinitely; that is the intended priority.)
- Delayed adds: `add_after(key, delay)` makes the key ready once `delay` seconds of `clock` have
  passed. A key has at most one pending delayed add: the earliest due time wins and later ones
  are dropped (if two are due at the same time the event lane wins). A delayed add is
  independent of the key being ready or processing meanwhile: it still fires when due and is
  then coalesced like any add. Due times are kept in a heap (O(log n) per add, no timer
  threads); a blocked `get` wakes when the earliest one falls due.
- Rate limiting: the queue owns a `Backoff` (`WorkQueue(backoff=...)`). `add_rate_limited(key)`
  records a failure of the key and adds it after its backoff delay in the event lane;
  `forget(key)` (on success) resets it; `num_requeues(key)` reports the failure count.
- Wait time: `get` returns an `Item` with `waited`, the `clock` seconds since the key first
  became ready (since the add for immediate adds, since the due time for delayed adds). A key
  that was re-added while processing counts from that add, so `waited` includes the time it
  spent behind its own running sync — the latency a user sees between event and sync start.
- `discard(key)` drops the key's ready, delayed and dirty entries and its backoff state (the
  parent is gone). A processing key stays processing until `done`, which then does not requeue.
- Shutdown: after `shut_down()` every `get` returns None immediately (waiters are woken), adds
  are ignored and `done` never requeues. `drain(timeout)` shuts down and waits until no key is
  processing.
- Thread-safe: every method may be called from any thread.

Time: `clock` (default `time.monotonic`) governs due times, `waited`, `last_get_time` and
`stalled_for()`; it can be injected so tests advance time deterministically. `timeout`
arguments of `get` and `drain` are real seconds.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from operatord.backoff import Backoff

__all__ = ["EVENT", "RESYNC", "Item", "Lane", "WorkQueue"]

K = TypeVar("K", bound=Hashable)  # the key type of a queue (operatord: parent uids, str)

Lane = Literal["event", "resync"]
EVENT: Lane = "event"
RESYNC: Lane = "resync"
_LANES = (EVENT, RESYNC)


@dataclass(frozen=True, slots=True)
class Item(Generic[K]):
    """A key handed out by `WorkQueue.get`: `waited` seconds ready in the queue, from `lane`."""

    key: K
    lane: Lane
    waited: float


class WorkQueue(Generic[K]):
    """Thread-safe per-parent work queue; see the module docstring for its guarantees."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        backoff: Backoff[K] | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        """``on_ready()`` is called (with the queue's lock held: it must only signal) whenever
        a key becomes ready or the earliest due time moves earlier, so one thread can wait on
        several queues (`next_due` tells how long it may sleep)."""
        self._clock = clock
        self._on_ready = on_ready
        self.backoff: Backoff[K] = backoff if backoff is not None else Backoff()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # ready work or shutdown
        self._idle = threading.Condition(self._lock)  # nothing processing (for drain)
        # Ready keys per lane, in FIFO order, mapped to the clock time they became ready.
        self._ready: dict[Lane, OrderedDict[K, float]] = {
            EVENT: OrderedDict(),
            RESYNC: OrderedDict(),
        }
        self._processing: set[K] = set()
        # Keys added while processing: lane and the time they became ready.
        self._dirty: dict[K, tuple[Lane, float]] = {}
        # Delayed adds: heap of (due, seq, key, lane) with lazy deletion; the live entry of a
        # key is the one whose seq equals self._delayed[key][1].
        self._heap: list[tuple[float, int, K, Lane]] = []
        self._delayed: dict[K, tuple[float, int, Lane]] = {}
        self._seq = itertools.count()
        self._shutting_down = False
        self._last_get: float | None = None
        self._ready_since: float | None = None  # when the ready set last went from empty to not

    # -- adding -------------------------------------------------------------------------------

    def add(self, key: K) -> None:
        """Make `key` ready in the event lane now (coalesced; dirty if processing)."""
        with self._lock:
            if self._shutting_down:
                return
            now = self._clock()
            self._enqueue(key, EVENT, now, now)

    def add_after(self, key: K, delay: float, lane: Lane = EVENT) -> None:
        """Make `key` ready in `lane` after `delay` seconds; `delay <= 0` adds it now.

        Of several pending delayed adds of a key the earliest due time is kept.
        """
        if lane not in _LANES:
            raise ValueError(f"unknown lane {lane!r}")
        with self._lock:
            if self._shutting_down:
                return
            now = self._clock()
            if delay <= 0:
                self._enqueue(key, lane, now, now)
                return
            due = now + delay
            current = self._delayed.get(key)
            if current is not None and (
                current[0] < due or (current[0] == due and (current[2] == EVENT or lane == RESYNC))
            ):
                return
            seq = next(self._seq)
            self._delayed[key] = (due, seq, lane)
            heapq.heappush(self._heap, (due, seq, key, lane))
            if self._heap[0][1] == seq:
                # New earliest due time: waiters must shorten their timed wait.
                self._cond.notify_all()
                if self._on_ready is not None:
                    self._on_ready()
            self._compact_heap()

    def add_rate_limited(self, key: K) -> float:
        """Record a failure of `key` and add it after its backoff delay (event lane).

        Returns the delay (0.0 when the queue is shut down and nothing was added).
        """
        with self._lock:
            if self._shutting_down:
                return 0.0
        delay = self.backoff.next_delay(key)
        self.add_after(key, delay, EVENT)
        return delay

    def forget(self, key: K) -> None:
        """Reset `key`'s backoff (call after a successful sync)."""
        self.backoff.reset(key)

    def num_requeues(self, key: K) -> int:
        """The consecutive failures recorded for `key` by `add_rate_limited`."""
        return self.backoff.failures(key)

    # -- taking -------------------------------------------------------------------------------

    def get(self, timeout: float | None = None) -> Item[K] | None:
        """Hand out the next ready key, blocking up to `timeout` real seconds (None: forever).

        Event-lane keys go first. Returns None on timeout or when the queue is shut down. The
        caller must call `done(item.key)` when it has finished processing.
        """
        end = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                if self._shutting_down:
                    return None
                now = self._clock()
                self._move_due(now)
                for lane in _LANES:
                    ready = self._ready[lane]
                    if ready:
                        key, since = ready.popitem(last=False)
                        self._processing.add(key)
                        self._last_get = now
                        if not self._ready[EVENT] and not self._ready[RESYNC]:
                            self._ready_since = None
                        return Item(key=key, lane=lane, waited=max(0.0, now - since))
                wait = self._heap[0][0] - now if self._heap else None
                if end is not None:
                    remaining = end - time.monotonic()
                    if remaining <= 0:
                        return None
                    wait = remaining if wait is None else min(wait, remaining)
                self._cond.wait(wait)

    def done(self, key: K) -> None:
        """Mark `key` as processed; a key re-added meanwhile (dirty) becomes ready again.

        Calling it for a key that is not processing does nothing.
        """
        with self._lock:
            if key not in self._processing:
                return
            self._processing.discard(key)
            dirty = self._dirty.pop(key, None)
            if dirty is not None and not self._shutting_down:
                lane, since = dirty
                self._enqueue(key, lane, since, self._clock())
            if not self._processing:
                self._idle.notify_all()

    def discard(self, key: K) -> None:
        """Drop `key`'s ready, delayed and dirty entries and its backoff (the parent is gone).

        A processing key stays processing; its `done` will not requeue it.
        """
        with self._lock:
            for lane in _LANES:
                self._ready[lane].pop(key, None)
            if not self._ready[EVENT] and not self._ready[RESYNC]:
                self._ready_since = None
            self._dirty.pop(key, None)
            if self._delayed.pop(key, None) is not None:
                self._compact_heap()
        self.backoff.reset(key)

    # -- lifecycle ----------------------------------------------------------------------------

    def shut_down(self) -> None:
        """Stop handing out work: `get` returns None from now on and waiters wake up."""
        with self._lock:
            self._shutting_down = True
            self._cond.notify_all()
            if self._on_ready is not None:
                self._on_ready()

    @property
    def shutting_down(self) -> bool:
        with self._lock:
            return self._shutting_down

    def drain(self, timeout: float | None = None) -> bool:
        """Shut down, then wait up to `timeout` real seconds until no key is processing.

        Returns True when nothing is processing any more.
        """
        self.shut_down()
        end = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._processing:
                if end is None:
                    self._idle.wait()
                else:
                    remaining = end - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._idle.wait(remaining)
            return True

    # -- introspection ------------------------------------------------------------------------

    def next_due(self) -> float | None:
        """Real seconds until a delayed key falls due (0: one is due or a key is ready; None:
        nothing ready or delayed)."""
        with self._lock:
            if self._ready[EVENT] or self._ready[RESYNC]:
                return 0.0
            while self._heap:
                due, seq, key, _ = self._heap[0]
                live = self._delayed.get(key)
                if live is not None and live[1] == seq:
                    return max(0.0, due - self._clock())
                heapq.heappop(self._heap)  # a dropped entry
            return None

    def __len__(self) -> int:
        """Number of ready keys (both lanes), including delayed keys that have fallen due."""
        with self._lock:
            self._move_due(self._clock())
            return len(self._ready[EVENT]) + len(self._ready[RESYNC])

    def ready_keys(self) -> list[K]:
        """The keys ready now (both lanes, delayed keys that have fallen due included)."""
        with self._lock:
            self._move_due(self._clock())
            return [*self._ready[EVENT], *self._ready[RESYNC]]

    def ready_count(self, lane: Lane) -> int:
        """Number of ready keys in one lane."""
        with self._lock:
            self._move_due(self._clock())
            return len(self._ready[lane])

    def delayed_count(self) -> int:
        """Number of keys with a pending delayed add that is not yet due."""
        with self._lock:
            self._move_due(self._clock())
            return len(self._delayed)

    def processing_count(self) -> int:
        """Number of keys handed out by `get` and not yet `done`."""
        with self._lock:
            return len(self._processing)

    def is_processing(self, key: K) -> bool:
        with self._lock:
            return key in self._processing

    @property
    def last_get_time(self) -> float | None:
        """The `clock` time of the last `get` that handed out a key (None before the first)."""
        with self._lock:
            return self._last_get

    def stalled_for(self) -> float:
        """Seconds that ready work has been waiting without any `get` handing out a key.

        0.0 when nothing is ready. A health check can report the dispatcher as stuck when this
        exceeds a threshold.
        """
        with self._lock:
            now = self._clock()
            self._move_due(now)
            if self._ready_since is None:
                return 0.0
            since = self._ready_since
            if self._last_get is not None and self._last_get > since:
                since = self._last_get
            return max(0.0, now - since)

    # -- internals (lock held) ----------------------------------------------------------------

    def _enqueue(self, key: K, lane: Lane, since: float, ready_at: float) -> None:
        # `since` feeds Item.waited; `ready_at` is when the key could first be handed out
        # (for stalled_for).
        if key in self._processing:
            current = self._dirty.get(key)
            if current is None:
                self._dirty[key] = (lane, since)
            elif lane == EVENT and current[0] == RESYNC:
                self._dirty[key] = (EVENT, min(since, current[1]))
            return
        events, resyncs = self._ready[EVENT], self._ready[RESYNC]
        if key in events:
            return
        if key in resyncs:
            if lane == EVENT:
                events[key] = resyncs.pop(key)  # promotion keeps the original ready time
                self._cond.notify()
            return
        if not events and not resyncs:
            self._ready_since = ready_at
        self._ready[lane][key] = since
        self._cond.notify()
        if self._on_ready is not None:
            self._on_ready()

    def _move_due(self, now: float) -> None:
        heap, delayed = self._heap, self._delayed
        while heap:
            due, seq, key, lane = heap[0]
            live = delayed.get(key)
            if live is None or live[1] != seq:
                heapq.heappop(heap)  # stale: replaced by an earlier add or discarded
                continue
            if due > now:
                return
            heapq.heappop(heap)
            del delayed[key]
            self._enqueue(key, lane, due, due)

    def _compact_heap(self) -> None:
        if len(self._heap) > 2 * len(self._delayed) + 64:
            self._heap = [e for e in self._heap if self._delayed.get(e[2], (0, -1))[1] == e[1]]
            heapq.heapify(self._heap)

    def __repr__(self) -> str:
        with self._lock:
            return (
                f"WorkQueue(ready={len(self._ready[EVENT])}+{len(self._ready[RESYNC])}, "
                f"delayed={len(self._delayed)}, processing={len(self._processing)}, "
                f"shutting_down={self._shutting_down})"
            )
