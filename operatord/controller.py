"""The leader's reconcile machinery: informers -> cache -> per-worker queues -> worker processes.

Guarantees:
- Each parent uid is hashed (`shard_for`) to one worker. A worker holds up to
  ``inFlightPerWorker`` parents at once; a parent is never in flight twice (the work queue's
  exclusivity), events for it coalesce, event work goes before periodic resync, and failures
  back off per parent.
- Nothing is dispatched before the parent and every child informer have listed once, so the
  first sync of a parent already sees its existing children.
- Objects a worker wrote are put into the cache before its parent can be dispatched again, so a
  sync never acts on state older than our own writes; watch events carrying nothing newer than
  the cache (the echoes of our own writes) do not cause syncs. A change made by anyone else
  while the parent was in flight causes a fresh sync.
- The worker re-runs the handler itself after writing children; when even its last run still
  changed children, the parent is synced again. After MAX_WRITE_STREAK such results in a row
  its re-syncs wait for its exponential backoff (a warning is logged), so a handler that never
  converges cannot hot-loop.
- A failed sync or finalize is retried after the parent's exponential backoff and recorded as
  a Warning Event on the parent (rate-limited in the leader, so the limit outlives worker
  restarts); success resets the backoff. Periodic resync goes through the low-priority lane.
- A worker that dies, or stays silent past its deadline while holding parents, is replaced and
  every parent it held is requeued: nothing is lost. Whose handler call was running when it
  died is read from its `protocol.CallBoard`: exactly one call of a held parent names the
  culprit, which is charged a failure (backoff, ``syncs_total{result="crash"}``, a
  ``WorkerKilled`` Event) while every other parent it held is requeued uncharged and
  unsuspected. Several running calls (an async handler) make those parents *suspects*; with
  no usable mark, a worker that held one parent blames it and one that held several makes
  them all suspects. A suspect is dispatched alone until one of its syncs finishes, so a
  parent that keeps killing its worker is found and backed off while the others proceed.
  Parents a worker gives back because its handler is stuck in a call are requeued uncharged.
- Replacements are paced per worker (`supervisor.RestartPacer`: 10 at once per minute, then
  doubling waits up to 30 s, counted in ``worker_restart_delay_seconds_total``). After a
  death the worker keeps a started spare process, which the next replacement adopts at once;
  the spare is stopped after a minute without deaths.
- No dispatch after the lease fence (``lease_deadline()``, monotonic); workers receive the
  fence with every task and with every renewal (`update_lease`).
- `stop()` stops taking new work, lets in-flight syncs finish (bounded by ``drain_timeout``)
  and stops the workers.
- Replica shards (``sharding.shards`` > 1): only parents of the shards this replica holds
  (`add_shard` .. `remove_shard`) are cached and synced; children by the shard of their
  parent-uid label. Parents are listed and watched with a ``shardSelector`` for the held
  ranges and filtered here as well (servers without the feature send everything). A parent of
  a newly held shard is dispatched only after every child informer has listed again with that
  shard included. Each dispatch checks the lease of the parent's shard
  (``shard_deadline(k)``) and the task carries it as its fence; `drain_shard` stops
  dispatching a shard and returns True once none of its syncs is in flight.
"""

from __future__ import annotations

import functools
import gc
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from operatord import protocol
from operatord.backoff import Backoff
from operatord.cache import Cache, child_key
from operatord.config import Config
from operatord.events import EventRecorder
from operatord.health import Heartbeat
from operatord.informer import Informer
from operatord.kube import ApiError, ClientSettings, Kube, Resource
from operatord.protocol import SyncResult, SyncTask
from operatord.queue import RESYNC, WorkQueue
from operatord.related import RelatedTypes
from operatord.sharding import shard_for
from operatord.shards import range_selector
from operatord.shards import shard_of as _replica_shard_of
from operatord.supervisor import (
    RestartPacer,
    SpareWorker,
    WorkerGone,
    WorkerProcess,
    worker_context,
)

if TYPE_CHECKING:
    from operatord.metrics import Metrics

log = structlog.get_logger("operatord.controller")


_OWN_FIELDS = ("resourceVersion", "managedFields", "finalizers", "generation")


def _content(parent: dict) -> dict:
    """A parent without the parts operatord's own writes change (status, finalizers and the
    bookkeeping that follows), to tell whether anyone else changed it."""
    out = {k: v for k, v in parent.items() if k != "status"}
    out["metadata"] = {
        k: v for k, v in (parent.get("metadata") or {}).items() if k not in _OWN_FIELDS
    }
    return out


# After this many consecutive results of a parent whose handler still changed children, further
# re-syncs of it wait for its exponential backoff: a handler that never converges must not
# hot-loop.
MAX_WRITE_STREAK = 2

# Period of the full garbage collection over the frozen heap (see refreeze_heap).
GC_REFREEZE_SECONDS = 600.0

# At most this many tasks go to a worker in one message.
MAX_BATCH = 64


@dataclass(slots=True)
class _InFlight:
    uid: str
    parent: dict  # the snapshot the task carried
    expected: dict  # cache versions at dispatch
    suspect: bool


class _Slot:
    """One worker: its process, its queue, and the parents it holds."""

    def __init__(self, index: int, proc: WorkerProcess, queue: WorkQueue[str]):
        self.index = index
        self.proc = proc
        self.queue = queue
        self.cond = threading.Condition()
        self.inflight: dict[str, _InFlight] = {}
        self.ready = False  # the process is up and may take tasks
        self.isolating = False  # a suspect is in flight alone
        # Suspects taken from the queue, each waiting to go alone to an otherwise idle worker.
        self.suspect_queue: deque[str] = deque()
        self.last_message = time.monotonic()
        self.closed = False
        self.pacer = RestartPacer()
        # A started, idle worker process that replaces `proc` at once when it dies; kept only
        # while this worker keeps dying (a restart within the pacer's window).
        self.spare = SpareWorker(
            index, lambda: WorkerProcess(index, proc.config_dict, proc.connection_dict, proc.ctx)
        )


class Controller:
    def __init__(
        self,
        config: Config,
        settings: ClientSettings,
        metrics: Metrics,
        *,
        watch_timeout: int = 300,
        start_method: str = "forkserver",
        lease_deadline: Callable[[], float | None] | None = None,
        event_interval: float = 60.0,
    ):
        self.config = config
        self.settings = settings
        self.metrics = metrics
        self.watch_timeout = watch_timeout
        self.ctx = worker_context(start_method)
        self.kube = Kube(settings, on_request=self._observe_request)
        self.cache = Cache(config.parent_uid_label)
        self.lease_deadline = lease_deadline or (lambda: None)
        b = config.backoff
        self._credentials = self.kube.connection()
        config_dict, connection_dict = config.to_dict(), self._credentials.to_dict()
        self.slots = [
            _Slot(
                i,
                WorkerProcess(i, config_dict, connection_dict, self.ctx),
                WorkQueue(
                    backoff=Backoff(b.initial_seconds, b.max_seconds, b.multiplier, b.jitter)
                ),
            )
            for i in range(config.workers)
        ]
        self.queues = [s.queue for s in self.slots]
        self.capacity = config.in_flight_per_worker
        self.events = EventRecorder(
            self.kube,
            f"operatord-{config.name}",
            interval=event_interval,
            metrics=metrics,
            guard=self._check_fence,
        )
        self.informers: list[Informer] = []
        self.synced = threading.Event()
        self.stopping = threading.Event()
        self.stopped = threading.Event()
        self.heartbeats = [
            Heartbeat(f"dispatcher {i}", max_age=config.handler_timeout_seconds + 90)
            for i in range(config.workers)
        ]
        self._threads: list[threading.Thread] = []
        # uid -> consecutive results whose handler still changed children.
        self._write_streak: dict[str, int] = {}
        # uid -> "changed while in flight"; guarded by _inflight_lock.
        self._inflight: dict[str, bool] = {}
        self._inflight_lock = threading.Lock()
        # Parents that were in flight on a worker that died holding several.
        self.suspects: set[str] = set()
        self.parent_resource: Resource | None = None
        self.child_resources: list[Resource] = []
        self.related = RelatedTypes(config, self._enqueue_related)
        self._frozen_at: float | None = None
        # A worker holding parents and silent for this long is considered hung.
        self.task_deadline = config.handler_timeout_seconds + 60
        # Replica shards (sharding.shards > 1). `owned` and `draining` change under
        # _inflight_lock, so a dispatch and a drain never miss each other.
        self.shard_count = config.shards
        self.sharded = self.shard_count > 1
        self.owned: set[int] = set()
        self.draining: set[int] = set()
        self.shard_deadline: Callable[[int], float] = lambda k: 0.0
        self._generation = 0
        self._rewatch_wanted = threading.Event()
        self._core_informers: list[Informer] = []
        self._related_informers: list[Informer] = []

    # ---- observation --------------------------------------------------------------------

    def _observe_request(self, verb: str, code: int, seconds: float) -> None:
        self.metrics.inc("api_requests_total", {"verb": verb, "code": str(code or "error")})
        self.metrics.observe("api_request_duration_seconds", seconds, {"verb": verb})

    def _observe_informer(self, what: str, resource: str, label: str) -> None:
        if what == "event":
            self.metrics.inc("watch_events_total", {"resource": resource, "type": label})
        else:
            self.metrics.inc("watch_restarts_total", {"resource": resource, "reason": label})

    def readiness(self) -> str | None:
        if not self.synced.is_set():
            pending = [i.name for i in self.informers if not i.synced.is_set()]
            return "caches not synced: " + (", ".join(pending) or "starting")
        dead = [s.index for s in self.slots if not s.proc.alive()]
        if dead:
            return f"workers not running: {dead}"
        return None

    def liveness(self) -> str | None:
        if self.stopping.is_set():
            return None
        for hb in self.heartbeats:
            problem = hb.check()
            if problem:
                return problem
        return None

    # ---- lifecycle ----------------------------------------------------------------------

    def _resolve(self, api_version: str, kind: str) -> Resource:
        delay = 0.2
        while not self.stopping.is_set():
            try:
                return self.kube.resource(api_version, kind)
            except ApiError as exc:
                log.warning(
                    "type not served yet", api_version=api_version, kind=kind, error=str(exc)
                )
                self.stopping.wait(delay)
                delay = min(delay * 2, 10)
        raise RuntimeError("stopped")

    def start(self) -> None:
        """Start workers, informers and dispatchers; returns at once (work runs in threads)."""
        t = threading.Thread(target=self._start, name="controller-start", daemon=True)
        t.start()
        self._threads.append(t)

    def _start(self) -> None:
        cfg = self.config
        # The state gauges are computed when scraped (the shard gauges walk every cached
        # parent: only as often as Prometheus asks, and never stale).
        self.metrics.before_scrape(self._refresh_gauges)
        t = threading.Thread(target=self._housekeeping, name="housekeeping", daemon=True)
        t.start()
        self._threads.append(t)
        self.parent_resource = self._resolve(cfg.parent.api_version, cfg.parent.kind)
        self.child_resources = [self._resolve(c.api_version, c.kind) for c in cfg.children]
        self.related.resolve(self._resolve)
        starters = [
            threading.Thread(
                target=self._start_slot, args=(slot,), name=f"start-worker-{slot.index}"
            )
            for slot in self.slots
        ]
        for t in starters:  # workers import the handler in parallel
            t.start()
        for t in starters:
            t.join()
        if self.sharded:  # the parent and child informers follow the held shards
            self._core_informers = []
            t = threading.Thread(target=self._rewatch_loop, name="rewatch", daemon=True)
            t.start()
            self._threads.append(t)
        else:
            self._core_informers = self._make_core_informers()
        self._related_informers = self.related.informers(
            self.kube, watch_timeout=self.watch_timeout, observe=self._observe_informer
        )
        self.informers = self._core_informers + self._related_informers
        for inf in self.informers:
            inf.start()
        for slot in self.slots:
            for target, name in (
                (self._dispatch_loop, "dispatch"),
                (self._receive_loop, "receive"),
            ):
                t = threading.Thread(
                    target=target, args=(slot,), name=f"{name}-{slot.index}", daemon=True
                )
                t.start()
                self._threads.append(t)
        while not self.stopping.is_set():
            if all(inf.synced.wait(0.2) for inf in self.informers):
                break
        if not self.stopping.is_set():
            # The cache is acyclic JSON data that reference counting frees: keep the cyclic
            # collector from walking all of it on every full collection (a pause that grows
            # with the number of cached objects).
            gc.freeze()
            self._frozen_at = time.monotonic()
            self.synced.set()
            log.info("caches synced", parents=self.cache.parent_count())

    def _make_core_informers(self, owned: frozenset[int] | None = None) -> list[Informer]:
        """The parent informer and one informer per child type. ``owned``: the held replica
        shards (parents listed with their shardSelector; callbacks filtered by shard and
        dropped once a newer set of informers replaced these)."""
        cfg = self.config
        assert self.parent_resource is not None, "resolved before informers are made"
        selector = f"{cfg.managed_by_label}={cfg.name},{cfg.parent_uid_label}"
        on_parent_list, on_parent_event = self._on_parent_list, self._on_parent_event
        on_child_list = self._on_child_list
        on_child_event = lambda _res, etype, obj: self._on_child_event(etype, obj)  # noqa: E731
        shard_selector = None
        if owned is not None:
            gen = self._generation
            shard_selector = range_selector(owned, self.shard_count)
            on_parent_list, on_parent_event, on_child_list, on_child_event = self._shard_filters(
                gen, owned
            )
        informers = [
            Informer(
                self.kube,
                self.parent_resource,
                namespace=cfg.namespace,
                on_list=on_parent_list,
                on_event=on_parent_event,
                watch_timeout=self.watch_timeout,
                observe=self._observe_informer,
                shard_selector=shard_selector,
            )
        ]
        for res in self.child_resources:
            informers.append(
                Informer(
                    self.kube,
                    res,
                    namespace=cfg.namespace,
                    label_selector=selector,
                    on_list=functools.partial(on_child_list, res),
                    on_event=functools.partial(on_child_event, res),
                    watch_timeout=self.watch_timeout,
                    observe=self._observe_informer,
                )
            )
        return informers

    # ---- replica shards -----------------------------------------------------------------

    def replica_shard(self, uid: str) -> int:
        """The replica shard of a parent uid (0 when not sharded)."""
        return _shard_of_cached(uid, self.shard_count)

    def _shard_filters(self, gen: int, owned: frozenset[int]) -> tuple[Any, Any, Any, Any]:
        """Informer callbacks that keep only objects of the ``owned`` shards (children: by
        their parent-uid label) and do nothing once informers of a newer generation exist."""
        label = self.config.parent_uid_label
        count = self.shard_count
        parent_key = self.parent_resource.key if self.parent_resource else "parent"

        def filtered(items: list[dict], uid_of: Callable[[dict], str], resource: str) -> list[dict]:
            out = [i for i in items if _shard_of_cached(uid_of(i) or "", count) in owned]
            if len(out) != len(items):
                self.metrics.inc(
                    "shard_filtered_objects_total", {"resource": resource}, len(items) - len(out)
                )
            return out

        def parent_uid(obj: dict) -> str:
            return (obj.get("metadata") or {}).get("uid") or ""

        def child_uid(obj: dict) -> str:
            return ((obj.get("metadata") or {}).get("labels") or {}).get(label) or ""

        def parent_list(items: list[dict]) -> None:
            if gen == self._generation:
                self._on_parent_list(filtered(items, parent_uid, parent_key))

        def parent_event(etype: str, obj: dict) -> None:
            if gen == self._generation and filtered([obj], parent_uid, parent_key):
                self._on_parent_event(etype, obj)

        def child_list(res: Resource, items: list[dict]) -> None:
            if gen == self._generation:
                self._on_child_list(res, filtered(items, child_uid, res.key))

        def child_event(res: Resource, etype: str, obj: dict) -> None:
            if gen == self._generation and filtered([obj], child_uid, res.key):
                self._on_child_event(etype, obj)

        return parent_list, parent_event, child_list, child_event

    def add_shard(self, k: int) -> None:
        """Start syncing the parents of replica shard ``k`` (its lease is ours)."""
        with self._inflight_lock:
            self.owned.add(k)
            self.draining.discard(k)
        log.info("syncing shard", shard=k, owned=sorted(self.owned))
        self._rewatch_wanted.set()

    def remove_shard(self, k: int) -> None:
        """Stop syncing shard ``k`` and forget its parents (released or lost)."""
        with self._inflight_lock:
            self.owned.discard(k)
            self.draining.discard(k)
        for uid in self.cache.parent_uids():
            if self.replica_shard(uid) == k:
                parent = self.cache.parent(uid)
                if parent is not None:
                    self.cache.delete_parent(parent)
                self._forget(uid)
        self.metrics.set("shard_parents", 0, {"shard": str(k)})
        self.metrics.set("shard_queue_depth", 0, {"shard": str(k)})
        log.info("stopped syncing shard", shard=k, owned=sorted(self.owned))
        self._rewatch_wanted.set()

    def drain_shard(self, k: int, timeout: float) -> bool:
        """Stop dispatching shard ``k`` and wait until none of its syncs is in flight.

        True: drained (the shard stays undispatched until `add_shard` or `remove_shard`).
        False after ``timeout``: dispatching resumes."""
        with self._inflight_lock:
            self.draining.add(k)
        deadline = time.monotonic() + timeout
        while True:
            with self._inflight_lock:
                busy = sum(1 for uid in self._inflight if self.replica_shard(uid) == k)
            if not busy:
                return True
            if time.monotonic() >= deadline or self.stopping.wait(0.05):
                break
        with self._inflight_lock:
            self.draining.discard(k)
        log.warning("shard did not drain in time", shard=k, in_flight=busy)
        return False

    def _rewatch_loop(self) -> None:
        while not self.stopping.is_set():
            if not self._rewatch_wanted.wait(0.5):
                continue
            if self.stopping.wait(0.1):  # coalesce changes that come together
                return
            self._rewatch_wanted.clear()
            try:
                self._rewatch()
            except Exception:  # noqa: BLE001 - retried on the next change
                log.exception("re-watching the held shards failed")

    def _rewatch(self) -> None:
        """Replace the parent and child informers by ones for the shards held now: child
        informers first, and the parent informer only once they listed, so no parent of a new
        shard is dispatched without its children in the cache."""
        with self._inflight_lock:
            owned = frozenset(self.owned)
        self._generation += 1
        old = self._core_informers
        new = self._make_core_informers(owned) if owned else []
        for inf in new[1:]:
            inf.start()
        while not self.stopping.is_set() and not all(i.synced.wait(0.2) for i in new[1:]):
            pass
        for inf in new[:1]:
            inf.start()
        self._core_informers = new
        self.informers = new + self._related_informers
        for inf in old:
            inf.stop()
        if not owned:  # nothing is listed any more: nothing may stay cached
            self._on_parent_list([])
            for res in self.child_resources:
                self._on_child_list(res, [])
        log.info(
            "watching held shards",
            shards=sorted(owned),
            selector=new[0].shard_selector if new else "",
        )

    def _start_slot(self, slot: _Slot) -> None:
        if self._adopt_spare(slot):
            return
        delay = 0.5
        while not self.stopping.is_set():
            try:
                ready = slot.proc.start()
            except WorkerGone as exc:
                log.error("worker failed to start", worker=slot.index, error=str(exc))
                slot.proc.kill()
                self.stopping.wait(delay)
                delay = min(delay * 2, 30)
                continue
            self.metrics.apply(ready.metrics)
            with slot.cond:
                slot.last_message = time.monotonic()
                slot.ready = True
                slot.cond.notify_all()
            return

    def _adopt_spare(self, slot: _Slot) -> bool:
        """Replace the slot's process by its spare, if it has a live one; brought up to date
        with the current credentials and lease fences first."""
        spare = slot.spare.take()
        if spare is None:
            return False
        try:
            if not spare.alive():
                raise WorkerGone("the spare worker is gone")
            spare.send(protocol.Credentials(self._credentials.headers))
            if self.sharded:
                for k in sorted(self.owned):
                    spare.send(protocol.LeaseUpdate(self.shard_deadline(k), k))
            else:
                spare.send(protocol.LeaseUpdate(self.lease_deadline()))
        except WorkerGone as exc:
            log.warning(
                "spare worker unusable; starting a fresh one", worker=slot.index, error=str(exc)
            )
            spare.kill()
            return False
        slot.proc = spare
        log.info("spare worker took over", worker=slot.index, pid=spare.pid)
        with slot.cond:
            slot.last_message = time.monotonic()
            slot.ready = True
            slot.cond.notify_all()
        return True

    def _prepare_spare(self, slot: _Slot) -> None:
        """Start a spare for ``slot`` in the background, unless it has one (or one starting)."""
        if not (slot.closed or self.stopping.is_set()):
            slot.spare.prepare()

    def _retire_spares(self) -> None:
        """Stop the spares of workers that stopped dying."""
        for slot in self.slots:
            if slot.spare.ready and slot.pacer.quiet():
                slot.spare.retire()

    def _drop_spares(self, kill: bool) -> None:
        for slot in self.slots:
            slot.spare.close(kill=kill)

    def stop(self, drain_timeout: float = 30.0) -> None:
        """Stop dispatching, wait for in-flight syncs (bounded), stop workers and informers."""
        self.stopping.set()
        for inf in self.informers:
            inf.stop()
        deadline = time.monotonic() + drain_timeout
        for q in self.queues:
            q.drain(max(deadline - time.monotonic(), 0))
        for slot in self.slots:
            slot.closed = True
            with slot.cond:
                slot.cond.notify_all()
            slot.proc.request_stop()  # its receiver ends on the pipe's EOF, not a poll timeout
        for t in self._threads:
            t.join(max(deadline - time.monotonic(), 0.1))
        for slot in self.slots:
            slot.proc.stop()
        self._drop_spares(kill=False)
        self.events.flush(max(deadline - time.monotonic(), 0.5))
        self.events.stop()
        self.kube.close()
        self.stopped.set()

    # ---- events into the queues -----------------------------------------------------------

    def _queue_for(self, uid: str) -> WorkQueue[str]:
        return self.queues[shard_for(uid, len(self.queues))]

    def enqueue(self, uid: str) -> None:
        """Queue a sync of ``uid`` because its state changed.

        While the parent is being synced, the change is only noted: when the sync ends, it is
        queued again unless every change seen meanwhile was the echo of the sync's own writes.
        """
        if self.cache.parent(uid) is None:
            return
        with self._inflight_lock:
            if uid in self._inflight:
                self._inflight[uid] = True
                return
        self._queue_for(uid).add(uid)

    def _enqueue_related(self, uids: set[str]) -> None:
        """Queue the parents whose related objects changed. A parent in flight is marked dirty
        in its queue, so it syncs again after its running sync (which saw the old objects)."""
        for uid in uids:
            if self.cache.parent(uid) is not None:
                self._queue_for(uid).add(uid)

    def _on_parent_list(self, items: list[dict]) -> None:
        changed, removed = self.cache.replace_parents(items)
        for uid in removed:
            self._forget(uid)
        for uid in changed:
            self.enqueue(uid)

    def _on_parent_event(self, etype: str, obj: dict) -> None:
        uid = obj["metadata"].get("uid")
        if etype == "DELETED":
            self.cache.delete_parent(obj)
            self._forget(uid)
        elif self.cache.upsert_parent(obj):
            self.enqueue(uid)

    def _forget(self, uid: str) -> None:
        """Drop everything kept about a parent that is gone."""
        self._queue_for(uid).discard(uid)
        self._write_streak.pop(uid, None)
        self.suspects.discard(uid)
        self.events.forget(uid)
        self.related.forget(uid)

    def _on_child_list(self, res: Resource, items: list[dict]) -> None:
        for uid in self.cache.replace_children(res.api_version, res.kind, items):
            self.enqueue(uid)

    def _on_child_event(self, etype: str, obj: dict) -> None:
        if etype == "DELETED":
            affected = self.cache.delete_child(obj)
        else:
            affected = self.cache.upsert_child(obj)
        for uid in affected:
            self.enqueue(uid)

    # ---- the lease fence ------------------------------------------------------------------

    def _fence_ok(self) -> bool:
        if self.sharded:
            return True  # checked per parent, against its shard's lease, in _send
        valid = self.lease_deadline()
        return valid is None or time.monotonic() < valid

    def _check_fence(self, parent: dict) -> None:
        """Raises unless this replica may still write about ``parent``: the leader lease, or,
        sharded, the lease of the parent's own shard, is fresh."""
        if self.sharded:
            uid = (parent.get("metadata") or {}).get("uid") or ""
            if time.monotonic() >= self.shard_deadline(self.replica_shard(uid)):
                raise RuntimeError("the lease of the parent's shard is not held")
            return
        if not self._fence_ok():
            raise RuntimeError("the lease may have expired")

    def update_lease(self, valid_until: float | None, shard: int | None = None) -> None:
        """Tell every worker that the lease (of replica ``shard``) was renewed (writes are
        fenced at ``valid_until``)."""
        for slot in self.slots:
            if slot.ready:
                try:
                    slot.proc.send(protocol.LeaseUpdate(valid_until, shard))
                except WorkerGone:
                    pass  # its receiver replaces it

    def refresh_credentials(self) -> None:
        """Push the leader's current auth headers to every worker when they changed (tokens
        rotate; workers never load the kubeconfig themselves)."""
        current = self.kube.connection()
        if current.headers == self._credentials.headers:
            return
        self._credentials = current
        connection_dict = current.to_dict()
        for slot in self.slots:
            slot.proc.connection_dict = connection_dict
            if slot.ready:
                try:
                    slot.proc.send(protocol.Credentials(current.headers))
                except WorkerGone:
                    pass  # its receiver replaces it (with the new connection)

    def kill_workers(self) -> None:
        """Stop at once: no dispatch, every worker killed (lost leadership)."""
        self.stopping.set()
        for slot in self.slots:
            slot.closed = True
            slot.proc.kill()
        self._drop_spares(kill=True)

    # ---- dispatch -------------------------------------------------------------------------

    def _dispatch_loop(self, slot: _Slot) -> None:
        queue = slot.queue
        hb = self.heartbeats[slot.index]
        while not self.synced.is_set() and not self.stopping.is_set():
            hb.beat()
            self.synced.wait(0.5)
        while True:
            hb.beat()
            with slot.cond:
                while not self._may_dispatch(slot):
                    if queue.shutting_down:
                        break
                    slot.cond.wait(0.5)
                    hb.beat()
                if queue.shutting_down:
                    while slot.suspect_queue:
                        queue.done(slot.suspect_queue.popleft())
                    return
                suspect = slot.suspect_queue.popleft() if slot.suspect_queue else None
            if suspect is not None:  # alone, now that nothing else is in flight
                self._send(slot, [suspect], isolate=True)
                continue
            item = queue.get(timeout=0.5)
            if item is None:
                continue  # (on shutdown the wait above releases what is held and returns)
            items = [item]
            with slot.cond:
                room = self.capacity - len(slot.inflight) - 1
            while room > 0 and len(items) < MAX_BATCH:
                more = queue.get(timeout=0)
                if more is None:
                    break
                items.append(more)
                room -= 1
            uids = []
            for it in items:
                self.metrics.observe("queue_wait_seconds", it.waited)
                if it.key in self.suspects:
                    with slot.cond:
                        slot.suspect_queue.append(it.key)
                else:
                    uids.append(it.key)
            if uids:
                self._send(slot, uids)

    def _may_dispatch(self, slot: _Slot) -> bool:
        """Called with slot.cond held."""
        if not slot.ready or slot.isolating or not self._fence_ok():
            return False
        if slot.suspect_queue:
            return not slot.inflight
        return len(slot.inflight) < self.capacity

    def _send(self, slot: _Slot, uids: list[str], isolate: bool = False) -> None:
        lease = self.lease_deadline()
        tasks = []
        held_back = False
        with slot.cond:
            if not slot.ready:  # the worker died after these were taken: they go back
                for uid in uids:
                    slot.queue.done(uid)
                    slot.queue.add(uid)
                return
            for uid in uids:
                parent, children = self.cache.snapshot(uid)
                if parent is None:  # deleted meanwhile
                    slot.queue.done(uid)
                    continue
                shard = None
                with self._inflight_lock:
                    if self.sharded:
                        shard = self.replica_shard(uid)
                        lease = self.shard_deadline(shard)
                        gone = shard not in self.owned
                        if gone or shard in self.draining or time.monotonic() >= lease:
                            shard = -1
                    if shard != -1:
                        self._inflight[uid] = False
                if shard == -1:  # not ours (any more), being released, or its lease is stale
                    slot.queue.done(uid)
                    if self.replica_shard(uid) in self.owned:
                        slot.queue.add_after(uid, 0.5)
                        held_back = True
                    continue
                slot.inflight[uid] = _InFlight(
                    uid, parent, self.cache.versions(uid), uid in self.suspects
                )
                tasks.append(
                    SyncTask(
                        uid,
                        parent,
                        children,
                        lease,
                        **self.related.task_fields(uid),
                        shard=shard,
                        retry=slot.queue.num_requeues(uid),
                    )
                )
            if not tasks:
                if held_back:
                    self.stopping.wait(0.05)
                return
            if isolate:
                slot.isolating = True
            try:
                slot.proc.send(protocol.Tasks(tuple(tasks)))
            except WorkerGone as exc:
                # Not delivered: they go back; the receiver sees the process die.
                log.warning("could not send tasks", worker=slot.index, error=str(exc))
                slot.isolating = False
                for task in tasks:
                    del slot.inflight[task.uid]
                    self._finish(slot, task.uid, None, again=True)

    # ---- results --------------------------------------------------------------------------

    def _receive_loop(self, slot: _Slot) -> None:
        while not slot.closed:
            try:
                self._receive_once(slot)
            except Exception:  # noqa: BLE001 - the receiver must survive anything
                log.exception("receiving results failed", worker=slot.index)

    def _receive_once(self, slot: _Slot) -> None:
        try:
            msg = slot.proc.receive(0.5)
        except WorkerGone as exc:
            if not slot.closed:
                self._worker_died(slot, str(exc))
            return
        now = time.monotonic()
        if msg is None:
            with slot.cond:
                busy = bool(slot.inflight)
            if busy and now - slot.last_message > self.task_deadline:
                slot.proc.kill()
                self._worker_died(slot, f"silent for {self.task_deadline:g}s while busy")
            elif not busy:
                slot.last_message = now
            return
        slot.last_message = now
        if isinstance(msg, protocol.Results):
            self.metrics.apply(msg.metrics)
            if msg.exiting:  # no new tasks for a worker that is about to exit
                slot.proc.exiting = True
                with slot.cond:
                    slot.ready = False
            for result in msg.results:
                self._complete(slot, result)

    def _worker_died(self, slot: _Slot, reason: str) -> None:
        with slot.cond:
            victims = list(slot.inflight.values())
            slot.inflight.clear()
            slot.ready = False
            slot.isolating = False
        exiting = slot.proc.exiting
        code = slot.proc.exitcode()
        slot.proc.kill()
        running = slot.proc.running_calls()  # final: the process is gone
        self.metrics.inc("worker_restarts_total")
        culprits, suspects = _blame(victims, running, exiting)
        if exiting:
            log.warning(
                "worker exited after a handler timeout; restarting it and requeueing its parents",
                worker=slot.index,
                parents=len(victims),
            )
        elif not victims:
            log.error("worker died while idle; restarting it", worker=slot.index, exit_code=code)
        else:
            log.error(
                "worker lost; restarting it and requeueing its parents",
                worker=slot.index,
                error=reason,
                exit_code=code,
                parents=len(victims),
                culprits=len(culprits),
                suspects=len(suspects),
            )
        for v in victims:
            if v.uid in culprits:
                delay = slot.queue.add_rate_limited(v.uid)
                self.metrics.inc("retries_total")
                counter = "finalizes_total" if _finalizing(v.parent) else "syncs_total"
                self.metrics.inc(counter, {"result": "crash"})
                alone = (
                    "alone" if len(victims) == 1 else f"with {len(victims) - 1} others in flight"
                )
                message = (
                    f"the handler killed its worker process: it died (exit code {code}) while "
                    f"the handler ran for this parent ({alone}); retrying in {delay:.1f}s"
                )
                log.error(
                    "handler killed its worker", **self._parent_context(v.uid), exit_code=code
                )
                self.events.post(v.parent, "WorkerKilled", message)
            elif v.uid in suspects:
                self.suspects.add(v.uid)
            self._finish(slot, v.uid, None, again=v.uid not in culprits)
        if not self.stopping.is_set() and not slot.closed:
            delay = slot.pacer.next_delay()
            if delay > 0:
                self.metrics.inc("worker_restart_delay_seconds_total", value=delay)
                log.warning(
                    "worker restarts are being paced",
                    worker=slot.index,
                    delay=round(delay, 3),
                    recent_restarts=slot.pacer.recent,
                )
            self.stopping.wait(delay)
            self._start_slot(slot)
            self._prepare_spare(slot)

    def _complete(self, slot: _Slot, result: SyncResult) -> None:
        uid = result.uid
        with slot.cond:
            entry = slot.inflight.pop(uid, None)
            if entry is not None and entry.suspect:
                slot.isolating = False
            slot.cond.notify_all()
        if entry is None:
            return  # a result for a task this leader already gave up on
        if result.outcome != protocol.ABANDONED:
            self.suspects.discard(uid)
        if self.cache.parent(uid) is not None:
            self.related.record(uid, result.selection, entry.parent)
        expected = self._apply_written(uid, entry, result)
        queue = slot.queue
        streak = 0
        if result.outcome == protocol.OK and (result.children_changed or result.reselect):
            streak = self._write_streak.get(uid, 0) + 1
            self._write_streak[uid] = streak
        else:
            self._write_streak.pop(uid, None)
        step = protocol.next_step(result, streak_exceeded=streak > MAX_WRITE_STREAK)
        if step.forget:
            queue.forget(uid)
        if step.backoff:
            delay = queue.add_rate_limited(uid)
            self.metrics.inc("retries_total")
            if step.log == "not_converging":
                changing = protocol.describe_changes(result.changing)
                log.warning(
                    "children change on every sync; the handler does not converge, slowing down",
                    **self._parent_context(uid),
                    consecutive_writing_syncs=streak,
                    handler_runs=streak * result.handler_calls,
                    changing=changing,
                    retry_in=round(delay, 3),
                )
                self.events.post(
                    entry.parent,
                    "ChildrenNotConverging",
                    f"children change on every sync ({changing}): the desired state must "
                    "depend on the observed state only (no timestamps, random values or "
                    f"counters); syncing again only at the backoff pace (next in {delay:.1f}s)",
                )
            elif step.log == "unstable_selection":
                log.warning(
                    "related() returns a different selection on every sync; it must depend on "
                    "the parent only, slowing down",
                    **self._parent_context(uid),
                    retry_in=round(delay, 3),
                )
            elif step.log == "failed":
                log.info(
                    "sync failed; backing off",
                    **self._parent_context(uid),
                    error=result.error,
                    retry_in=round(delay, 3),
                    failures=queue.num_requeues(uid),
                )
        if step.after is not None:
            queue.add_after(uid, float(step.after))
        if step.resync and self.config.resync_seconds > 0:
            queue.add_after(uid, self.config.resync_seconds * random.uniform(0.9, 1.1), lane=RESYNC)
        if result.outcome == protocol.ERROR:
            reason = "FinalizeFailed" if _finalizing(entry.parent) else "SyncFailed"
            if result.error_kind == "conflict":
                reason = "ChildNameConflict"
            self.events.post(entry.parent, reason, result.error or "")
        for type_, reason, message in result.events:
            self.events.post(entry.parent, reason, message, type_)
        self._finish(slot, uid, expected, again=step.again or expected is None)

    def _finish(self, slot: _Slot, uid: str, expected: dict | None, again: bool) -> None:
        """Release ``uid`` from the queue's processing state and sync it again when ``again``
        or when something other than our own writes changed it meanwhile (``expected``: the
        versions our writes left; None: unknown)."""
        with self._inflight_lock:
            changed = self._inflight.pop(uid, False)
        slot.queue.done(uid)
        if again or (changed and (expected is None or self.cache.versions(uid) != expected)):
            slot.queue.add(uid)

    def _apply_written(self, uid: str, entry: _InFlight, result: SyncResult) -> dict | None:
        """Put what the worker wrote into the cache; returns the versions the cache should hold
        if nothing but these writes happened meanwhile (None: a re-sync is due)."""
        parent_key = child_key(entry.parent)
        expected = dict(entry.expected)
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
        if written_parent is not None and _content(written_parent) != _content(entry.parent):
            # Our write returned a parent that someone else changed after our snapshot (a status
            # patch is not conditional): its watch event is now "old news" for the cache, so
            # the change must be synced from here.
            return None
        return expected

    def _parent_context(self, uid: str) -> dict:
        """The log fields that identify a parent and its worker (as the worker's own lines)."""
        meta = (self.cache.parent(uid) or {}).get("metadata") or {}
        return {
            "parent_namespace": meta.get("namespace"),
            "parent_name": meta.get("name"),
            "parent_uid": uid,
            "worker": shard_for(uid, len(self.queues)),
        }

    # ---- housekeeping ---------------------------------------------------------------------

    def _housekeeping(self) -> None:
        pushed: float | None = None
        pushed_shards: dict[int, float | None] = {}
        tick = 0
        while True:
            tick += 1
            try:
                if tick % 2:  # every 0.5 s
                    self.refresh_credentials()
                if self.sharded:  # each held shard's renewals move its own fence
                    for k in sorted(self.owned):
                        shard_until = self.shard_deadline(k)
                        if shard_until != pushed_shards.get(k):
                            self.update_lease(shard_until, k)
                            pushed_shards[k] = shard_until
                else:
                    valid_until = self.lease_deadline()
                    if valid_until != pushed:  # renewed: move the workers' write fence
                        self.update_lease(valid_until)
                        pushed = valid_until
                self._frozen_at = refreeze_heap(self._frozen_at)
                self._retire_spares()
            except Exception:  # noqa: BLE001 - housekeeping must not kill the loop
                log.exception("housekeeping failed")
            if self.stopping.wait(0.25):  # lease renewals reach the workers within this
                return

    def _refresh_gauges(self) -> None:
        if not self.stopped.is_set():
            self.update_gauges()

    def update_gauges(self) -> None:
        m = self.metrics
        for i, q in enumerate(self.queues):
            m.set("queue_depth", len(q), {"worker": str(i)})
        m.set("parents_backing_off", sum(len(q.backoff) for q in self.queues))
        deleting = self.cache.deletions()
        m.set("parents_deleting", len(deleting))
        m.set(
            "parent_deletion_max_age_seconds",
            max(0.0, time.time() - min(deleting, default=time.time())),
        )
        m.set("workers_alive", sum(1 for s in self.slots if s.proc.alive()))
        for s in self.slots:
            m.set("in_flight", len(s.inflight), {"worker": str(s.index)})
        if self.sharded:
            per_shard = dict.fromkeys(self.owned, 0)
            for uid in self.cache.parent_uids():
                k = self.replica_shard(uid)
                if k in per_shard:
                    per_shard[k] += 1
            for k, n in per_shard.items():
                m.set("shard_parents", n, {"shard": str(k)})
            depth = dict.fromkeys(self.owned, 0)
            for q in self.queues:
                for uid in q.ready_keys():
                    k = self.replica_shard(uid)
                    if k in depth:
                        depth[k] += 1
            for k, n in depth.items():
                m.set("shard_queue_depth", n, {"shard": str(k)})
            parent_informer = self._core_informers[:1]
            m.set("shard_server_side", int(any(i.server_sharded for i in parent_informer)))
        counts = self.cache.counts()
        if self.parent_resource is not None:
            m.set(
                "cached_objects", counts.get("parents", 0), {"resource": self.parent_resource.key}
            )
        for res in self.child_resources:
            m.set(
                "cached_objects",
                counts.get(f"{res.api_version}/{res.kind}", 0),
                {"resource": res.key},
            )
        for res, count in self.related.counts():  # a type also watched as child: both caches
            count += (
                counts.get(f"{res.api_version}/{res.kind}", 0) if res in self.child_resources else 0
            )
            m.set("cached_objects", count, {"resource": res.key})


def refreeze_heap(frozen_at: float | None, every: float = GC_REFREEZE_SECONDS) -> float | None:
    """Every ``every`` seconds after ``frozen_at`` (a monotonic time; None: never frozen, do
    nothing): one full collection over the whole heap, frozen part included (cycles that died
    after being frozen are freed), then freeze again. Returns the new freeze time.

    Between these, the collector only walks what was allocated since the last freeze: one
    pause per period instead of pauses that grow with the cache on every full collection.
    """
    if frozen_at is None or time.monotonic() - frozen_at < every:
        return frozen_at
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return time.monotonic()


def _blame(
    victims: list[_InFlight], running: list[str | None], exiting: bool
) -> tuple[set[str], set[str]]:
    """(culprits, suspects) among the parents a dead worker held: culprits are charged a
    crash, suspects are dispatched alone until one of their syncs finishes, the others are
    requeued as if nothing happened.

    ``running``: the calls its `CallBoard` showed running (None: unknown). One running call of
    a held parent is the culprit; several (an async handler) are the suspects. Without a
    running call that names held parents, a worker that held one parent blames it, and one that
    held several makes them all suspects. A worker that announced its exit (``exiting``, a
    handler stuck in a call) blames nobody."""
    if exiting or not victims:
        return set(), set()
    held = {v.uid for v in victims}
    if running and all(uid in held for uid in running):
        if len(running) == 1:
            return {running[0]}, set()  # type: ignore[arg-type]
        return set(), {uid for uid in running if uid is not None}
    if len(victims) == 1:
        return held, set()
    return set(), held


def _finalizing(parent: dict) -> bool:
    return bool((parent.get("metadata") or {}).get("deletionTimestamp"))


@functools.lru_cache(maxsize=1 << 17)
def _shard_of_cached(uid: str, shards: int) -> int:
    return _replica_shard_of(uid, shards)
