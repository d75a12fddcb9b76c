"""The worker pool: the leader's side of the worker processes, shared by every controller.

Guarantees:
- ``workers`` slots, each one worker process. A parent is dispatched to the slot its uid hashes
  to (`sharding.shard_for`), by whichever controller it belongs to; a slot holds up to its
  in-flight limit of parents at once (``inFlightPerWorker``, or with ``inFlightAdaptive`` a
  limit between ADAPTIVE_FLOOR and it that follows the worker's API latency,
  `inflight.InFlightLimit`), and one controller at most its ``limit`` of them.
- Controllers never share a queue: each offers the pool one queue per slot (a `Feed`). A
  slot's dispatcher gives each free place to the controller with ready work that holds the
  fewest parents on that worker (ties rotate), so a controller with a storm of work cannot
  starve another: a controller with nothing in flight gets the worker's next free place, and
  controllers with steady work converge on equal shares of it.
- Tasks go out in batches (at most MAX_BATCH per message); results are handed back to the
  controller that sent the task (`Feed.completed`).
- A worker that dies, or stays silent past its deadline while holding parents, is replaced and
  every parent it held goes back to its controller: nothing is lost. Whose handler call was
  running when it died is read from its `protocol.CallBoard`: exactly one call of a held
  parent names the culprit (`Feed.crashed`: charged a failure) while every other parent it
  held is returned uncharged (`Feed.returned`). Several running calls (an async handler) make
  those parents *suspects*; with no usable mark, a worker that held one parent blames it and
  one that held several makes them all suspects. A suspect is dispatched alone until one of
  its syncs finishes, so a parent that keeps killing its worker is found while the others
  proceed. Parents a worker gives back because its handler is stuck are returned uncharged.
- Replacements are paced per worker (`supervisor.RestartPacer`). After a death the slot keeps
  a started spare process, adopted at once by the next replacement (brought up to date with
  the current credentials and lease fences first), stopped after a minute without deaths.
- Nothing is dispatched while the fence (``fence_ok()``) is down; lease renewals
  (`update_lease`) and rotated credentials (`refresh_credentials`) reach every worker.
- `stop()` stops taking work, lets in-flight syncs finish (bounded) and stops the workers;
  `kill()` kills them at once.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from operatord import protocol
from operatord.health import Heartbeat
from operatord.inflight import InFlightLimit
from operatord.protocol import SyncResult, SyncTask
from operatord.queue import Item, WorkQueue
from operatord.sharding import shard_for
from operatord.supervisor import RestartPacer, SpareWorker, WorkerGone, WorkerProcess

if TYPE_CHECKING:
    from operatord.metrics import Metrics

log = structlog.get_logger("operatord.pool")

# At most this many tasks go to a worker in one message.
MAX_BATCH = 64
# The lowest in-flight limit an adaptive worker goes down to.
ADAPTIVE_FLOOR = 2


class Feed(Protocol):
    """What a controller offers the pool."""

    name: str
    limit: int  # parents of this controller one worker may hold at once

    def queue(self, slot: int) -> WorkQueue[str]:
        """The controller's queue for ``slot``."""
        ...

    def task(self, uid: str, slot: int) -> SyncTask | None:
        """The task for ``uid`` (taken from its queue), marked in flight; None when it must
        not be sent now (the controller has settled its queue state)."""
        ...

    def completed(self, result: SyncResult, parent: dict, slot: int) -> None:
        """The worker answered the task for ``result.uid`` (``parent``: the task's snapshot)."""
        ...

    def returned(self, uid: str, slot: int) -> None:
        """The task for ``uid`` came back without a verdict: sync it again, uncharged."""
        ...

    def crashed(
        self, uid: str, parent: dict, slot: int, exit_code: int | None, others: int
    ) -> None:
        """The handler call for ``uid`` killed its worker (``others``: other parents it held):
        charge it a failure."""
        ...


@dataclass(slots=True)
class InFlight:
    uid: str
    feed: Feed
    parent: dict  # the snapshot the task carried
    suspect: bool


class Slot:
    """One worker: its process and the parents it holds."""

    def __init__(self, index: int, proc: WorkerProcess, limit: InFlightLimit):
        self.index = index
        self.proc = proc
        self.cond = threading.Condition()
        self.inflight: dict[str, InFlight] = {}
        self.per_feed: dict[str, int] = {}  # controller -> parents of it in flight here
        self.ready = False  # the process is up and may take tasks
        self.isolating = False  # a suspect is in flight alone
        # Suspects taken from their queues, each waiting to go alone to an idle worker.
        self.suspect_queue: deque[tuple[Feed, str]] = deque()
        self.last_message = time.monotonic()
        self.closed = False
        self.pacer = RestartPacer()
        # Set whenever one of this slot's queues gets ready work (or an earlier due time).
        self.wake = threading.Event()
        self.turn = 0  # which feed breaks ties first in the next `_take` (rotates)
        self.limit = limit  # how many parents it may hold now
        self.spare = SpareWorker(
            index, lambda: WorkerProcess(index, proc.config_dict, proc.connection_dict, proc.ctx)
        )


class WorkerPool:
    def __init__(
        self,
        config_dict: dict,
        connection_dict: dict,
        ctx: Any,
        *,
        workers: int,
        capacity: int,
        adaptive: bool = True,
        task_deadline: float,
        metrics: Metrics,
        fence_ok: Callable[[], bool],
        lease_updates: Callable[[], list[protocol.LeaseUpdate]],
        credentials: Callable[[], dict],
    ) -> None:
        self.metrics = metrics
        self.capacity = capacity
        self.task_deadline = task_deadline
        self.fence_ok = fence_ok
        self.lease_updates = lease_updates
        self.credentials = credentials
        floor = min(ADAPTIVE_FLOOR, capacity) if adaptive else capacity  # fixed unless adaptive
        self.slots = [
            Slot(
                i,
                WorkerProcess(i, config_dict, connection_dict, ctx),
                InFlightLimit(capacity, floor),
            )
            for i in range(workers)
        ]
        self.feeds: list[Feed] = []
        self.heartbeats = [
            Heartbeat(f"dispatcher {i}", max_age=task_deadline + 30) for i in range(workers)
        ]
        # Parents that were in flight on a worker that died holding several.
        self.suspects: set[str] = set()
        self.stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    # ---- wiring ---------------------------------------------------------------------------

    def waker(self, slot: int) -> Callable[[], None]:
        """The ``on_ready`` hook for a controller's queue of ``slot``."""
        return self.slots[slot].wake.set

    def wake(self) -> None:
        """Wake every dispatcher now (the fence went up: no waiting for its next poll)."""
        for slot in self.slots:
            slot.wake.set()
            with slot.cond:
                slot.cond.notify_all()

    def add_feed(self, feed: Feed) -> None:
        self.feeds.append(feed)

    def slot_of(self, uid: str) -> int:
        return shard_for(uid, len(self.slots))

    # ---- lifecycle ------------------------------------------------------------------------

    def start_workers(self) -> None:
        """Start every worker process (in parallel: each imports the handlers); returns once
        all are up (or stopping)."""
        starters = [
            threading.Thread(target=self._start_slot, args=(s,), name=f"start-worker-{s.index}")
            for s in self.slots
        ]
        for t in starters:
            t.start()
        for t in starters:
            t.join()

    def start_dispatch(self, synced: threading.Event) -> None:
        """Start each slot's dispatcher (it waits for ``synced``) and receiver."""
        for slot in self.slots:
            for target, name in (
                (self._dispatch_loop, "dispatch"),
                (self._receive_loop, "receive"),
            ):
                t = threading.Thread(
                    target=target,
                    args=(slot, synced) if name == "dispatch" else (slot,),
                    name=f"{name}-{slot.index}",
                    daemon=True,
                )
                t.start()
                self._threads.append(t)

    def _start_slot(self, slot: Slot) -> None:
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

    def _adopt_spare(self, slot: Slot) -> bool:
        """Replace the slot's process by its spare, if it has a live one; brought up to date
        with the current credentials and lease fences first."""
        spare = slot.spare.take()
        if spare is None:
            return False
        try:
            if not spare.alive():
                raise WorkerGone("the spare worker is gone")
            spare.send(protocol.Credentials(self.credentials()))
            for update in self.lease_updates():
                spare.send(update)
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

    def retire_spares(self) -> None:
        """Stop the spares of workers that stopped dying."""
        for slot in self.slots:
            if slot.spare.ready and slot.pacer.quiet():
                slot.spare.retire()

    def stop(self, deadline: float) -> None:
        """Stop dispatching, wait (until the monotonic ``deadline``) for in-flight syncs, stop
        the workers."""
        self.stopping.set()
        for feed in self.feeds:
            for slot in self.slots:
                feed.queue(slot.index).drain(max(deadline - time.monotonic(), 0))
        for slot in self.slots:
            slot.closed = True
            slot.wake.set()
            with slot.cond:
                slot.cond.notify_all()
            slot.proc.request_stop()  # its receiver ends on the pipe's EOF, not a poll timeout
        for t in self._threads:
            t.join(max(deadline - time.monotonic(), 0.1))
        for slot in self.slots:
            slot.proc.stop()
        for slot in self.slots:
            slot.spare.close(kill=False)

    def kill(self) -> None:
        """Stop at once: no dispatch, every worker killed (lost leadership)."""
        self.stopping.set()
        for slot in self.slots:
            slot.closed = True
            slot.proc.kill()
        for slot in self.slots:
            slot.spare.close(kill=True)

    # ---- pushes to every worker -------------------------------------------------------------

    def update_lease(self, valid_until: float | None, shard: int | None = None) -> None:
        """Tell every worker that the lease (of replica ``shard``) was renewed."""
        for slot in self.slots:
            if slot.ready:
                try:
                    slot.proc.send(protocol.LeaseUpdate(valid_until, shard))
                except WorkerGone:
                    pass  # its receiver replaces it

    def push_credentials(self, headers: dict, connection_dict: dict) -> None:
        """Fresh auth headers for every worker (and for the ones started from now on)."""
        for slot in self.slots:
            slot.proc.connection_dict = connection_dict
            if slot.ready:
                try:
                    slot.proc.send(protocol.Credentials(headers))
                except WorkerGone:
                    pass  # its receiver replaces it (with the new connection)

    # ---- health and gauges ----------------------------------------------------------------

    def dead_workers(self) -> list[int]:
        return [s.index for s in self.slots if not s.proc.alive()]

    def liveness(self) -> str | None:
        if self.stopping.is_set():
            return None
        for hb in self.heartbeats:
            problem = hb.check()
            if problem:
                return problem
        return None

    def in_flight(self, uid: str) -> bool:
        slot = self.slots[self.slot_of(uid)]
        with slot.cond:
            return uid in slot.inflight

    def pids(self) -> dict[str, int]:
        """Worker index -> pid of each running worker process."""
        return {
            str(s.index): s.proc.pid
            for s in self.slots
            if s.proc.pid is not None and s.proc.alive()
        }

    def update_gauges(self) -> None:
        m = self.metrics
        m.set("workers_alive", sum(1 for s in self.slots if s.proc.alive()))
        for s in self.slots:
            m.set("in_flight", len(s.inflight), {"worker": str(s.index)})
            m.set("in_flight_limit", s.limit.limit, {"worker": str(s.index)})
            for f in self.feeds:  # per controller: the dashboard lists controllers by it
                m.set(
                    "queue_depth",
                    len(f.queue(s.index)),
                    {"worker": str(s.index), "controller": f.name},
                )

    # ---- dispatch -------------------------------------------------------------------------

    def _closed(self, slot: Slot) -> bool:
        return slot.closed or all(f.queue(slot.index).shutting_down for f in self.feeds)

    def _dispatch_loop(self, slot: Slot, synced: threading.Event) -> None:
        hb = self.heartbeats[slot.index]
        while not synced.is_set() and not self.stopping.is_set():
            hb.beat()
            synced.wait(0.5)
        while True:
            hb.beat()
            with slot.cond:
                while not self._may_dispatch(slot):
                    if self._closed(slot):
                        break
                    slot.cond.wait(0.5)
                    hb.beat()
                if self._closed(slot):
                    while slot.suspect_queue:
                        feed, uid = slot.suspect_queue.popleft()
                        feed.queue(slot.index).done(uid)
                    return
                suspect = slot.suspect_queue.popleft() if slot.suspect_queue else None
            if suspect is not None:  # alone, now that nothing else is in flight
                self._send(slot, [suspect], isolate=True)
                continue
            picked = self._take(slot)
            picks = []
            for feed, it in picked:
                self.metrics.observe("queue_wait_seconds", it.waited, {"controller": feed.name})
                if it.key in self.suspects:
                    with slot.cond:
                        slot.suspect_queue.append((feed, it.key))
                else:
                    picks.append((feed, it.key))
            if picks:
                self._send(slot, picks)

    def _room(self, slot: Slot, feed: Feed) -> int:
        """Called with slot.cond held."""
        return min(
            slot.limit.limit - len(slot.inflight), feed.limit - slot.per_feed.get(feed.name, 0)
        )

    def _take(self, slot: Slot) -> list[tuple[Feed, Item[str]]]:
        """Up to the slot's free room of ready parents, each place to the controller with ready
        work and room that holds the fewest parents here; a controller holding none here may
        take one place past the adaptive limit. Waits (up to 0.5 s, or until a queue has ready
        work or a result frees a place) when nothing could be taken."""
        feeds = self.feeds
        if len(feeds) == 1:  # one controller: block on its queue itself
            feed = feeds[0]
            with slot.cond:
                room = self._room(slot, feed)
            if room <= 0:
                with slot.cond:
                    slot.cond.wait(0.05)
                return []
            q = feed.queue(slot.index)
            item = q.get(timeout=0.5)
            if item is None:
                return []
            batch = [(feed, item)]
            while len(batch) < min(room, MAX_BATCH):
                more = q.get(timeout=0)
                if more is None:
                    break
                batch.append((feed, more))
            return batch
        slot.wake.clear()
        with slot.cond:
            busy = len(slot.inflight)
            limit = slot.limit.limit
            held = {f.name: slot.per_feed.get(f.name, 0) for f in feeds}
        out: list[tuple[Feed, Item[str]]] = []
        n = len(feeds)
        # Rotation breaks ties, so equally loaded controllers alternate between batches.
        order = [feeds[(slot.turn + k) % n] for k in range(n)]
        slot.turn = (slot.turn + 1) % n
        empty: set[str] = set()  # asked, nothing ready: not asked again in this call

        def has_room(f: Feed) -> bool:
            if f.name in empty or held[f.name] >= f.limit:
                return False
            taken = busy + len(out)
            # A controller holding nothing here may take one place past the adaptive limit
            # (never past inFlightPerWorker): it does not wait for another's parents to finish.
            return taken < limit or (held[f.name] == 0 and taken < self.capacity)

        while len(out) < MAX_BATCH:
            # Water-filling: the controller holding the fewest parents here goes next.
            candidates = [f for f in order if has_room(f)]
            if not candidates:
                break
            feed = min(candidates, key=lambda f: held[f.name])
            item = feed.queue(slot.index).get(timeout=0)
            if item is None:
                empty.add(feed.name)
                continue
            out.append((feed, item))
            held[feed.name] += 1
        if not out:
            # Only a controller that had room and nothing ready waits for its queue's due
            # time; one without room waits for a result (which sets ``wake``), not its queue.
            waits = [
                d
                for f in feeds
                if f.name in empty and (d := f.queue(slot.index).next_due()) is not None
            ]
            slot.wake.wait(min([0.5, *waits]))
        return out

    def _may_dispatch(self, slot: Slot) -> bool:
        """Called with slot.cond held."""
        if not slot.ready or slot.isolating or not self.fence_ok():
            return False
        if slot.suspect_queue:
            return not slot.inflight
        if len(self.feeds) > 1:  # `_take` applies the limit, with its one-place exemption
            return len(slot.inflight) < self.capacity
        return len(slot.inflight) < slot.limit.limit

    def _send(self, slot: Slot, picks: Sequence[tuple[Feed, str]], isolate: bool = False) -> None:
        tasks: list[SyncTask] = []
        with slot.cond:
            if not slot.ready:  # the worker died after these were taken: they go back
                for feed, uid in picks:
                    q = feed.queue(slot.index)
                    q.done(uid)
                    q.add(uid)
                return
            for feed, uid in picks:
                task = feed.task(uid, slot.index)
                if task is None:
                    continue
                slot.inflight[uid] = InFlight(uid, feed, task.parent, uid in self.suspects)
                slot.per_feed[feed.name] = slot.per_feed.get(feed.name, 0) + 1
                tasks.append(task)
            if not tasks:
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
                    entry = self._pop_locked(slot, task.uid)
                    if entry is not None:
                        entry.feed.returned(task.uid, slot.index)

    @staticmethod
    def _pop_locked(slot: Slot, uid: str) -> InFlight | None:
        entry = slot.inflight.pop(uid, None)
        if entry is not None:
            slot.per_feed[entry.feed.name] -= 1
        return entry

    # ---- results --------------------------------------------------------------------------

    def _receive_loop(self, slot: Slot) -> None:
        while not slot.closed:
            try:
                self._receive_once(slot)
            except Exception:  # noqa: BLE001 - the receiver must survive anything
                log.exception("receiving results failed", worker=slot.index)

    def _receive_once(self, slot: Slot) -> None:
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

    def _complete(self, slot: Slot, result: SyncResult) -> None:
        uid = result.uid
        with slot.cond:
            entry = self._pop_locked(slot, uid)
            if entry is not None and entry.suspect:
                slot.isolating = False
            slot.cond.notify_all()
        slot.wake.set()  # room for another parent
        if entry is None:
            return  # a result for a task this leader already gave up on
        slot.limit.observe(result.api_requests, result.api_seconds)
        if result.outcome != protocol.ABANDONED:
            self.suspects.discard(uid)
        entry.feed.completed(result, entry.parent, slot.index)

    def forget(self, uid: str) -> None:
        """A parent is gone: it is no suspect any more."""
        self.suspects.discard(uid)

    def _worker_died(self, slot: Slot, reason: str) -> None:
        with slot.cond:
            victims = list(slot.inflight.values())
            slot.inflight.clear()
            slot.per_feed.clear()
            slot.ready = False
            slot.isolating = False
        exiting = slot.proc.exiting
        code = slot.proc.exitcode()
        slot.proc.kill()
        running = slot.proc.running_calls()  # final: the process is gone
        self.metrics.inc("worker_restarts_total")
        culprits, suspects = blame(victims, running, exiting)
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
                v.feed.crashed(v.uid, v.parent, slot.index, code, len(victims) - 1)
            else:
                if v.uid in suspects:
                    self.suspects.add(v.uid)
                v.feed.returned(v.uid, slot.index)
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
            if not (slot.closed or self.stopping.is_set()):
                slot.spare.prepare()


def blame(
    victims: list[InFlight], running: list[str | None], exiting: bool
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
