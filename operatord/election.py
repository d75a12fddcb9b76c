"""Leader election on a ``coordination.k8s.io/v1`` Lease, with client-go's semantics.

Guarantees:

- **Acquire.** A missing lease is created with us as holder. A lease held by someone else is
  taken only when its record (holder, times, duration, transitions) has not changed for the
  record's ``leaseDurationSeconds``, measured on *our* monotonic clock from the moment *we*
  observed the last change (client-go's ``observedTime``); wall-clock timestamps written by other
  hosts are never compared with ours. A lease with an empty holder (released) is taken at once.
  A standby polls every ``retry_period`` (plus up to 10% jitter) and wakes up exactly when the
  observed lease is due to expire, so takeover happens at most about ``lease_duration +
  retry_period`` after the old leader's last renewal.
- **Renew.** The leader rewrites ``renewTime`` every ``retry_period``. Leadership is lost, and
  ``on_stopped_leading`` is called exactly once, when no renewal has succeeded for
  ``renew_deadline`` (a watchdog thread enforces this even while a request hangs), or as soon as
  a read shows another holder in the lease. Because ``renew_deadline < lease_duration``, a
  leader gives up before any standby may take over.
- **Writes** are optimistic: every update sends the ``resourceVersion`` it read; a 409 Conflict
  triggers one immediate re-read and a fresh decision, never a blind overwrite.
- ``leaseTransitions`` is incremented whenever the holder changes to us; ``acquireTime`` is set
  then and kept across renewals. Times are written as RFC 3339 with microseconds
  (``2026-11-25T10:00:00.123456Z``).
- :meth:`release` clears ``holderIdentity`` and sets ``leaseDurationSeconds`` to 1 (as client-go
  does), and only when the lease, as read from the server, is held by us.
- Lease requests go out without the client's own retries and with a timeout of
  `request_timeout` (half of ``renew_deadline``, at least 0.5 s): the elector's timing is the
  only retry policy. A request on a connection that died silently therefore costs half the
  renew deadline, not all of it: a leader gets another try on a fresh connection before its
  deadline, and a standby whose poll hung when the lease expired takes over at most that much
  late; a slow but answering server still has half the renew deadline per request.
- **Freshness.** A successful acquire or renew is dated by the monotonic time at which its
  write was *sent* (not when the answer arrived: a process frozen between the server's commit
  and reading the answer must not extend its lease). :meth:`lease_valid_until` is that time plus
  ``renew_deadline``: the moment after which the lease may be about to pass to another replica
  (a standby takes over no earlier than ``lease_duration`` after it saw the renewal, and
  ``renew_deadline < lease_duration``). :meth:`is_fresh` compares it with the clock on every
  call, so staleness is visible the instant it happens, from any thread, without waiting for
  the watchdog or a poll: after a SIGSTOP/SIGCONT the first check already fails. Both are
  lock-free reads of one float.
- **Watching** (``watch=True``): while campaigning, a watch on the lease (by name) observes
  every change of it as it is made, so a standby takes over ``lease_duration`` after the
  holder's last renewal reached the server, not up to one retry period later (when its next
  poll would have seen it). The polls go on as before: a watch that fails or stalls only
  loses that head start.
- With the default clock (``time.monotonic``, Linux ``CLOCK_MONOTONIC``: system-wide and
  running through SIGSTOP), the deadline is comparable with ``time.monotonic()`` in any other
  process on the same host; :func:`deadline_fresh` is that comparison for worker processes.
"""

from __future__ import annotations

import math
import random
import secrets
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import structlog

log = structlog.get_logger("operatord.election")

LEASES = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
_JITTER = 0.1
_SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def default_identity() -> str:
    """``<hostname>_<random hex>``: unique per process even when pods share a hostname."""
    return f"{socket.gethostname()}_{secrets.token_hex(6)}"


def default_namespace() -> str:
    """The pod's namespace (``$POD_NAMESPACE`` or the service account file), else ``default``."""
    import os

    ns = os.environ.get("POD_NAMESPACE", "").strip()
    if ns:
        return ns
    try:
        with open(_SERVICE_ACCOUNT_NAMESPACE) as f:
            return f.read().strip() or "default"
    except OSError:
        return "default"


def deadline_fresh(valid_until: float | None, clock: Callable[[], float] = time.monotonic) -> bool:
    """True while ``clock()`` is strictly before ``valid_until`` (a :meth:`LeaderElector.lease_valid_until`
    value, possibly received from another process on the same host); ``None`` is never fresh."""
    return valid_until is not None and clock() < valid_until


def _shut(responses: list[Any]) -> None:
    """End the blocked read of these open watch responses."""
    for resp in list(responses):
        try:
            resp.shutdown()
        except Exception:  # noqa: BLE001 - already closed
            pass


def rfc3339_micro(moment: datetime | None = None) -> str:
    """A UTC timestamp in the Lease's MicroTime format, e.g. ``2026-11-25T10:00:00.123456Z``."""
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _record(lease: dict) -> tuple:
    """The part of a lease whose change counts as a sign of life from the holder."""
    spec = lease.get("spec") or {}
    return tuple(
        spec.get(k)
        for k in (
            "holderIdentity",
            "leaseDurationSeconds",
            "acquireTime",
            "renewTime",
            "leaseTransitions",
        )
    )


class LeaderElector:
    """Campaign for, hold, and release one Lease.

    ``kube`` is an :class:`operatord.kube.Kube` (anything with its ``request`` method).
    Durations are seconds and must satisfy ``lease_duration > renew_deadline > 1.2 *
    retry_period`` (client-go's rule). Callbacks run on the elector's threads and must return
    quickly; an exception from ``on_started_leading`` gives up leadership.
    ``on_stopped_leading`` is called only when leadership is *lost*, never on a requested stop.
    ``metrics`` (optional recorder) gets ``leader`` and ``leader_transitions_total``.
    """

    def __init__(
        self,
        kube: Any,
        *,
        name: str,
        namespace: str,
        identity: str,
        lease_duration: float,
        renew_deadline: float,
        retry_period: float,
        clock: Callable[[], float] = time.monotonic,
        on_started_leading: Callable[[], None] | None = None,
        on_stopped_leading: Callable[[], None] | None = None,
        metrics: Any = None,
        watch: bool = False,
    ) -> None:
        if not name or not namespace or not identity:
            raise ValueError("lease name, namespace and identity must not be empty")
        if not lease_duration > renew_deadline:
            raise ValueError("lease_duration must be greater than renew_deadline")
        if not renew_deadline > 1.2 * retry_period:
            raise ValueError("renew_deadline must be greater than 1.2 * retry_period")
        if retry_period <= 0:
            raise ValueError("retry_period must be positive")
        self.kube = kube
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.lease_duration = float(lease_duration)
        self.renew_deadline = float(renew_deadline)
        self.retry_period = float(retry_period)
        self.clock = clock
        self.on_started_leading = on_started_leading
        self.on_stopped_leading = on_stopped_leading
        self.metrics = metrics
        self.watch = watch
        self._observe_lock = threading.Lock()
        self._collection = LEASES.format(namespace=quote(namespace, safe=""))
        self._path = f"{self._collection}/{quote(name, safe='')}"
        self._lock = threading.Lock()
        self._observed: tuple | None = None
        self._observed_time: float | None = None
        self._observed_holder = ""
        self._leading = False
        self._lost = False
        self._running = False
        self.lost_reason: str | None = None
        #: monotonic time at which the last successful acquire or renew was sent (None before
        #: the first)
        self.last_renewal: float | None = None
        # last_renewal + renew_deadline while leading, else 0.0; one float, read without a lock
        self._valid_until = 0.0
        self._last_attempt = clock()

    # -- state ----------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        """True while we hold the lease and the last renewal is within ``renew_deadline``."""
        with self._lock:
            if not self._leading or self._lost or self.last_renewal is None:
                return False
            return self.clock() - self.last_renewal < self.renew_deadline

    def lease_valid_until(self) -> float:
        """The monotonic deadline of our leadership: last renewal sent + ``renew_deadline``.

        0.0 when we are not leading (never acquired, stopped, released or lost), so
        ``clock() < lease_valid_until()`` is the complete check. Thread-safe and lock-free.
        """
        return self._valid_until

    def is_fresh(self) -> bool:
        """True while we lead and our last renewal is younger than ``renew_deadline``.

        Computed from the clock on each call: it turns False at the deadline even while a
        renewal hangs and before the watchdog or any poll notices. Thread-safe and lock-free.
        """
        return self.clock() < self._valid_until

    @property
    def holder(self) -> str:
        """The holder identity in the last lease we read ("" when none)."""
        return self._observed_holder

    def liveness(self) -> str | None:
        """A health check: a reason when renewals are stale, leadership was lost, or the
        campaign loop has not completed an attempt for ``lease_duration + renew_deadline``."""
        now = self.clock()
        with self._lock:
            if self._lost:
                return f"leadership lost: {self.lost_reason}"
            if self._leading and self.last_renewal is not None:
                age = now - self.last_renewal
                if age >= self.renew_deadline:
                    return f"lease not renewed for {age:.1f}s"
                return None
            if self._running:
                age = now - self._last_attempt
                if age > self.lease_duration + self.renew_deadline:
                    return f"election loop stuck for {age:.1f}s"
        return None

    def observe(self, lease: dict) -> None:
        """Take note of the lease as read by someone else (e.g. a list of every shard lease):
        the same bookkeeping as our own reads, so a lease watched this way can be taken over
        ``leaseDurationSeconds`` after its record last changed, not after our first read."""
        self._observe(lease)

    def available(self) -> bool:
        """True when the last lease we observed has no holder, is ours, or has not changed
        for its ``leaseDurationSeconds`` (on our clock); also True when none was observed
        (the lease may not exist yet). An attempt may still lose the race for it."""
        if self._observed is None or self._observed_time is None:
            return True
        holder = self._observed_holder
        if not holder or holder == self.identity:
            return True
        duration = float(self._observed[1] or self.lease_duration)
        return self.clock() >= self._observed_time + duration

    def expires_in(self) -> float | None:
        """Seconds until the observed lease of another holder may be taken over (negative:
        already), or None when it is free, ours, or was never observed."""
        if self._observed is None or self._observed_time is None:
            return None
        holder = self._observed_holder
        if not holder or holder == self.identity:
            return None
        duration = float(self._observed[1] or self.lease_duration)
        return self._observed_time + duration - self.clock()

    # -- API ------------------------------------------------------------------------------

    @property
    def request_timeout(self) -> float:
        """Seconds one lease request may take: half of ``renew_deadline``, at least 0.5."""
        return max(0.5, self.renew_deadline / 2)

    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        return self.kube.request(method, path, body=body, timeout=self.request_timeout, retry=False)

    def _get(self) -> dict | None:
        from operatord.kube import ApiError

        try:
            return self._request("GET", self._path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def _observe(self, lease: dict) -> None:
        record = _record(lease)
        with self._observe_lock:  # the lease watch observes from its own thread
            if record != self._observed:
                self._observed = record
                self._observed_time = self.clock()
            self._observed_holder = (lease.get("spec") or {}).get("holderIdentity") or ""

    def _watch_lease(self, stop: threading.Event) -> None:
        """Observe every change of the lease until ``stop`` (see **Watching**)."""
        from operatord.kube import ApiError

        current: list[Any] = []  # the open watch response, for the stopper to end its read

        def opened(resp: Any) -> None:
            current[:] = [resp]
            if stop.is_set():
                _shut(current)

        def stopper() -> None:
            stop.wait()
            _shut(current)

        threading.Thread(target=stopper, name="lease-watch-stop", daemon=True).start()
        while not stop.is_set():
            try:
                res = self.kube.resource("coordination.k8s.io/v1", "Lease")
                lease = self._get()
                if lease is None:  # nothing to observe yet; the campaign creates it
                    stop.wait(self.retry_period)
                    continue
                self._observe(lease)
                events = self.kube.watch(
                    res,
                    self.namespace,
                    resource_version=(lease.get("metadata") or {}).get("resourceVersion"),
                    field_selector=f"metadata.name={self.name}",
                    timeout_seconds=60,
                    open_timeout=self.request_timeout,
                    on_open=opened,
                )
                for event in events:
                    if stop.is_set():
                        return
                    if event.get("type") in ("ADDED", "MODIFIED"):
                        self._observe(event.get("object") or {})
                    elif event.get("type") == "ERROR":
                        break  # e.g. 410 Gone: read and watch again
            except (ApiError, ValueError, OSError) as exc:
                log.debug("lease watch failed; polling only", lease=self.name, error=str(exc))
                stop.wait(self.retry_period)

    def _spec(self, old: dict, now: str) -> dict:
        spec = dict(old)
        if (old.get("holderIdentity") or "") != self.identity:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = int(old.get("leaseTransitions") or 0) + (1 if old else 0)
        spec.setdefault("acquireTime", now)
        spec.setdefault("leaseTransitions", 0)
        spec["holderIdentity"] = self.identity
        spec["leaseDurationSeconds"] = int(math.ceil(self.lease_duration))
        spec["renewTime"] = now
        return spec

    def _attempt(self) -> float | None:
        """One read-decide-write round; raises ApiError on a failed request.

        Returns the monotonic time the successful write was sent, or None when someone else
        holds an unexpired lease.
        """
        now = rfc3339_micro()
        lease = self._get()
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec({}, now),
            }
            sent = self.clock()
            self._observe(self._request("POST", self._collection, body))
            return sent
        self._observe(lease)
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        if holder and holder != self.identity:
            duration = spec.get("leaseDurationSeconds") or self.lease_duration
            assert self._observed_time is not None
            if self.clock() < self._observed_time + float(duration):
                return None
        lease["spec"] = self._spec(spec, now)  # metadata keeps the resourceVersion we read
        sent = self.clock()
        self._observe(self._request("PUT", self._path, lease))
        return sent

    def try_acquire_or_renew(self) -> bool:
        """One campaign/renewal step; True when we hold the lease afterwards.

        Failed requests return False (and are logged); a 409 gets one immediate re-read.
        """
        from operatord.kube import ApiError

        for attempt in (1, 2):
            try:
                sent = self._attempt()
            except ApiError as exc:
                if exc.status == 409 and attempt == 1:
                    log.debug("lease write conflicted; re-reading", lease=self.name)
                    continue
                log.warning("lease request failed", lease=self.name, error=str(exc))
                return False
            except Exception as exc:  # noqa: BLE001 - a failed attempt, retried next period
                log.warning("lease request failed", lease=self.name, error=repr(exc))
                return False
            if sent is None:
                return False
            with self._lock:
                self.last_renewal = sent
                if self._leading and not self._lost:
                    self._valid_until = sent + self.renew_deadline
            return True
        return False

    def release(self) -> bool:
        """Give the lease up if the server says we hold it; returns True when released.

        Call after :meth:`run` has returned (a running elector would re-acquire the free lease).
        Raises ``ApiError`` when the lease cannot be read or written.
        """
        from operatord.kube import ApiError

        for _ in range(3):
            lease = self._get()
            if lease is None:
                return False
            spec = lease.get("spec") or {}
            if (spec.get("holderIdentity") or "") != self.identity:
                return False
            now = rfc3339_micro()
            lease["spec"] = {
                **spec,
                "holderIdentity": "",
                "leaseDurationSeconds": 1,
                "acquireTime": now,
                "renewTime": now,
            }
            try:
                self._observe(self._request("PUT", self._path, lease))
            except ApiError as exc:
                if exc.status == 409:
                    continue
                raise
            with self._lock:
                self._valid_until = 0.0
                self._leading = False
            self._set_gauge(0)
            log.info("released leader lease", lease=self.name, identity=self.identity)
            return True
        return False

    # -- loop -----------------------------------------------------------------------------

    def _acquire_delay(self) -> float:
        delay = self.retry_period * (1 + random.uniform(0, _JITTER))
        if self._observed_holder and self._observed_time is not None and self._observed:
            duration = float(self._observed[1] or self.lease_duration)
            until_expiry = self._observed_time + duration - self.clock()
            if 0 <= until_expiry < delay:
                delay = until_expiry + 0.01
        return delay

    def _set_gauge(self, value: int) -> None:
        if self.metrics is not None:
            self.metrics.set("leader", value)

    def _lose(self, reason: str) -> None:
        with self._lock:
            if not self._leading or self._lost:
                return
            self._valid_until = 0.0
            self._lost = True
            self._leading = False
            self.lost_reason = reason
        self._set_gauge(0)
        log.error("leadership lost", lease=self.name, identity=self.identity, reason=reason)
        if self.on_stopped_leading is not None:
            try:
                self.on_stopped_leading()
            except Exception:  # noqa: BLE001
                log.exception("on_stopped_leading raised")

    def _watchdog(self, done: threading.Event) -> None:
        while not done.is_set():
            with self._lock:
                last = self.last_renewal
            assert last is not None
            remaining = last + self.renew_deadline - self.clock()
            if remaining <= 0:
                self._lose(f"no successful renewal for {self.renew_deadline:g}s")
                return
            done.wait(min(remaining, self.retry_period))

    def run(self, stop_event: threading.Event) -> bool:
        """Campaign until leader, then renew until ``stop_event`` is set or leadership is lost.

        Returns True when it ended because of ``stop_event`` (the lease is still ours; call
        :meth:`release`), False when leadership was lost (``on_stopped_leading`` was called).
        """
        with self._lock:
            self._running = True
            self._lost = False
            self.lost_reason = None
            self._last_attempt = self.clock()
        try:
            return self._run(stop_event)
        finally:
            with self._lock:
                self._valid_until = 0.0
                self._running = False
                self._leading = False

    def _run(self, stop_event: threading.Event) -> bool:
        log.info("campaigning for leader lease", lease=self.name, identity=self.identity)
        watching = threading.Event()
        if self.watch:
            threading.Thread(
                target=self._watch_lease, args=(watching,), name="lease-watch", daemon=True
            ).start()
        try:
            while not stop_event.is_set():
                acquired = self.try_acquire_or_renew()
                self._last_attempt = self.clock()
                if acquired:
                    break
                stop_event.wait(self._acquire_delay())
            else:
                return True
        finally:
            watching.set()

        with self._lock:
            self._leading = True
            assert self.last_renewal is not None
            self._valid_until = self.last_renewal + self.renew_deadline
        self._set_gauge(1)
        if self.metrics is not None:
            self.metrics.inc("leader_transitions_total")
        log.info("became leader", lease=self.name, identity=self.identity)
        done = threading.Event()
        watchdog = threading.Thread(
            target=self._watchdog, args=(done,), name="lease-watchdog", daemon=True
        )
        watchdog.start()
        try:
            if self.on_started_leading is not None:
                try:
                    self.on_started_leading()
                except Exception as exc:  # noqa: BLE001
                    log.exception("on_started_leading raised")
                    self._lose(f"on_started_leading raised {exc!r}")
            while not self._lost and not stop_event.wait(self.retry_period):
                if self._lost:
                    break
                if self.try_acquire_or_renew():
                    continue
                if self._observed_holder and self._observed_holder != self.identity:
                    self._lose(f"lease is now held by {self._observed_holder}")
        finally:
            done.set()
        if self._lost:
            return False
        self._set_gauge(0)
        return True
