"""Replica shards held through Leases, and how replicas share them without a coordinator.

With ``sharding.shards: S > 1`` every replica works: shard ``k`` (the parents whose uid hash
`operatord.shards.shard_of` puts in ``k``) is synced only by the replica holding the Lease
``<name>-shard-<k>``.

Guarantees:

- **One holder per shard.** Each shard lease is held through its own `LeaderElector`, with the
  client-go semantics and freshness rule of the leader lease: `valid_until(k)` is the
  elector's `lease_valid_until()` (last renewal *sent* + renewDeadline; 0.0 unless held), so
  a check ``time.monotonic() < valid_until(k)`` that passes comes before any other replica
  may take the shard over.
- **Membership.** Each replica renews a Lease ``<name>-replica-<digest of its identity>``
  every retryPeriod (released on shutdown). A replica counts the members whose lease record
  changed within its leaseDurationSeconds, measured on its own monotonic clock from when it
  observed the change (itself always), so wall clocks of other hosts never matter.
- **Fair share** is ``ceil(S / live replicas)``. Below it, a replica campaigns for shards
  whose lease is free, released, missing or expired, at most its deficit at a time. Above it,
  it gives up one surplus shard at a time, and only after ``drain(k)`` returned True (no sync
  of that shard in flight and none dispatched any more); when the drain fails the shard is kept
  and renewed. It then stops renewing and releases the lease (holder "" and duration 1 s, as
  client-go), so another replica may take the shard at its next round.
- **Start.** No shard is taken in the first round, so replicas started together count each
  other before they take shards.
- **Takeover.** The loop wakes when an observed shard lease of another holder is due to expire,
  so a shard of a dead replica is taken within leaseDurationSeconds + retryPeriod of that
  replica's last renewal (plus request time).
- **Callbacks.** ``on_acquired(k)`` once the lease is ours (before any dispatch may pass the
  fence); ``on_lost(k)`` when a held lease could not be renewed within renewDeadline or shows
  another holder; ``on_released(k)`` after a voluntary release. They run on the manager's or an
  elector's thread and must return quickly.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import structlog

from operatord.election import LEASES, LeaderElector, _record

log = structlog.get_logger("operatord.shardleases")


class _Shard:
    """One shard lease as this replica handles it (guarded by `ShardLeases._lock`)."""

    def __init__(self, k: int, elector: LeaderElector):
        self.k = k
        self.elector = elector
        self.thread: threading.Thread | None = None
        self.stop = threading.Event()
        self.acquired = False  # ours, and handed to on_acquired
        self.giving_up = False  # a release or a cancelled campaign is under way
        self.campaign_started = 0.0


def member_lease_name(name: str, identity: str) -> str:
    """``<name>-replica-<12 hex digits of sha256(identity)>``: identities may hold characters a
    Lease name may not."""
    return f"{name}-replica-{hashlib.sha256(identity.encode()).hexdigest()[:12]}"


class ShardLeases:
    """Holds this replica's share of the shard leases; `run` is the balancing loop."""

    def __init__(
        self,
        kube: Any,
        config: Any,
        *,
        namespace: str,
        identity: str,
        on_acquired: Callable[[int], None],
        on_lost: Callable[[int], None],
        on_released: Callable[[int], None],
        drain: Callable[[int], bool],
        metrics: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        le = config.leader_election
        self.kube = kube
        self.name = config.name
        self.namespace = namespace
        self.identity = identity
        self.count = config.shards
        self.lease_duration = le.lease_duration_seconds
        self.renew_deadline = le.renew_deadline_seconds
        self.retry_period = le.retry_period_seconds
        self.on_acquired = on_acquired
        self.on_lost = on_lost
        self.on_released = on_released
        self.drain = drain
        self.metrics = metrics
        self.clock = clock
        timing = {
            "lease_duration": self.lease_duration,
            "renew_deadline": self.renew_deadline,
            "retry_period": self.retry_period,
            "clock": clock,
        }
        self._lock = threading.Lock()
        self.shards = [
            _Shard(
                k,
                LeaderElector(
                    kube,
                    name=config.shard_lease_name(k),
                    namespace=namespace,
                    identity=identity,
                    on_started_leading=functools.partial(self._started, k),
                    on_stopped_leading=functools.partial(self._stopped, k),
                    **timing,
                ),
            )
            for k in range(self.count)
        ]
        self.member_name = member_lease_name(config.name, identity)
        self.member = LeaderElector(
            kube, name=self.member_name, namespace=namespace, identity=identity, **timing
        )
        self._member_prefix = f"{config.name}-replica-"
        self._members: dict[str, tuple[tuple, float]] = {}  # name -> (record, observed at)
        self._collection = LEASES.format(namespace=quote(namespace, safe=""))
        self.live_replicas = 1
        self.share = self.count
        self._giving_up: threading.Thread | None = None
        self._last_round = clock()
        for k in range(self.count):
            self._gauge("shard_held", 0, k)

    # -- state ----------------------------------------------------------------------------

    def valid_until(self, k: int) -> float:
        """Monotonic deadline of our hold on shard ``k`` (0.0 when not held). Lock-free."""
        return self.shards[k].elector.lease_valid_until()

    def held(self) -> set[int]:
        """The shards whose lease we hold and handed to ``on_acquired``."""
        with self._lock:
            return {sh.k for sh in self.shards if sh.acquired}

    def liveness(self) -> str | None:
        """A reason when the balancing loop has not completed a round for a long time."""
        age = self.clock() - self._last_round
        if age > self.lease_duration + self.renew_deadline:
            return f"shard lease loop stuck for {age:.1f}s"
        return None

    def _gauge(self, name: str, value: float, k: int | None = None) -> None:
        if self.metrics is not None:
            self.metrics.set(name, value, {"shard": str(k)} if k is not None else None)

    def _count(self, event: str, k: int) -> None:
        if self.metrics is not None:
            self.metrics.inc("shard_transitions_total", {"shard": str(k), "event": event})

    # -- elector callbacks ------------------------------------------------------------------

    def _started(self, k: int) -> None:
        sh = self.shards[k]
        with self._lock:
            if sh.giving_up:  # a cancelled campaign won the race: never hand it over
                return
            sh.acquired = True
        log.info("acquired shard lease", shard=k, lease=sh.elector.name, identity=self.identity)
        self._gauge("shard_held", 1, k)
        self._count("acquired", k)
        self.on_acquired(k)

    def _stopped(self, k: int) -> None:
        sh = self.shards[k]
        with self._lock:
            was = sh.acquired
            sh.acquired = False
        if was:
            log.error("lost shard lease", shard=k, reason=sh.elector.lost_reason)
            self._gauge("shard_held", 0, k)
            self._count("lost", k)
            self.on_lost(k)

    # -- campaigning and giving up ----------------------------------------------------------

    def _campaign(self, sh: _Shard) -> None:
        sh.stop = threading.Event()
        sh.campaign_started = self.clock()
        sh.thread = threading.Thread(
            target=sh.elector.run, args=(sh.stop,), name=f"shard-{sh.k}-lease", daemon=True
        )
        log.debug("campaigning for shard", shard=sh.k)
        sh.thread.start()

    def _give_up(self, sh: _Shard) -> bool:
        """Drain (when held), stop renewing, release. Returns False when the drain failed and
        the shard is kept."""
        with self._lock:
            sh.giving_up = True
            held = sh.acquired
        if held and not self.drain(sh.k):
            with self._lock:
                sh.giving_up = False
            log.warning("shard did not drain; keeping it", shard=sh.k)
            return False
        sh.stop.set()
        if sh.thread is not None:
            sh.thread.join(self.retry_period + self.renew_deadline + 5)
        try:
            sh.elector.release()
        except Exception as exc:  # noqa: BLE001 - it expires instead; only slower
            log.warning("could not release a shard lease", shard=sh.k, error=str(exc))
        with self._lock:
            was = sh.acquired
            sh.acquired = False
            sh.giving_up = False
            sh.thread = None
        if was:
            log.info("released shard lease", shard=sh.k, lease=sh.elector.name)
            self._gauge("shard_held", 0, sh.k)
            self._count("released", sh.k)
            self.on_released(sh.k)
        return True

    def _give_up_in_background(self, sh: _Shard) -> None:
        self._giving_up = threading.Thread(
            target=self._give_up, args=(sh,), name=f"shard-{sh.k}-release", daemon=True
        )
        self._giving_up.start()

    # -- the loop ---------------------------------------------------------------------------

    def _list(self) -> dict[str, dict]:
        timeout = max(0.5, self.renew_deadline / 2)  # as an elector's request_timeout
        body = self.kube.request("GET", self._collection, timeout=timeout, retry=False)
        return {(i.get("metadata") or {}).get("name", ""): i for i in body.get("items") or []}

    def _live_members(self, leases: dict[str, dict]) -> int:
        now = self.clock()
        live = 1  # ourselves
        seen = set()
        for name, lease in leases.items():
            if not name.startswith(self._member_prefix) or name == self.member_name:
                continue
            seen.add(name)
            record = _record(lease)
            old = self._members.get(name)
            if old is None or old[0] != record:
                self._members[name] = (record, now)
            holder = (lease.get("spec") or {}).get("holderIdentity") or ""
            duration = float((lease.get("spec") or {}).get("leaseDurationSeconds") or 0)
            if holder and now < self._members[name][1] + duration:
                live += 1
        for name in set(self._members) - seen:
            del self._members[name]
        return live

    def round(self, first: bool = False) -> float:
        """One balancing round; returns how long to wait before the next one."""
        self.member.try_acquire_or_renew()
        leases = self._list()
        with self._lock:
            for sh in self.shards:
                if sh.thread is not None and not sh.thread.is_alive() and not sh.giving_up:
                    sh.thread = None  # a lost lease or an ended campaign
                    sh.acquired = False
                if sh.thread is None and sh.elector.name in leases:
                    sh.elector.observe(leases[sh.elector.name])
        self.live_replicas = self._live_members(leases)
        self.share = math.ceil(self.count / self.live_replicas)
        self._gauge("shard_replicas", self.live_replicas)
        if not first:
            self._balance(busy=self._giving_up is not None and self._giving_up.is_alive())
        return self._next_delay()

    def _balance(self, busy: bool) -> None:
        """Campaign up to the fair share; unless a give-up is under way (``busy``), also stop
        a hopeless campaign or give up one surplus shard. A shard being given up still counts
        as held, so a long drain never makes this replica take more than its share."""
        now = self.clock()
        with self._lock:
            held = [sh for sh in self.shards if sh.acquired]
            campaigning = [sh for sh in self.shards if sh.thread is not None and not sh.acquired]
            idle = [sh for sh in self.shards if sh.thread is None]
        for sh in campaigning:  # someone else got it: stop waiting for it
            if busy:
                break
            if not sh.elector.available() and now - sh.campaign_started > 2 * self.retry_period:
                self._give_up_in_background(sh)
                return
        deficit = self.share - len(held) - len(campaigning)
        if deficit > 0:
            free = [sh for sh in idle if sh.elector.available()]
            random.shuffle(free)
            for sh in free[:deficit]:
                self._campaign(sh)
        elif len(held) > self.share and not busy:
            surplus = max(held, key=lambda s: s.k)
            log.info(
                "holding more than the fair share; releasing a shard after draining it",
                shard=surplus.k,
                held=len(held),
                share=self.share,
                replicas=self.live_replicas,
            )
            self._give_up_in_background(surplus)

    def _next_delay(self) -> float:
        """retryPeriod (with jitter), or less when an observed lease is about to expire."""
        delay = self.retry_period * (1 + random.uniform(0, 0.1))
        with self._lock:
            for sh in self.shards:
                until = sh.elector.expires_in() if sh.thread is None else None
                if until is not None and 0 <= until < delay:
                    delay = until + 0.01
        return delay

    def run(self, stop: threading.Event) -> None:
        """Balance until ``stop`` is set; leases stay held (see `shutdown`)."""
        log.info(
            "sharding: campaigning for shard leases",
            shards=self.count,
            identity=self.identity,
            member_lease=self.member_name,
            pid=os.getpid(),
        )
        first = True
        while not stop.is_set():
            try:
                delay = self.round(first)
                first = False
            except Exception as exc:  # noqa: BLE001 - a failed round is retried next period
                log.warning("shard lease round failed", error=repr(exc))
                delay = self.retry_period
            self._last_round = self.clock()
            stop.wait(delay)

    def shutdown(self) -> None:
        """Stop every campaign and renewal and release every lease we hold (call after the
        controller drained: nothing may be in flight any more)."""
        if self._giving_up is not None:
            self._giving_up.join(self.retry_period + self.renew_deadline + 10)
        for sh in self.shards:
            sh.stop.set()
        for sh in self.shards:
            if sh.thread is not None:
                sh.thread.join(self.retry_period + 5)
        for sh in self.shards:
            if sh.thread is not None:
                try:
                    sh.elector.release()
                except Exception as exc:  # noqa: BLE001 - it expires instead
                    log.warning("could not release a shard lease", shard=sh.k, error=str(exc))
            with self._lock:
                sh.acquired = False
                sh.thread = None
            self._gauge("shard_held", 0, sh.k)
        try:
            self.member.release()
        except Exception as exc:  # noqa: BLE001
            log.warning("could not release the membership lease", error=str(exc))
