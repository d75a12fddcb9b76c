"""The leader's reconcile machinery for a whole daemon: shared informers and cache, one worker
pool, one `Controller` per configured controller.

Guarantees:
- One informer and one cache per watched (type, namespace): two controllers that own the same
  child type share its watch; each still sees only its own children (by the parent-uid label,
  uids being unique across kinds). A related type named by several controllers is cached once.
- Every parent event, child event and related change is routed to the controller of the
  parent it concerns (by the parent's ``(apiVersion, kind)``).
- Listed parent and child objects are packed (`Cache.pack`: the cache's stored form, about
  100 bytes of compressed JSON and a small record) as each arrives (the informers'
  ``transform``), so a start-up list never holds them decoded; a watched one is packed by the
  cache only when it is newer than what the cache holds (most are echoes of the workers' own
  writes).
- Nothing is dispatched before every informer has listed once, so the first sync of a parent
  already sees its existing children; `readiness` fails until then.
- Namespace scope (`operatord.namespaces.NamespaceScope`): literal names are watched per
  namespace; globs, negations and a ``namespaceSelector`` watch cluster-wide with a filter and
  watch Namespaces, so a namespace that starts matching is served (its parents and children are
  listed again) and one that stops matching is released (forgotten, never touched again).
- Replica shards (``sharding.shards`` > 1): only parents of the held shards are cached and
  synced; children by the shard of their parent-uid label. Parents are listed and watched with
  a ``shardSelector`` for the held ranges and filtered here as well. A parent of a newly held
  shard is dispatched only after every child informer has listed again with that shard.
- When informers are replaced (held shards or admitted namespaces changed), the child
  informers list first and the parent informers only once they have, and callbacks of
  replaced informers are ignored.
- Warm standby (`start` with ``standby=True``, before the lease is ours): informers, cache
  and worker processes run as for a leader, but nothing is queued, dispatched or written
  (the lease fence is down besides). Each parent's last change (a new parent, a change other
  than to its status, a child or related change) is remembered instead. `take_over()` queues
  every cached parent at once: the ones changed within two lease durations first (the event
  lane, oldest change first), every other one in the resync lane behind them, and wakes the
  dispatchers.
- `stop()` stops taking new work, lets in-flight syncs finish (bounded by ``drain_timeout``)
  and stops the workers; `kill_workers()` stops at once.
"""

from __future__ import annotations

import functools
import gc
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from operatord.cache import Cache, Packed
from operatord.config import PARENT_UID_LABEL, Config
from operatord.controller import Controller
from operatord.events import EventRecorder
from operatord.informer import Informer
from operatord.kube import ApiError, ClientSettings, Kube, Resource
from operatord.namespaces import NamespaceScope
from operatord.pool import WorkerPool
from operatord.queue import RESYNC
from operatord.related import RelatedTypes
from operatord.shards import range_selector
from operatord.shardwatch import Fence
from operatord.supervisor import worker_context

if TYPE_CHECKING:
    from operatord.metrics import Metrics

log = structlog.get_logger("operatord.manager")

# Period of the full garbage collection over the frozen heap (see refreeze_heap).
GC_REFREEZE_SECONDS = 600.0

TypeKey = tuple[str, str]


class Manager:
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
        self.kube = Kube(settings, on_request=self._observe_request)
        self.cache = Cache(config.parent_uid_label)
        # Held while a watch event is stored and routed, and while a sync result's writes are
        # stored and its parent released (`Controller.completed`): an echo of our own write
        # then either finds its parent in flight or finds the cache as new as itself.
        self._observing = threading.Lock()
        self.scope = NamespaceScope(config.namespace_patterns, config.namespace_selector)
        self.fence = Fence(config.shards)
        if lease_deadline is not None:
            self.fence.lease_deadline = lease_deadline
        self._credentials = self.kube.connection()
        self.pool = WorkerPool(
            config.to_dict(),
            self._credentials.to_dict(),
            worker_context(start_method),
            workers=config.workers,
            capacity=config.in_flight_per_worker,
            adaptive=config.in_flight_adaptive,
            task_deadline=config.max_handler_timeout_seconds + 60,
            metrics=metrics,
            fence_ok=self.fence.ok,
            lease_updates=self.fence.updates,
            credentials=lambda: self._credentials.headers,
        )
        # One recorder per controller: its Events name it (reportingComponent
        # operatord-<name>, or operatord-<name>.<controller> with a controllers list).
        self.events = {
            c.name: EventRecorder(
                self.kube,
                c.field_manager,
                interval=event_interval,
                metrics=metrics,
                guard=self.fence.check,
            )
            for c in config.controllers
        }
        self.related = RelatedTypes(config, self._enqueue_related)
        self.controllers = [
            Controller(
                c,
                cache=self.cache,
                related=self.related,
                events=self.events[c.name],
                metrics=metrics,
                fence=self.fence,
                workers=config.workers,
                capacity=config.in_flight_per_worker,
                slot_of=self.pool.slot_of,
                waker=self.pool.waker,
                forget_suspect=self.pool.forget,
                observing=self._observing,
            )
            for c in config.controllers
        ]
        for ctl in self.controllers:
            self.pool.add_feed(ctl)
            if ctl.name != config.name:
                metrics.add_controller(ctl.name)
        self._by_type: dict[TypeKey, Controller] = {
            c.config.parent.key: c for c in self.controllers
        }
        self.informers: list[Informer] = []
        self.synced = threading.Event()
        self.stopping = threading.Event()
        self.stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self.parent_resources: dict[str, Resource] = {}  # controller name -> its parent type
        self.child_resources: list[Resource] = []  # every child type, once
        self._frozen_at: float | None = None
        self._generation = 0
        self._rewatch_wanted = threading.Event()
        self._core_informers: list[Informer] = []
        self._related_informers: list[Informer] = []
        self._namespace_informer: Informer | None = None
        self._ns_labels: dict[str, dict[str, str]] = {}
        self.admitted: frozenset[str] = frozenset()
        # Warm standby: parent uid -> monotonic time of its last change, instead of queueing.
        self._standby_lock = threading.Lock()
        self._standby = False
        self._changed_at: dict[str, float] = {}
        self.recent_window = 2 * config.leader_election.lease_duration_seconds

    # ---- the daemon's view (lease, shards) ---------------------------------------------------

    @property
    def lease_deadline(self) -> Callable[[], float | None]:
        return self.fence.lease_deadline

    @lease_deadline.setter
    def lease_deadline(self, fn: Callable[[], float | None]) -> None:
        self.fence.lease_deadline = fn

    @property
    def shard_deadline(self) -> Callable[[int], float]:
        return self.fence.shard_deadline

    @shard_deadline.setter
    def shard_deadline(self, fn: Callable[[int], float]) -> None:
        self.fence.shard_deadline = fn

    @property
    def slots(self) -> list:
        return self.pool.slots

    def controller(self, name: str) -> Controller:
        for c in self.controllers:
            if c.name == name:
                return c
        raise KeyError(name)

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
        dead = self.pool.dead_workers()
        if dead:
            return f"workers not running: {dead}"
        return None

    def liveness(self) -> str | None:
        return self.pool.liveness()

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

    @property
    def standby(self) -> bool:
        """Caches and workers run, nothing is queued or dispatched (see `take_over`)."""
        return self._standby

    def start(self, standby: bool = False) -> None:
        """Start workers, informers and dispatchers; returns at once (work runs in threads).

        ``standby``: a warm standby until `take_over`."""
        self._standby = standby
        t = threading.Thread(target=self._start, name="manager-start", daemon=True)
        t.start()
        self._threads.append(t)

    def _start(self) -> None:
        # The state gauges are computed when scraped (only as often as Prometheus asks).
        self.metrics.before_scrape(self._refresh_gauges)
        t = threading.Thread(target=self._housekeeping, name="housekeeping", daemon=True)
        t.start()
        self._threads.append(t)
        for c in self.controllers:
            self.parent_resources[c.name] = self._resolve(
                c.config.parent.api_version, c.config.parent.kind
            )
        seen: dict[TypeKey, Resource] = {}
        for c in self.controllers:
            for child in c.config.children:
                if child.key not in seen:
                    seen[child.key] = self._resolve(child.api_version, child.kind)
        self.child_resources = list(seen.values())
        self.related.resolve(self._resolve)
        self.pool.start_workers()
        if self.scope.watch_namespaces:
            self._namespace_informer = Informer(
                self.kube,
                self._resolve("v1", "Namespace"),
                on_list=self._on_namespace_list,
                on_event=self._on_namespace_event,
                watch_timeout=self.watch_timeout,
                observe=self._observe_informer,
            )
            self._namespace_informer.start()
            while not self.stopping.is_set() and not self._namespace_informer.synced.wait(0.2):
                pass
        if self.fence.sharded:  # the parent and child informers follow the held shards
            self._core_informers = []
        else:
            self._core_informers = self._make_core_informers(None)
        t = threading.Thread(target=self._rewatch_loop, name="rewatch", daemon=True)
        t.start()
        self._threads.append(t)
        self._related_informers = self.related.informers(
            self.kube,
            namespaces=self.scope.names if self.scope.literal else (None,),
            watch_timeout=self.watch_timeout,
            observe=self._observe_informer,
        )
        extra = [self._namespace_informer] if self._namespace_informer else []
        self.informers = extra + self._core_informers + self._related_informers
        for inf in self.informers[len(extra) :]:
            inf.start()
        self.pool.start_dispatch(self.synced)
        while not self.stopping.is_set():
            if all(inf.synced.wait(0.2) for inf in self.informers):
                break
        if not self.stopping.is_set():
            # The cache is acyclic JSON data that reference counting frees: keep the cyclic
            # collector from walking all of it on every full collection.
            gc.freeze()
            self._frozen_at = time.monotonic()
            self.synced.set()
            log.info("caches synced", parents=self.cache.parent_count())

    def _spaces(self, res: Resource) -> list[str | None]:
        """The namespaces one informer each is started for: the literal names, or None (all)."""
        if res.namespaced and self.scope.literal:
            return list(self.scope.names)
        return [None]

    def _make_core_informers(self, owned: frozenset[int] | None) -> list[Informer]:
        """Child informers (one per child type and namespace), then parent informers (one per
        controller and namespace). ``owned``: the held replica shards (None: not sharded)."""
        cfg = self.config
        gen = self._generation
        selector = f"{cfg.managed_by_label}={cfg.name},{cfg.parent_uid_label}"
        shard_selector = range_selector(owned, self.fence.shards) if owned is not None else None
        children, parents = [], []
        for res in self.child_resources:
            for ns in self._spaces(res):
                on_list, on_event = self._filters(
                    gen,
                    owned,
                    functools.partial(self._on_child_list, res, ns),
                    self._on_child_event,
                    res.key,
                    _child_uid,
                )
                children.append(
                    Informer(
                        self.kube,
                        res,
                        namespace=ns,
                        label_selector=selector,
                        on_list=on_list,
                        on_event=on_event,
                        watch_timeout=self.watch_timeout,
                        observe=self._observe_informer,
                        transform=self.cache.pack_child,
                        transform_events=False,
                    )
                )
        for ctl in self.controllers:
            res = self.parent_resources[ctl.name]
            for ns in self._spaces(res):
                on_list, on_event = self._filters(
                    gen,
                    owned,
                    functools.partial(self._on_parent_list, ctl, res, ns),
                    functools.partial(self._on_parent_event, ctl),
                    res.key,
                    _parent_uid,
                )
                parents.append(
                    Informer(
                        self.kube,
                        res,
                        namespace=ns,
                        on_list=on_list,
                        on_event=on_event,
                        watch_timeout=self.watch_timeout,
                        observe=self._observe_informer,
                        shard_selector=shard_selector,
                        transform=self.cache.pack,
                        transform_events=False,
                    )
                )
        return children + parents

    def _filters(
        self,
        gen: int,
        owned: frozenset[int] | None,
        on_list: Callable[[list], None],
        on_event: Callable[[str, dict], None],
        resource: str,
        uid_of: Callable[[dict | Packed], str],
    ) -> tuple[Callable[[list], None], Callable[[str, dict], None]]:
        """Callbacks that keep only objects of the ``owned`` shards and of admitted namespaces
        (a dynamic scope), and do nothing once newer informers replaced these."""
        dynamic = self.scope.watch_namespaces
        if owned is None and not dynamic:
            return on_list, on_event

        def keep(obj: dict | Packed) -> bool:
            ns = (
                obj.namespace
                if isinstance(obj, Packed)
                else (obj.get("metadata") or {}).get("namespace")
            )
            if dynamic and ns and ns not in self.admitted:
                return False
            return owned is None or self.fence.shard(uid_of(obj) or "") in owned

        def filtered_list(items: list) -> None:
            if gen != self._generation:
                return
            out = [i for i in items if keep(i)]
            if owned is not None and len(out) != len(items):
                self.metrics.inc(
                    "shard_filtered_objects_total", {"resource": resource}, len(items) - len(out)
                )
            on_list(out)

        def filtered_event(etype: str, obj: dict) -> None:
            if gen == self._generation and keep(obj):
                on_event(etype, obj)

        return filtered_list, filtered_event

    # ---- replica shards -----------------------------------------------------------------

    def replica_shard(self, uid: str) -> int:
        return self.fence.shard(uid)

    def add_shard(self, k: int) -> None:
        """Start syncing the parents of replica shard ``k`` (its lease is ours)."""
        with self.fence.lock:
            self.fence.owned.add(k)
            self.fence.draining.discard(k)
        log.info("syncing shard", shard=k, owned=sorted(self.fence.owned))
        self._rewatch_wanted.set()

    def remove_shard(self, k: int) -> None:
        """Stop syncing shard ``k`` and forget its parents (released or lost)."""
        with self.fence.lock:
            self.fence.owned.discard(k)
            self.fence.draining.discard(k)
        for uid in self.cache.parent_uids():
            if self.fence.shard(uid) == k:
                kind = self.cache.parent_type(uid)
                if kind is not None:
                    self.cache.delete_parent({"metadata": {"uid": uid}})
                    ctl = self._by_type.get(kind)
                    if ctl is not None:
                        ctl.forget(uid)
        self.metrics.set("shard_parents", 0, {"shard": str(k)})
        self.metrics.set("shard_queue_depth", 0, {"shard": str(k)})
        log.info("stopped syncing shard", shard=k, owned=sorted(self.fence.owned))
        self._rewatch_wanted.set()

    def drain_shard(self, k: int, timeout: float) -> bool:
        """Stop dispatching shard ``k`` and wait until none of its syncs is in flight.

        True: drained (the shard stays undispatched until `add_shard` or `remove_shard`).
        False after ``timeout``: dispatching resumes."""
        with self.fence.lock:
            self.fence.draining.add(k)
        deadline = time.monotonic() + timeout
        busy = 0
        while True:
            busy = sum(c.in_flight_count(k) for c in self.controllers)
            if not busy:
                return True
            if time.monotonic() >= deadline or self.stopping.wait(0.05):
                break
        with self.fence.lock:
            self.fence.draining.discard(k)
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
                log.exception("re-watching failed")

    def _rewatch(self) -> None:
        """Replace the parent and child informers by ones for the shards held and the
        namespaces admitted now: child informers first, and the parent informers only once
        they listed, so no newly served parent is dispatched without its children cached."""
        owned: frozenset[int] | None = None
        if self.fence.sharded:
            with self.fence.lock:
                owned = frozenset(self.fence.owned)
        self._generation += 1
        old = self._core_informers
        new = self._make_core_informers(owned) if owned is None or owned else []
        n_children = sum(len(self._spaces(r)) for r in self.child_resources) if new else 0
        for inf in new[:n_children]:
            inf.start()
        while not self.stopping.is_set() and not all(i.synced.wait(0.2) for i in new[:n_children]):
            pass
        for inf in new[n_children:]:
            inf.start()
        self._core_informers = new
        extra = [self._namespace_informer] if self._namespace_informer else []
        self.informers = extra + new + self._related_informers
        for inf in old:
            inf.stop()
        if not new:  # nothing is listed any more: nothing may stay cached
            for ctl in self.controllers:
                res = self.parent_resources[ctl.name]
                self._on_parent_list(ctl, res, None, [])
            for res in self.child_resources:
                self._on_child_list(res, None, [])
        log.info(
            "watching",
            shards=sorted(owned) if owned is not None else None,
            namespaces=sorted(self.admitted) if self.scope.watch_namespaces else None,
        )

    # ---- namespaces -------------------------------------------------------------------------

    def _on_namespace_list(self, items: list[dict]) -> None:
        self._ns_labels = {
            (i.get("metadata") or {}).get("name", ""): (i.get("metadata") or {}).get("labels") or {}
            for i in items
        }
        self._readmit()

    def _on_namespace_event(self, etype: str, obj: dict) -> None:
        meta = obj.get("metadata") or {}
        name = meta.get("name", "")
        if etype == "DELETED":
            self._ns_labels.pop(name, None)
        else:
            self._ns_labels[name] = meta.get("labels") or {}
        self._readmit()

    def _readmit(self) -> None:
        admitted = frozenset(
            n for n, labels in self._ns_labels.items() if self.scope.admits(n, labels)
        )
        before = self.admitted
        if admitted == before:
            return
        self.admitted = admitted
        for ns in sorted(before - admitted):
            log.info("namespace released", namespace=ns)
            for uid in self.cache.drop_namespace(ns):
                for ctl in self.controllers:
                    ctl.forget(uid)
        gained = sorted(admitted - before)
        if gained:
            log.info("namespaces served", namespaces=gained)
            if self.synced.is_set() or self._core_informers:
                self._rewatch_wanted.set()

    # ---- events into the controllers --------------------------------------------------------

    def _controller_of(self, uid: str) -> Controller | None:
        """The controller of a cached parent (None: not cached, or of no controller)."""
        kind = self.cache.parent_type(uid)
        return self._by_type.get(kind) if kind is not None else None

    def _held_back(self, uids: set[str] | list[str]) -> bool:
        """In standby: note that these parents changed now, and return True (queue nothing)."""
        if not self._standby:
            return False
        with self._standby_lock:
            if not self._standby:
                return False
            now = time.monotonic()
            for uid in uids:
                self._changed_at[uid] = now
            return True

    def take_over(self) -> None:
        """Leave standby: every cached parent is queued, the ones changed within
        ``recent_window`` seconds first, and the dispatchers are woken. A no-op when not in
        standby."""
        with self._standby_lock:
            if not self._standby:
                return
            self._standby = False
            changed, self._changed_at = self._changed_at, {}
        began = time.monotonic()
        recent = sorted((t, uid) for uid, t in changed.items() if began - t <= self.recent_window)
        first = set()
        for _, uid in recent:
            ctl = self._controller_of(uid)
            if ctl is not None:
                ctl.enqueue(uid)
                first.add(uid)
        self.pool.wake()
        rest = 0
        for uid in self.cache.parent_uids():
            if uid in first:
                continue
            ctl = self._controller_of(uid)
            if ctl is not None:
                ctl.queue(self.pool.slot_of(uid)).add_after(uid, 0, lane=RESYNC)
                rest += 1
        self.update_lease(self.fence.lease_deadline())
        log.info(
            "took over from the warm cache",
            recently_changed=len(first),
            others=rest,
            seconds=round(time.monotonic() - began, 3),
        )

    def _route(self, uids: set[str], related: bool = False) -> None:
        if self._held_back(uids):
            return
        for uid in uids:
            ctl = self._controller_of(uid)
            if ctl is None:
                continue
            if related:
                ctl.enqueue_related(uid)
            else:
                ctl.enqueue(uid)

    def _enqueue_related(self, uids: set[str]) -> None:
        self._route(uids, related=True)

    def _on_parent_list(
        self, ctl: Controller, res: Resource, namespace: str | None, items: list[dict]
    ) -> None:
        changed, removed = self.cache.replace_parents(
            items,
            api_version=ctl.config.parent.api_version,
            kind=ctl.config.parent.kind,
            namespace=namespace,
        )
        for uid in removed:
            self._forget(ctl, uid)
        if self._standby and not self.synced.is_set():
            return  # a standby's first list changes nothing: `take_over` queues every parent
        if self._held_back(changed):
            return
        for uid in changed:
            ctl.enqueue(uid)

    def _on_parent_event(self, ctl: Controller, etype: str, obj: dict) -> None:
        uid = obj["metadata"].get("uid")
        if etype == "DELETED":
            self.cache.delete_parent(obj)
            self._forget(ctl, uid)
            return
        with self._observing:
            before = self.cache.parent(uid) if self._standby else None
            if not self.cache.upsert_parent(obj):
                return
            if self._standby and before is not None and _user_content(before) == _user_content(obj):
                return  # the leader's own status write: nothing new to sync for
            if not self._held_back([uid]):
                ctl.enqueue(uid)

    def _forget(self, ctl: Controller, uid: str) -> None:
        ctl.forget(uid)
        if self._standby:
            with self._standby_lock:
                self._changed_at.pop(uid, None)

    def _on_child_list(self, res: Resource, namespace: str | None, items: list[dict]) -> None:
        self._route(self.cache.replace_children(res.api_version, res.kind, items, namespace))

    def _on_child_event(self, etype: str, obj: dict) -> None:
        with self._observing:
            if etype == "DELETED":
                affected = self.cache.delete_child(obj)
            else:
                affected = self.cache.upsert_child(obj)
            self._route(affected)

    # ---- the lease and credentials ----------------------------------------------------------

    def update_lease(self, valid_until: float | None, shard: int | None = None) -> None:
        self.pool.update_lease(valid_until, shard)

    def refresh_credentials(self) -> None:
        """Push the leader's current auth headers to every worker when they changed (tokens
        rotate; workers never load the kubeconfig themselves)."""
        current = self.kube.connection()
        if current.headers == self._credentials.headers:
            return
        self._credentials = current
        self.pool.push_credentials(current.headers, current.to_dict())

    def kill_workers(self) -> None:
        """Stop at once: no dispatch, every worker killed (lost leadership)."""
        self.stopping.set()
        self.pool.kill()

    def stop(self, drain_timeout: float = 30.0) -> None:
        """Stop dispatching, wait for in-flight syncs (bounded), stop workers and informers."""
        self.stopping.set()
        for inf in self.informers:
            inf.stop()
        deadline = time.monotonic() + drain_timeout
        self.pool.stop(deadline)
        for t in self._threads:
            t.join(max(deadline - time.monotonic(), 0.1))
        for events in self.events.values():
            events.flush(max(deadline - time.monotonic(), 0.5))
            events.stop()
        self.kube.close()
        self.stopped.set()

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
                if self.fence.sharded:  # each held shard's renewals move its own fence
                    for k in sorted(self.fence.owned):
                        shard_until = self.fence.shard_deadline(k)
                        if shard_until != pushed_shards.get(k):
                            self.update_lease(shard_until, k)
                            pushed_shards[k] = shard_until
                else:
                    valid_until = self.fence.lease_deadline()
                    if valid_until != pushed:  # renewed: move the workers' write fence
                        self.update_lease(valid_until)
                        pushed = valid_until
                self._frozen_at = refreeze_heap(self._frozen_at)
                self.pool.retire_spares()
            except Exception:  # noqa: BLE001 - housekeeping must not kill the loop
                log.exception("housekeeping failed")
            if self.stopping.wait(0.25):  # lease renewals reach the workers within this
                return

    def _refresh_gauges(self) -> None:
        if not self.stopped.is_set():
            self.update_gauges()

    def update_gauges(self) -> None:
        m = self.metrics
        self.pool.update_gauges()
        m.set("parents_backing_off", sum(c.backing_off() for c in self.controllers))
        deleting = self.cache.deletions()
        m.set("parents_deleting", len(deleting))
        m.set(
            "parent_deletion_max_age_seconds",
            max(0.0, time.time() - min(deleting, default=time.time())),
        )
        if self.fence.sharded:
            owned = sorted(self.fence.owned)
            per_shard = dict.fromkeys(owned, 0)
            for uid in self.cache.parent_uids():
                k = self.fence.shard(uid)
                if k in per_shard:
                    per_shard[k] += 1
            for k, n in per_shard.items():
                m.set("shard_parents", n, {"shard": str(k)})
            depth = dict.fromkeys(owned, 0)
            for c in self.controllers:
                for q in c.queues:
                    for uid in q.ready_keys():
                        k = self.fence.shard(uid)
                        if k in depth:
                            depth[k] += 1
            for k, n in depth.items():
                m.set("shard_queue_depth", n, {"shard": str(k)})
            parent_informers = [
                i for i in self._core_informers if i.resource in self.parent_resources.values()
            ]
            m.set("shard_server_side", int(any(i.server_sharded for i in parent_informers)))
        counts = self.cache.counts()
        parents = self.cache.parent_counts()
        for c in self.controllers:
            res = self.parent_resources.get(c.name)
            if res is not None:
                m.set(
                    "cached_objects",
                    parents.get(c.config.parent.key, 0),
                    {"resource": res.key, "controller": c.name},
                )
        for res in self.child_resources:
            m.set(
                "cached_objects",
                counts.get(f"{res.api_version}/{res.kind}", 0),
                {"resource": res.key},
            )
        for res, count in self.related.counts():  # a type also watched as child: both caches
            if res in self.child_resources:
                count += counts.get(f"{res.api_version}/{res.kind}", 0)
            m.set("cached_objects", count, {"resource": res.key})


_OWN_FIELDS = ("resourceVersion", "managedFields", "finalizers", "generation")


def _user_content(parent: dict) -> dict:
    """A parent without its status and the metadata operatord's own writes change: equal
    before and after a change means the change was (at most) a status or finalizer write."""
    out = {k: v for k, v in parent.items() if k != "status"}
    out["metadata"] = {
        k: v for k, v in (parent.get("metadata") or {}).items() if k not in _OWN_FIELDS
    }
    return out


def _parent_uid(obj: dict | Packed) -> str:
    if isinstance(obj, Packed):
        return obj.uid
    return (obj.get("metadata") or {}).get("uid") or ""


def _child_uid(obj: dict | Packed) -> str:
    if isinstance(obj, Packed):
        return obj.owner or ""
    return ((obj.get("metadata") or {}).get("labels") or {}).get(PARENT_UID_LABEL) or ""


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
