"""The leader's reconcile machinery: informers -> cache -> per-worker queues -> worker processes.

Guarantees:
- Each parent uid is hashed (`shard_for`) to one worker; one dispatcher thread per worker takes
  parents from that worker's queue, so a parent is never synced twice at the same time and its
  syncs run in the order its events arrived (coalesced).
- Nothing is dispatched before the parent and every child informer have listed once, so the
  first sync of a parent already sees its existing children.
- Objects a worker wrote are put into the cache before its parent can be dispatched again, so a
  sync never acts on state older than our own writes; watch events carrying nothing newer than
  the cache (the echoes of our own writes) do not cause syncs.
- A sync that wrote children is followed by one more sync, so the handler observes the children
  it caused (and can report them in status); a sync that wrote no child is not, unless something
  else changed meanwhile. A handler that returns different children on every call therefore
  keeps being re-synced: desired state must be a function of observed state. After
  MAX_WRITE_STREAK such syncs in a row, its re-syncs wait for its exponential backoff (a
  warning is logged), so a handler that never converges cannot hot-loop.
- A failed sync or finalize is retried after the parent's exponential backoff; success resets
  it. Periodic resync goes through the low-priority lane of the queue.
- A worker that dies, or exceeds its deadline, is killed and replaced; the parent it was
  working on is retried with backoff and every other parent stays queued: nothing is lost.
- `stop()` stops taking new work, lets in-flight syncs finish (bounded by ``drain_timeout``) and
  stops the workers.
"""

from __future__ import annotations

import random
import threading
import time

import multiprocess
import structlog

from operatord.backoff import Backoff
from operatord.cache import Cache, child_key
from operatord.config import Config
from operatord.health import Heartbeat
from operatord.informer import Informer
from operatord.kube import ApiError, ClientSettings, Kube, Resource
from operatord.queue import RESYNC, WorkQueue
from operatord.sharding import shard_for
from operatord.worker import worker_main

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


# After this many consecutive syncs of a parent that each wrote children, further re-syncs of
# it wait for its exponential backoff: a handler that never converges must not hot-loop.
MAX_WRITE_STREAK = 8


class WorkerGone(Exception):
    """The worker process died or missed its deadline."""


class WorkerSlot:
    """One worker process and the pipe to it; used by exactly one dispatcher thread."""

    def __init__(self, index: int, config: Config, settings: ClientSettings, metrics, ctx):
        self.index = index
        self.config = config
        self.settings = settings
        self.metrics = metrics
        self.ctx = ctx
        self.process = None
        self.conn = None
        self.started = threading.Event()

    def start(self, ready_timeout: float = 120.0) -> None:
        parent_conn, child_conn = self.ctx.Pipe()
        proc = self.ctx.Process(
            target=worker_main,
            args=(self.index, self.config.to_dict(), self.settings.to_dict(), child_conn),
            name=f"operatord-worker-{self.index}",
            daemon=True,
        )
        proc.start()
        child_conn.close()
        self.process, self.conn = proc, parent_conn
        msg = self._recv(time.monotonic() + ready_timeout)
        if msg.get("op") != "ready":
            raise WorkerGone(f"worker {self.index} sent {msg.get('op')!r} instead of ready")
        self.started.set()
        log.info("worker started", worker=self.index, pid=proc.pid)

    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def _recv(self, deadline: float) -> dict:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WorkerGone(f"worker {self.index} missed its deadline")
            try:
                if self.conn.poll(min(remaining, 0.5)):
                    msg = self.conn.recv()
                    self.metrics.apply(msg.pop("metrics", None) or [])
                    return msg
            except (EOFError, OSError) as exc:
                raise WorkerGone(f"worker {self.index} connection lost: {exc}") from exc
            if not self.process.is_alive():
                raise WorkerGone(f"worker {self.index} exited with {self.process.exitcode}")

    def run(self, task: dict, timeout: float) -> dict:
        try:
            self.conn.send(task)
        except (OSError, ValueError) as exc:
            raise WorkerGone(f"worker {self.index} pipe broken: {exc}") from exc
        return self._recv(time.monotonic() + timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        if self.conn is not None:
            self.conn.close()

    def stop(self, timeout: float = 5.0) -> None:
        if self.process is None:
            return
        try:
            self.conn.send({"op": "stop"})
        except (OSError, ValueError):
            pass
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self.conn.close()


class Controller:
    def __init__(
        self,
        config: Config,
        settings: ClientSettings,
        metrics,
        *,
        watch_timeout: int = 300,
        start_method: str = "spawn",
    ):
        self.config = config
        self.settings = settings
        self.metrics = metrics
        self.watch_timeout = watch_timeout
        self.ctx = multiprocess.get_context(start_method)
        self.kube = Kube(settings, on_request=self._observe_request)
        self.cache = Cache(config.parent_uid_label)
        b = config.backoff
        self.queues = [
            WorkQueue(backoff=Backoff(b.initial_seconds, b.max_seconds, b.multiplier, b.jitter))
            for _ in range(config.workers)
        ]
        self.slots = [
            WorkerSlot(i, config, settings, metrics, self.ctx) for i in range(config.workers)
        ]
        self.informers: list[Informer] = []
        self.synced = threading.Event()
        self.stopping = threading.Event()
        self.stopped = threading.Event()
        self.heartbeats = [
            Heartbeat(f"dispatcher {i}", max_age=config.handler_timeout_seconds + 90)
            for i in range(config.workers)
        ]
        self._threads: list[threading.Thread] = []
        # uid -> consecutive syncs that wrote children (only its dispatcher touches a uid).
        self._write_streak: dict[str, int] = {}
        # uid -> "changed while in flight"; guarded by _inflight_lock.
        self._inflight: dict[str, bool] = {}
        self._inflight_lock = threading.Lock()
        self.parent_resource: Resource | None = None
        self.child_resources: list[Resource] = []
        self.task_deadline = config.handler_timeout_seconds + 60

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
        dead = [s.index for s in self.slots if not s.alive()]
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
        t = threading.Thread(target=self._housekeeping, name="housekeeping", daemon=True)
        t.start()
        self._threads.append(t)
        self.parent_resource = self._resolve(cfg.parent.api_version, cfg.parent.kind)
        self.child_resources = [self._resolve(c.api_version, c.kind) for c in cfg.children]
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
        selector = f"{cfg.managed_by_label}={cfg.name},{cfg.parent_uid_label}"
        self.informers = [
            Informer(
                self.kube,
                self.parent_resource,
                namespace=cfg.namespace,
                on_list=self._on_parent_list,
                on_event=self._on_parent_event,
                watch_timeout=self.watch_timeout,
                observe=self._observe_informer,
            )
        ]
        for res in self.child_resources:
            self.informers.append(
                Informer(
                    self.kube,
                    res,
                    namespace=cfg.namespace,
                    label_selector=selector,
                    on_list=lambda items, r=res: self._on_child_list(r, items),
                    on_event=self._on_child_event,
                    watch_timeout=self.watch_timeout,
                    observe=self._observe_informer,
                )
            )
        for inf in self.informers:
            inf.start()
        for i in range(cfg.workers):
            t = threading.Thread(
                target=self._dispatch_loop, args=(i,), name=f"dispatch-{i}", daemon=True
            )
            t.start()
            self._threads.append(t)
        while not self.stopping.is_set():
            if all(inf.synced.wait(0.2) for inf in self.informers):
                break
        if not self.stopping.is_set():
            self.synced.set()
            log.info("caches synced", parents=self.cache.parent_count())

    def _start_slot(self, slot: WorkerSlot) -> None:
        delay = 0.5
        while not self.stopping.is_set():
            try:
                slot.start()
                return
            except WorkerGone as exc:
                log.error("worker failed to start", worker=slot.index, error=str(exc))
                slot.kill()
                self.stopping.wait(delay)
                delay = min(delay * 2, 30)

    def stop(self, drain_timeout: float = 30.0) -> None:
        """Stop dispatching, wait for in-flight syncs (bounded), stop workers and informers."""
        self.stopping.set()
        for inf in self.informers:
            inf.stop()
        deadline = time.monotonic() + drain_timeout
        for q in self.queues:
            q.drain(max(deadline - time.monotonic(), 0))
        for t in self._threads:
            t.join(max(deadline - time.monotonic(), 0.1))
        for slot in self.slots:
            slot.stop()
        self.kube.close()
        self.stopped.set()

    # ---- events into the queues -----------------------------------------------------------

    def _queue_for(self, uid: str) -> WorkQueue:
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

    def _on_parent_list(self, items: list[dict]) -> None:
        changed, removed = self.cache.replace_parents(items)
        for uid in removed:
            self._queue_for(uid).discard(uid)
            self._write_streak.pop(uid, None)
        for uid in changed:
            self.enqueue(uid)

    def _on_parent_event(self, etype: str, obj: dict) -> None:
        uid = obj["metadata"].get("uid")
        if etype == "DELETED":
            self.cache.delete_parent(obj)
            self._queue_for(uid).discard(uid)
            self._write_streak.pop(uid, None)
        elif self.cache.upsert_parent(obj):
            self.enqueue(uid)

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

    # ---- dispatch -------------------------------------------------------------------------

    def _dispatch_loop(self, index: int) -> None:
        queue = self.queues[index]
        slot = self.slots[index]
        hb = self.heartbeats[index]
        while not self.synced.is_set() and not self.stopping.is_set():
            hb.beat()
            self.synced.wait(0.5)
        while True:
            hb.beat()
            item = queue.get(timeout=0.5)
            if item is None:
                if queue.shutting_down:
                    return
                if not slot.alive() and not self.stopping.is_set():
                    self._replace_idle(slot)
                continue
            uid = item.key
            with self._inflight_lock:
                self._inflight[uid] = False
            expected = None
            try:
                self.metrics.observe("queue_wait_seconds", item.waited)
                expected = self._dispatch(index, slot, queue, uid)
            except Exception:  # noqa: BLE001 - the dispatcher must survive anything
                log.exception("dispatch failed", **self._parent_context(uid))
                queue.add_rate_limited(uid)
                self.metrics.inc("retries_total")
            finally:
                with self._inflight_lock:
                    changed = self._inflight.pop(uid, False)
                queue.done(uid)
                if changed and (expected is None or self.cache.versions(uid) != expected):
                    queue.add(uid)

    def _dispatch(
        self, index: int, slot: WorkerSlot, queue: WorkQueue, uid: str
    ) -> dict[tuple, str] | None:
        """Run one sync; returns the object versions the cache should hold if nothing but the
        sync's own writes happened meanwhile (None when unknown or a re-sync is due)."""
        expected = self.cache.versions(uid)
        parent, children = self.cache.snapshot(uid)
        if parent is None:
            return None
        task = {
            "op": "sync",
            "uid": uid,
            "parent": parent,
            "children": children,
            "finalizing": bool(parent["metadata"].get("deletionTimestamp")),
        }
        if not slot.alive():
            self._replace_idle(slot)
        try:
            result = slot.run(task, self.task_deadline)
        except WorkerGone as exc:
            meta = parent["metadata"]
            log.error(
                "worker lost; restarting it",
                worker=index,
                error=str(exc),
                parent_namespace=meta.get("namespace"),
                parent_name=meta.get("name"),
                parent_uid=uid,
            )
            slot.kill()
            self.metrics.inc("worker_restarts_total")
            queue.add_rate_limited(uid)
            self.metrics.inc("retries_total")
            if not self.stopping.is_set():
                self._start_slot(slot)
            return None
        parent_key = child_key(parent)
        children_written = result.get("outcome") == "ok" and any(
            child_key(w["object"]) != parent_key for w in result.get("written") or []
        )
        streak = self._write_streak.pop(uid, 0) + 1 if children_written else 0
        throttled = streak > MAX_WRITE_STREAK
        if streak:
            self._write_streak[uid] = streak
        self._handle_result(queue, uid, result, throttled=throttled)
        if result.get("exiting"):
            # The worker's handler thread is stuck; it exits now. Replace it before the next
            # task so no other parent is charged for its death.
            slot.process.join(5)
            slot.kill()
            self.metrics.inc("worker_restarts_total")
            log.warning("worker exited after a handler timeout; restarting it", worker=index)
            if not self.stopping.is_set():
                self._start_slot(slot)
        written_parents = [
            w["object"] for w in result.get("written") or [] if child_key(w["object"]) == parent_key
        ]
        if written_parents and _content(written_parents[-1]) != _content(parent):
            # Our write returned a parent that someone else changed after our snapshot (a status
            # patch is not conditional): its watch event is now "old news" for the cache, so
            # the change must be synced from here.
            with self._inflight_lock:
                self._inflight[uid] = True
            return None
        if children_written and not throttled:
            # The children changed: sync once more so the handler observes what it caused.
            with self._inflight_lock:
                self._inflight[uid] = True
            return None
        for w in result.get("written") or []:
            key = child_key(w["object"])
            if w["action"] == "upsert":
                expected[key] = w["object"]["metadata"].get("resourceVersion", "")
            else:
                expected.pop(key, None)
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

    def _replace_idle(self, slot: WorkerSlot) -> None:
        """Replace a worker that died while it had no task (no parent is charged for it)."""
        code = slot.process.exitcode if slot.process is not None else None
        log.error("worker died while idle; restarting it", worker=slot.index, exit_code=code)
        slot.kill()
        self.metrics.inc("worker_restarts_total")
        self._start_slot(slot)

    def _handle_result(
        self, queue: WorkQueue, uid: str, result: dict, *, throttled: bool = False
    ) -> None:
        for w in result.get("written") or []:
            obj = w["object"]
            is_parent = (obj.get("apiVersion"), obj.get("kind")) == self.config.parent.key
            if is_parent:
                if w["action"] == "upsert":
                    # Workers never create parents: one deleted meanwhile stays deleted.
                    self.cache.upsert_parent(obj, only_existing=True)
            elif w["action"] == "upsert":
                self.cache.upsert_child(obj)
            else:
                self.cache.delete_child(obj, tombstone=True)
        outcome = result.get("outcome")
        if outcome == "ok" and throttled:
            # Every recent sync changed children: the handler does not converge. Keep syncing
            # (it may yet), but at the pace of the parent's backoff instead of flat out.
            delay = queue.add_rate_limited(uid)
            self.metrics.inc("retries_total")
            log.warning(
                "children change on every sync; the handler does not converge, slowing down",
                **self._parent_context(uid),
                consecutive_writing_syncs=self._write_streak.get(uid),
                retry_in=round(delay, 3),
            )
        elif outcome == "ok":
            queue.forget(uid)
            if result.get("resync_after") is not None:
                queue.add_after(uid, float(result["resync_after"]))
            if self.config.resync_seconds > 0:
                jittered = self.config.resync_seconds * random.uniform(0.9, 1.1)
                queue.add_after(uid, jittered, lane=RESYNC)
        elif outcome == "finalized":
            queue.forget(uid)
        elif outcome == "finalize_pending":
            if result.get("retry_after") is not None:
                queue.add_after(uid, float(result["retry_after"]))
            else:
                queue.add_rate_limited(uid)
                self.metrics.inc("retries_total")
        else:
            delay = queue.add_rate_limited(uid)
            self.metrics.inc("retries_total")
            log.info(
                "sync failed; backing off",
                **self._parent_context(uid),
                error=result.get("error"),
                retry_in=round(delay, 3),
                failures=queue.num_requeues(uid),
            )

    # ---- housekeeping ---------------------------------------------------------------------

    def _housekeeping(self) -> None:
        while True:
            try:
                self.update_gauges()
            except Exception:  # noqa: BLE001 - gauges must not kill the loop
                log.exception("updating gauges failed")
            if self.stopping.wait(0.5):
                return

    def update_gauges(self) -> None:
        m = self.metrics
        for i, q in enumerate(self.queues):
            m.set("queue_depth", len(q), {"worker": str(i)})
        m.set("parents_backing_off", sum(len(q.backoff) for q in self.queues))
        m.set("workers_alive", sum(1 for s in self.slots if s.alive()))
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
