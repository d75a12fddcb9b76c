"""One controller: the parents of one kind, their queues, and what each sync's result means.

A daemon runs one `Controller` per entry of its ``controllers`` list; they share the worker
pool (`operatord.pool`), the cache and the informers (`operatord.manager`). A controller only
routes its parents into its own queues (one per worker slot), builds their tasks and turns
their results into the queue's next step (`protocol.next_step`).

Guarantees:
- A parent is never in flight twice (the work queue's exclusivity), events for it coalesce,
  event work goes before periodic resync, and failures back off per parent with the
  controller's own ``backoff``.
- Objects a worker wrote are put into the cache before its parent can be dispatched again, so a
  sync never acts on state older than our own writes; watch events carrying nothing newer than
  the cache (the echoes of our own writes) do not cause syncs. A change made by anyone else
  while the parent was in flight causes a fresh sync. The daemon stores and routes each watch
  event under ``observing``, and a result's writes are stored and its parent released under
  the same lock, so an echo is either seen while its parent is in flight or found no newer
  than the cache: it never re-queues a parent whose sync has just ended.
- The worker re-runs the handler itself after writing children; when even its last run still
  changed children, the parent is synced again. After MAX_WRITE_STREAK such results in a row
  its re-syncs wait for its exponential backoff (a warning is logged), so a handler that never
  converges cannot hot-loop.
- A failed sync or finalize is retried after the parent's exponential backoff and recorded as
  a Warning Event on the parent (rate-limited in the leader, so the limit outlives worker
  restarts); success resets the backoff. Periodic resync goes through the low-priority lane.
- A parent whose handler call killed its worker is charged a failure (backoff,
  ``syncs_total{result="crash"}``, a ``WorkerKilled`` Event); a parent returned without a
  verdict is synced again, uncharged.
- No dispatch without the fence's grant (`shardwatch.Fence`): the leader lease, or the lease
  of the parent's replica shard.
- With ``skipUnchanged``, a parent whose inputs hash to the fingerprint its status records
  (`operatord.fingerprint`) is not sent to a worker: it counts as skipped
  (``syncs_skipped_total``), nothing is written, and its periodic resync is scheduled. A
  parent being finalized, and one whose last sync in this leader did not end converged (an
  error, a crash, children still changing, a re-selection, a handler that asked for
  ``resync_after``), is never skipped.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from operatord import fingerprint, protocol
from operatord.backoff import Backoff
from operatord.cache import Cache, child_key
from operatord.config import ControllerConfig
from operatord.protocol import SyncResult, SyncTask
from operatord.queue import RESYNC, WorkQueue

if TYPE_CHECKING:
    from collections.abc import Callable

    from operatord.events import EventRecorder
    from operatord.metrics import Metrics
    from operatord.related import RelatedTypes
    from operatord.shardwatch import Fence

log = structlog.get_logger("operatord.controller")

# After this many consecutive results of a parent whose handler still changed children, further
# re-syncs of it wait for its exponential backoff: a handler that never converges must not
# hot-loop.
MAX_WRITE_STREAK = 2

_OWN_FIELDS = ("resourceVersion", "managedFields", "finalizers", "generation")


def _content(parent: dict) -> dict:
    """A parent without the parts operatord's own writes change (status, finalizers and the
    bookkeeping that follows), to tell whether anyone else changed it."""
    out = {k: v for k, v in parent.items() if k != "status"}
    out["metadata"] = {
        k: v for k, v in (parent.get("metadata") or {}).items() if k not in _OWN_FIELDS
    }
    return out


def _finalizing(parent: dict) -> bool:
    return bool((parent.get("metadata") or {}).get("deletionTimestamp"))


@dataclass(slots=True)
class ParentRecord:
    """What the controller keeps about one parent between events."""

    in_flight: bool = False
    changed: bool = False  # changed while in flight
    expected: dict | None = None  # cache versions when its task was built
    write_streak: int = 0  # consecutive results whose handler still changed children
    # Its last sync did not end converged: the next dispatch calls the handler whatever the
    # recorded fingerprint says.
    must_sync: bool = False


_IDLE = ParentRecord()  # a record with nothing to remember is not kept


class Controller:
    """The parents of one kind (``config.parent``) and their sync results."""

    def __init__(
        self,
        config: ControllerConfig,
        *,
        cache: Cache,
        related: RelatedTypes,
        events: EventRecorder,
        metrics: Metrics,
        fence: Fence,
        workers: int,
        capacity: int,
        slot_of: Callable[[str], int],
        waker: Callable[[int], Callable[[], None]] | None = None,
        forget_suspect: Callable[[str], None] | None = None,
        observing: threading.Lock | None = None,
    ) -> None:
        """``observing``: the lock the daemon holds while it stores a watch event in the cache
        and routes it (shared by every controller of one cache)."""
        self.config = config
        self.observing = observing if observing is not None else threading.Lock()
        self.name = config.name
        self.cache = cache
        self.related = related
        self.events = events
        self.metrics = metrics
        self.fence = fence
        self.slot_of = slot_of
        self.forget_suspect = forget_suspect or (lambda uid: None)
        b = config.backoff
        self.queues: list[WorkQueue[str]] = [
            WorkQueue(
                backoff=Backoff(b.initial_seconds, b.max_seconds, b.multiplier, b.jitter),
                on_ready=waker(i) if waker is not None else None,
            )
            for i in range(workers)
        ]
        self.limit = max(1, int(capacity * config.in_flight_share))
        self._lock = threading.Lock()
        self.records: dict[str, ParentRecord] = {}
        # The controller's part of every parent's fingerprint; "" when skipping is off.
        self.digest = ""
        if config.skip_unchanged:
            version = fingerprint.handler_version(config)
            if fingerprint.unknown(version):
                log.warning(
                    "the handler's source files were not found: no parent is skipped (set "
                    "handlerVersion, or skipUnchanged: false)",
                    controller=self.name,
                    handler=config.handler,
                )
            self.digest = fingerprint.controller_digest(config, version)

    # ---- the pool's side (operatord.pool.Feed) ----------------------------------------------

    def queue(self, slot: int) -> WorkQueue[str]:
        return self.queues[slot]

    def task(self, uid: str, slot: int) -> SyncTask | None:
        q = self.queues[slot]
        parent, children = self.cache.snapshot(uid)
        if parent is None:  # deleted meanwhile
            q.done(uid)
            return None
        ok, lease, shard = self.fence.grant(uid)
        if not ok:  # not ours (any more), being released, or its lease is stale
            q.done(uid)
            if self.fence.held(uid):
                q.add_after(uid, 0.5)
            return None
        if self.digest and self._unchanged(uid, parent, children):
            q.done(uid)
            q.forget(uid)
            self.metrics.inc("syncs_skipped_total", {"controller": self.name})
            self._schedule_resync(q, uid)
            return None
        with self._lock:
            rec = self.records.get(uid)
            if rec is None:
                rec = self.records[uid] = ParentRecord()
            rec.in_flight = True
            rec.changed = False
        rec.expected = self.cache.versions(uid)
        return SyncTask(
            uid,
            parent,
            children,
            lease,
            **self.related.task_fields(uid),
            shard=shard,
            controller=self.name,
            retry=q.num_requeues(uid),
        )

    def returned(self, uid: str, slot: int) -> None:
        self._must_sync(uid)
        self._finish(slot, uid, None, again=True)

    def crashed(
        self, uid: str, parent: dict, slot: int, exit_code: int | None, others: int
    ) -> None:
        self._must_sync(uid)
        delay = self.queues[slot].add_rate_limited(uid)
        c = {"controller": self.name}
        self.metrics.inc("retries_total", c)
        counter = "finalizes_total" if _finalizing(parent) else "syncs_total"
        self.metrics.inc(counter, {"result": "crash", **c})
        alone = "alone" if not others else f"with {others} others in flight"
        message = (
            f"the handler killed its worker process: it died (exit code {exit_code}) while "
            f"the handler ran for this parent ({alone}); retrying in {delay:.1f}s"
        )
        log.error("handler killed its worker", **self.parent_context(uid), exit_code=exit_code)
        self.events.post(parent, "WorkerKilled", message)
        self._finish(slot, uid, None, again=False)

    def completed(self, result: SyncResult, parent: dict, slot: int) -> None:
        uid = result.uid
        if self.cache.has_parent(uid):
            self.related.record(uid, result.selection, parent)
        queue = self.queues[slot]
        c = {"controller": self.name}
        streak = 0
        with self._lock:
            rec = self.records.get(uid)
            if rec is not None:
                if result.outcome == protocol.OK and (result.children_changed or result.reselect):
                    rec.write_streak += 1
                else:
                    rec.write_streak = 0
                streak = rec.write_streak
                rec.must_sync = not (
                    result.outcome == protocol.OK
                    and not result.children_changed
                    and not result.reselect
                    and result.resync_after is None
                )
        step = protocol.next_step(result, streak_exceeded=streak > MAX_WRITE_STREAK)
        if step.forget:
            queue.forget(uid)
        if step.backoff:
            delay = queue.add_rate_limited(uid)
            self.metrics.inc("retries_total", c)
            if step.log == "not_converging":
                changing = protocol.describe_changes(result.changing)
                log.warning(
                    "children change on every sync; the handler does not converge, slowing down",
                    **self.parent_context(uid),
                    consecutive_writing_syncs=streak,
                    handler_runs=streak * result.handler_calls,
                    changing=changing,
                    retry_in=round(delay, 3),
                )
                self.events.post(
                    parent,
                    "ChildrenNotConverging",
                    f"children change on every sync ({changing}): the desired state must "
                    "depend on the observed state only (no timestamps, random values or "
                    f"counters); syncing again only at the backoff pace (next in {delay:.1f}s)",
                )
            elif step.log == "unstable_selection":
                log.warning(
                    "related() returns a different selection on every sync; it must depend on "
                    "the parent only, slowing down",
                    **self.parent_context(uid),
                    retry_in=round(delay, 3),
                )
            elif step.log == "failed":
                log.info(
                    "sync failed; backing off",
                    **self.parent_context(uid),
                    error=result.error,
                    retry_in=round(delay, 3),
                    failures=queue.num_requeues(uid),
                )
        if step.after is not None:
            queue.add_after(uid, float(step.after))
        if step.resync:
            self._schedule_resync(queue, uid)
        if result.outcome == protocol.ERROR:
            reason = "FinalizeFailed" if _finalizing(parent) else "SyncFailed"
            if result.error_kind == "conflict":
                reason = "ChildNameConflict"
            self.events.post(parent, reason, result.error or "")
        for type_, reason, message in result.events:
            self.events.post(parent, reason, message, type_)
        with self.observing:  # see the module docstring: echoes of these writes
            expected = self._apply_written(uid, parent, result)
            self._finish(slot, uid, expected, again=step.again or expected is None)

    # ---- events into the queues -------------------------------------------------------------

    def enqueue(self, uid: str) -> None:
        """Queue a sync of ``uid`` because its state changed.

        While the parent is being synced, the change is only noted: when the sync ends, it is
        queued again unless every change seen meanwhile was the echo of the sync's own writes.
        """
        if not self.cache.has_parent(uid):
            return
        with self._lock:
            rec = self.records.get(uid)
            if rec is not None and rec.in_flight:
                rec.changed = True
                return
        self.queues[self.slot_of(uid)].add(uid)

    def enqueue_related(self, uid: str) -> None:
        """Queue a parent whose related objects changed. A parent in flight is marked dirty in
        its queue, so it syncs again after its running sync (which saw the old objects)."""
        if self.cache.has_parent(uid):
            self.queues[self.slot_of(uid)].add(uid)

    def forget(self, uid: str) -> None:
        """Drop everything kept about a parent that is gone."""
        self.queues[self.slot_of(uid)].discard(uid)
        with self._lock:
            rec = self.records.get(uid)
            if rec is not None and not rec.in_flight:
                del self.records[uid]
        self.forget_suspect(uid)
        self.events.forget(uid)
        self.related.forget(uid)

    # ---- state for the daemon ---------------------------------------------------------------

    def in_flight(self, uid: str) -> bool:
        with self._lock:
            rec = self.records.get(uid)
            return rec is not None and rec.in_flight

    def in_flight_count(self, shard: int | None = None) -> int:
        """Parents in flight (of replica ``shard`` only, when given)."""
        with self._lock:
            uids = [u for u, r in self.records.items() if r.in_flight]
        if shard is None:
            return len(uids)
        return sum(1 for u in uids if self.fence.shard(u) == shard)

    def backing_off(self) -> int:
        return sum(len(q.backoff) for q in self.queues)

    def parent_context(self, uid: str) -> dict:
        """The log fields that identify a parent, its controller and its worker."""
        namespace, name = self.cache.parent_name(uid) or (None, None)
        return {
            "controller": self.name,
            "parent_namespace": namespace or None,
            "parent_name": name,
            "parent_uid": uid,
            "worker": self.slot_of(uid),
        }

    # ---- internals ----------------------------------------------------------------------------

    def _schedule_resync(self, queue: WorkQueue[str], uid: str) -> None:
        if self.config.resync_seconds > 0:
            queue.add_after(uid, self.config.resync_seconds * random.uniform(0.9, 1.1), lane=RESYNC)

    def _must_sync(self, uid: str) -> None:
        with self._lock:
            rec = self.records.get(uid)
            if rec is not None:
                rec.must_sync = True

    def _unchanged(self, uid: str, parent: dict, children: list[dict]) -> bool:
        """The parent's inputs are those its status records as converged (skip it).

        On the first dispatch in this leader (a restart, a takeover) no related selection is
        recorded yet: the one the status records is recorded first, so the fingerprint sees
        the related objects the last sync saw, and their changes re-sync the parent."""
        if _finalizing(parent):
            return False
        with self._lock:
            rec = self.records.get(uid)
            if rec is not None and rec.must_sync:
                return False
        stored = fingerprint.recorded(parent)
        if stored is None:
            return False
        fields = self.related.task_fields(uid)
        if self.config.related and fields.get("selection") is None and stored.selection:
            self.related.record(uid, stored.selection, parent)
            fields = self.related.task_fields(uid)
        current = fingerprint.of(
            self.digest,
            parent,
            children,
            fields.get("selection") if self.config.related else None,
            fields.get("related", ()),
        )
        return current == stored.fingerprint

    def _finish(self, slot: int, uid: str, expected: dict | None, again: bool) -> None:
        """Release ``uid`` from the queue's processing state and sync it again when ``again``
        or when something other than our own writes changed it meanwhile (``expected``: the
        versions our writes left; None: unknown)."""
        with self._lock:
            rec = self.records.get(uid)
            changed = False
            if rec is not None:
                changed = rec.changed
                rec.in_flight = rec.changed = False
                rec.expected = None
                if not self.cache.has_parent(uid) or rec == _IDLE:
                    del self.records[uid]  # nothing to remember: a default record
        q = self.queues[slot]
        q.done(uid)
        if again or (changed and (expected is None or self.cache.versions(uid) != expected)):
            q.add(uid)

    def _apply_written(self, uid: str, parent: dict, result: SyncResult) -> dict | None:
        """Put what the worker wrote into the cache; returns the versions the cache should hold
        if nothing but these writes happened meanwhile (None: a re-sync is due)."""
        parent_key = child_key(parent)
        with self._lock:
            rec = self.records.get(uid)
            expected = dict(rec.expected or {}) if rec is not None else {}
        written_parent = None
        for w in result.written:
            obj = w["object"]
            key = child_key(obj)
            if key == parent_key:
                if w["action"] == "upsert":
                    # Workers never create parents: one deleted meanwhile stays deleted.
                    self.cache.upsert_parent(obj, only_existing=True)
                    written_parent = obj
            elif w["action"] == "upsert":
                self.cache.upsert_child(obj)
            else:
                self.cache.delete_child(obj, tombstone=True)
            if w["action"] == "upsert":
                expected[key] = obj["metadata"].get("resourceVersion", "")
            else:
                expected.pop(key, None)
        if written_parent is not None and _content(written_parent) != _content(parent):
            # Our write returned a parent that someone else changed after our snapshot (a status
            # patch is not conditional): its watch event is now "old news" for the cache, so
            # the change must be synced from here.
            return None
        return expected
