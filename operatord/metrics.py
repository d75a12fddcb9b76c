"""Prometheus metrics: one catalog, one recorder API, counters owned by the leader.

Engine code records through a *recorder* with three methods, using names from
:data:`CATALOG` without the ``operatord_`` prefix::

    rec.inc("syncs_total", {"result": "ok"})
    rec.observe("sync_duration_seconds", 0.12, {"result": "ok"})
    rec.set("queue_depth", 7, {"worker": "0"})

Guarantees:

- An unknown name, a method that does not fit the metric's type (``observe`` on a counter,
  ``set`` on a counter), a label set that is not exactly the declared one, a label value outside
  a declared value set, or a negative counter increment raises :class:`MetricError` at the call,
  in every implementation, so a typo fails the first test that exercises it.
- :class:`Metrics` lives in the leader process and owns the only registry. :class:`DeltaRecorder`
  lives in worker processes: it buffers operations and :meth:`DeltaRecorder.drain` returns them as
  plain data (tuples of str/float/tuple) that pickle across a process boundary; the leader feeds
  them to :meth:`Metrics.apply`. Counters therefore survive worker restarts and no
  ``prometheus_client`` multiprocess mode (files on disk) is involved.
- No metric carries a per-parent label; every label has bounded cardinality (results, kinds,
  verbs, status codes, worker shard index).
"""

from __future__ import annotations

import os
import platform
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import structlog

log = structlog.get_logger("operatord.metrics")

if TYPE_CHECKING:  # imported where used: worker processes record deltas without it
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

PREFIX = "operatord_"

#: Content type of :meth:`Metrics.render`, for anyone serving it by hand.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class MetricError(ValueError):
    """A recorder call that does not match the catalog (name, type, labels or value)."""


@dataclass(frozen=True)
class MetricSpec:
    """One metric of the catalog.

    ``name`` is without the prefix; counters end in ``_total``. ``values`` optionally restricts
    a label to a fixed set of values; such label sets are pre-initialised to zero so that
    ``rate()`` works before the first event.
    """

    name: str
    type: str  # "counter" | "gauge" | "histogram"
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] | None = None
    values: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def full_name(self) -> str:
        """The exposed metric family name (counters keep their ``_total`` suffix)."""
        return PREFIX + self.name

    def sample_names(self) -> tuple[str, ...]:
        """Every sample name this metric exposes in the text format."""
        if self.type == "histogram":
            return tuple(self.full_name + s for s in ("_bucket", "_count", "_sum"))
        return (self.full_name,)


_SYNC_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0)
_API_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_SYNC_RESULTS = ("ok", "error", "invalid", "conflict", "timeout", "crash")
_FINALIZE_RESULTS = ("finalized", "pending", "error", "invalid", "timeout", "crash")

CATALOG: tuple[MetricSpec, ...] = (
    MetricSpec(
        "syncs_total",
        "counter",
        "Syncs of a parent (one per dispatch to a worker), by result: ok, error (handler raised "
        "or a write failed), invalid (bad response), conflict (a desired child's name is taken "
        "by an object that is not this parent's child), timeout (handlerTimeoutSeconds "
        "exceeded), crash (the worker process died while syncing this parent alone).",
        ("result",),
        values={"result": _SYNC_RESULTS},
    ),
    MetricSpec(
        "syncs_skipped_total",
        "counter",
        "Dispatches of a parent skipped because its inputs (parent without status, children "
        "and related objects by resourceVersion, controller config, handler version) hash to "
        "the fingerprint its status records from its last converged sync (skipUnchanged): no "
        "handler call, no write.",
    ),
    MetricSpec(
        "handler_calls_total",
        "counter",
        "Calls of the user's handler, by method (sync, finalize). One sync runs sync more than "
        "once when it wrote children: the follow-up run observes them before status is written.",
        ("method",),
        values={"method": ("sync", "finalize")},
    ),
    MetricSpec(
        "sync_duration_seconds",
        "histogram",
        "Time from a worker taking a parent to its sync result, including child and status "
        "writes, by result.",
        ("result",),
        _SYNC_BUCKETS,
        values={"result": _SYNC_RESULTS},
    ),
    MetricSpec(
        "finalizes_total",
        "counter",
        "Handler finalize calls, by result: finalized (finalizer removed), pending "
        "(finalized=False), error, invalid, timeout.",
        ("result",),
        values={"result": _FINALIZE_RESULTS},
    ),
    MetricSpec(
        "finalize_duration_seconds",
        "histogram",
        "Time from a worker taking a deleted parent to its finalize result.",
        buckets=_SYNC_BUCKETS,
    ),
    MetricSpec(
        "queue_depth",
        "gauge",
        "Parents waiting to be dispatched, by worker shard index (not counting delayed adds).",
        ("worker",),
    ),
    MetricSpec(
        "in_flight",
        "gauge",
        "Parents a worker holds right now (sent to it, result not back yet), by worker index.",
        ("worker",),
    ),
    MetricSpec(
        "in_flight_limit",
        "gauge",
        "How many parents a worker may hold now, by worker index: inFlightPerWorker, or with "
        "inFlightAdaptive the limit adapted to the latency of its API requests (lower while "
        "they queue in the API server).",
        ("worker",),
    ),
    MetricSpec(
        "queue_wait_seconds",
        "histogram",
        "Time a parent spent queued between becoming ready and being dispatched to a worker.",
        buckets=_WAIT_BUCKETS,
    ),
    MetricSpec(
        "parents_backing_off",
        "gauge",
        "Parents currently waiting out an exponential backoff after a failure.",
    ),
    MetricSpec(
        "parents_deleting",
        "gauge",
        "Parents being deleted (deletionTimestamp set) that are still in the API server: their "
        "finalizers, this operator's or others', have not all been removed; computed at scrape "
        "time.",
    ),
    MetricSpec(
        "parent_deletion_max_age_seconds",
        "gauge",
        "Seconds since the deletionTimestamp of the oldest parent still being deleted (0: none); "
        "a deletion that stays blocked raises it without bound. Computed at scrape time.",
    ),
    MetricSpec(
        "retries_total",
        "counter",
        "Parents requeued with backoff after a failed sync or finalize.",
    ),
    MetricSpec(
        "child_writes_total",
        "counter",
        "Writes of child objects, by child kind and operation.",
        ("kind", "operation"),
        values={"operation": ("create", "update", "delete", "recreate", "apply")},
    ),
    MetricSpec(
        "status_writes_total",
        "counter",
        "Writes of a parent's status subresource.",
    ),
    MetricSpec(
        "finalizer_writes_total",
        "counter",
        "Writes adding or removing operatord's finalizer on a parent.",
        ("operation",),
        values={"operation": ("add", "remove")},
    ),
    MetricSpec(
        "watch_events_total",
        "counter",
        "Watch events received, by resource (plural.group) and event type.",
        ("resource", "type"),
        values={"type": ("ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR")},
    ),
    MetricSpec(
        "watch_restarts_total",
        "counter",
        "Watches re-established, by resource and reason (e.g. timeout, expired, error, closed).",
        ("resource", "reason"),
    ),
    MetricSpec(
        "watch_idle_seconds",
        "gauge",
        "Seconds since the watch of this resource was last confirmed: it heard from the API "
        "server (an event, a bookmark, a list or an opened watch) or a liveness check passed; "
        "computed at scrape time.",
        ("resource",),
    ),
    MetricSpec(
        "watch_idle_limit_seconds",
        "gauge",
        "The informer's liveness bound, health.watchSilenceSeconds plus the 3 s check timeout: "
        "a watch whose connection stopped carrying anything is torn down and reported down "
        "within it, and a healthy one is confirmed at least this often.",
        ("resource",),
    ),
    MetricSpec(
        "watch_up",
        "gauge",
        "1 while the watch of this resource is up, 0 while /readyz fails for it: a request of "
        "its own (liveness check, list, watch) got no HTTP answer and nothing was heard since, "
        "or it has not been confirmed for 120 s; computed at scrape time.",
        ("resource",),
    ),
    MetricSpec(
        "watch_checks_total",
        "counter",
        "Liveness checks of silent watches (a short watch from the watch's resourceVersion), by "
        "resource and result: ok, unanswered (no HTTP answer: torn down, down), behind (events "
        "the watch had not delivered: torn down), busy (429/5xx), expired (410: relist), "
        "error (another answer: torn down).",
        ("resource", "result"),
    ),
    MetricSpec(
        "cached_objects",
        "gauge",
        "Objects held in the leader's cache, by resource.",
        ("resource",),
    ),
    MetricSpec(
        "workers_alive",
        "gauge",
        "Worker processes currently running.",
    ),
    MetricSpec(
        "worker_restarts_total",
        "counter",
        "Worker processes restarted after dying.",
    ),
    MetricSpec(
        "worker_restart_delay_seconds_total",
        "counter",
        "Seconds worker restarts waited for their pacing: the first 10 restarts of a worker "
        "within a minute start at once, each further one waits twice as long (0.1 s up to 30 s).",
    ),
    MetricSpec(
        "api_requests_total",
        "counter",
        "Kubernetes API requests, by HTTP verb and status code ('error' when no response).",
        ("verb", "code"),
    ),
    MetricSpec(
        "api_request_duration_seconds",
        "histogram",
        "Kubernetes API request latency, by HTTP verb.",
        ("verb",),
        _API_BUCKETS,
    ),
    MetricSpec(
        "leader",
        "gauge",
        "1 while this replica holds the leader lease, 0 otherwise.",
    ),
    MetricSpec(
        "leader_transitions_total",
        "counter",
        "Times this replica became leader.",
    ),
    MetricSpec(
        "shard_held",
        "gauge",
        "sharding.shards > 1: 1 while this replica holds the lease of the replica shard, else 0.",
        ("shard",),
    ),
    MetricSpec(
        "shard_parents",
        "gauge",
        "sharding.shards > 1: parents of the replica shard cached (and synced) by this replica.",
        ("shard",),
    ),
    MetricSpec(
        "shard_queue_depth",
        "gauge",
        "sharding.shards > 1: parents of the replica shard waiting to be dispatched.",
        ("shard",),
    ),
    MetricSpec(
        "shard_transitions_total",
        "counter",
        "sharding.shards > 1: shard leases this replica acquired, released (after draining, "
        "to rebalance or on shutdown) or lost (not renewed in time, or taken by another holder).",
        ("shard", "event"),
    ),
    MetricSpec(
        "shard_replicas",
        "gauge",
        "sharding.shards > 1: live replicas this replica counts (its fair share is "
        "ceil(shards / replicas)).",
    ),
    MetricSpec(
        "shard_server_side",
        "gauge",
        "sharding.shards > 1: 1 when the API server applied the parents' shardSelector "
        "(KEP-5866), 0 when this replica receives every parent and filters them itself.",
    ),
    MetricSpec(
        "shard_filtered_objects_total",
        "counter",
        "sharding.shards > 1: objects received from the API server and dropped because they "
        "belong to a shard this replica does not hold (the cost of client-side filtering).",
        ("resource",),
    ),
    MetricSpec(
        "events_total",
        "counter",
        "Kubernetes Events posted on parents, by event type.",
        ("type",),
        values={"type": ("Normal", "Warning")},
    ),
    MetricSpec(
        "worker_resident_memory_bytes",
        "gauge",
        "Resident memory of each worker process (sampled by the leader from /proc every few "
        "seconds), by worker shard index.",
        ("worker",),
    ),
    MetricSpec(
        "worker_cpu_seconds_total",
        "counter",
        "CPU time (user + system) used by the worker processes of each shard index; keeps "
        "counting across worker restarts.",
        ("worker",),
    ),
    MetricSpec(
        "build_info",
        "gauge",
        "Always 1; labels carry the operatord version and Python version.",
        ("version", "python"),
    ),
)

_BY_NAME: dict[str, MetricSpec] = {m.name: m for m in CATALOG}

# A delta is ("inc" | "set" | "observe", name, ((label, value), ...), value).
Delta = tuple[str, str, tuple[tuple[str, str], ...], float]
_ALLOWED_OPS = {"counter": ("inc",), "gauge": ("inc", "set"), "histogram": ("observe",)}


def spec(name: str) -> MetricSpec:
    """The catalog entry for ``name`` (without prefix); :class:`MetricError` if unknown."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise MetricError(f"unknown metric {name!r}") from None


def _validate(op: str, name: str, labels: Mapping[str, Any] | None, value: float) -> Delta:
    """Check one operation against the catalog and return it as a plain-data delta."""
    m = spec(name)
    if op not in _ALLOWED_OPS[m.type]:
        raise MetricError(f"{op}() is not allowed on {m.type} {name!r}")
    labels = labels or {}
    controller = None
    if "controller" in labels and "controller" not in m.labels:
        labels = dict(labels)
        controller = str(labels.pop("controller"))
    if set(labels) != set(m.labels):
        raise MetricError(
            f"{name!r} takes labels {sorted(m.labels)}, got {sorted(labels)}",
        )
    pairs = []
    for key in m.labels:
        v = str(labels[key])
        allowed = m.values.get(key)
        if allowed is not None and v not in allowed:
            raise MetricError(f"{name!r}: label {key}={v!r} not in {list(allowed)}")
        pairs.append((key, v))
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise MetricError(f"{name!r}: value {value!r} is not a number") from None
    if op == "inc" and m.type == "counter" and value < 0:
        raise MetricError(f"{name!r}: counters only go up, got {value}")
    if controller is not None:
        pairs.insert(0, ("controller", controller))
    return (op, name, tuple(pairs), value)


class Recorder(Protocol):
    """What engine code records through; both implementations below satisfy it."""

    def inc(self, name: str, labels: Mapping[str, Any] | None = None, value: float = 1.0) -> None:
        """Add ``value`` to a counter or gauge."""

    def observe(self, name: str, value: float, labels: Mapping[str, Any] | None = None) -> None:
        """Record one observation in a histogram."""

    def set(self, name: str, value: float, labels: Mapping[str, Any] | None = None) -> None:
        """Set a gauge."""


class Metrics:
    """The leader's metrics: every catalog metric, exposed through :attr:`registry`.

    Operations apply immediately and are thread-safe (prometheus_client locks per child).
    ``_created`` series are disabled process-wide so the exposition stays small.

    - ``controller`` (the config's ``name``): every ``operatord_*`` series carries the label
      ``controller``, so operators built on operatord can be told apart in one Prometheus.
      A recorder call may pass ``controller`` among its labels (the series of one controller
      of a daemon with several); without it the series carries the daemon's ``name``.
    - ``process=True`` adds the standard ``process_*`` series of this (the leader) process.
    - ``controller_runtime=True`` also exports the controller-runtime and client-go series
      listed in :data:`CONTROLLER_RUNTIME_SERIES`, derived from the same recorder calls.
    """

    def __init__(
        self,
        version: str | None = None,
        *,
        controller: str | None = None,
        process: bool = True,
        controller_runtime: bool = False,
        lease: str | None = None,
        max_concurrent: int | None = None,
    ) -> None:
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Gauge,
            Histogram,
            ProcessCollector,
            disable_created_metrics,
        )

        disable_created_metrics()
        self.controller = controller
        self._catalog = CollectorRegistry(auto_describe=True)
        self.registry = CollectorRegistry(auto_describe=True)
        self._labelled = _Labelled(self._catalog, controller)
        self.registry.register(self._labelled)
        if process:
            ProcessCollector(registry=self.registry)
        self._compat = (
            _ControllerRuntime(self.registry, controller or "operatord", lease, max_concurrent)
            if controller_runtime
            else None
        )
        self._metrics: dict[str, Counter | Gauge | Histogram] = {}
        for m in CATALOG:
            if m.name in _SCRAPE_TIME:
                continue
            kwargs: dict[str, Any] = {
                "labelnames": ("controller", *m.labels),
                "registry": self._catalog,
            }
            if m.type == "counter":
                self._metrics[m.name] = Counter(m.full_name, m.help, **kwargs)
            elif m.type == "gauge":
                self._metrics[m.name] = Gauge(m.full_name, m.help, **kwargs)
            else:
                if m.buckets is not None:
                    kwargs["buckets"] = m.buckets
                self._metrics[m.name] = Histogram(m.full_name, m.help, **kwargs)
        self._catalog.register(_WatchActivityCollector())
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None
        # (name, label pairs) -> the labelled child, and (op, name, pairs) already validated:
        # worker deltas repeat the same few series, so a repeat costs two dict lookups.
        self._children: dict[tuple[str, tuple], Any] = {}
        self._valid: set[tuple[str, str, tuple]] = set()
        self._default = controller or ""
        self.add_controller(self._default)
        self.set("build_info", 1, {"version": version or _version(), "python": _python()})

    def add_controller(self, name: str) -> None:
        """Create the series of controller ``name`` whose label values are all known, at 0, so
        dashboards and rate() see them before the first event."""
        for m in CATALOG:
            if m.name in _SCRAPE_TIME or set(m.values) != set(m.labels):
                continue
            for combo in _combinations(m):
                self._metrics[m.name].labels(controller=name, **combo)

    # -- recorder API ---------------------------------------------------------------------

    def inc(self, name: str, labels: Mapping[str, Any] | None = None, value: float = 1.0) -> None:
        """Add ``value`` (default 1) to a counter or gauge."""
        self._apply_one(_validate("inc", name, labels, value))

    def observe(self, name: str, value: float, labels: Mapping[str, Any] | None = None) -> None:
        """Record one histogram observation."""
        self._apply_one(_validate("observe", name, labels, value))

    def set(self, name: str, value: float, labels: Mapping[str, Any] | None = None) -> None:
        """Set a gauge to ``value``."""
        self._apply_one(_validate("set", name, labels, value))

    # -- worker deltas ----------------------------------------------------------------------

    def apply(self, deltas: Iterable[Any]) -> None:
        """Apply deltas drained from a :class:`DeltaRecorder`, in order.

        Every delta is validated before any is applied, so a malformed batch (e.g. from a
        worker running a different catalog) raises :class:`MetricError` and changes nothing.
        """
        checked = []
        valid = self._valid
        for d in deltas:
            try:
                op, name, pairs, value = d
                key = (op, name, tuple(pairs))
            except (TypeError, ValueError):
                raise MetricError(f"malformed metric delta {d!r}") from None
            if (
                key in valid
                and isinstance(value, int | float)
                and not isinstance(value, bool)
                and (op != "inc" or value >= 0)
            ):
                checked.append((op, name, key[2], value))
                continue
            try:
                labels = dict(pairs)
            except (TypeError, ValueError):
                raise MetricError(f"malformed metric delta {d!r}") from None
            delta = _validate(op, name, labels, value)
            valid.add((op, name, delta[2]))
            checked.append(delta)
        for d in checked:
            self._apply_one(d)

    def _apply_one(self, delta: Delta) -> None:
        op, name, pairs, value = delta
        if name in _SCRAPE_TIME:
            raise MetricError(f"{name!r} is computed at scrape time and cannot be recorded")
        metric: Any = self._children.get((name, pairs))
        if metric is None:
            labels = dict(pairs)
            labels.setdefault("controller", self._default)
            metric = self._metrics[name].labels(**labels)
            self._children[(name, pairs)] = metric
        if op == "inc":
            metric.inc(value)
        elif op == "set":
            metric.set(value)
        else:
            metric.observe(value)
        if self._compat is not None:
            self._compat.mirror(op, name, dict(pairs), value)

    # -- exposition ---------------------------------------------------------------------------

    def before_scrape(self, refresh: Callable[[], None]) -> None:
        """Call ``refresh`` at the start of every scrape (and `render`), before any series is
        read, so gauges it sets are current in that scrape. An exception in ``refresh`` is
        logged and the scrape goes on with the values already set."""
        self._labelled.refreshers.append(refresh)

    def render(self) -> bytes:
        """The registry in the Prometheus text exposition format."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    def serve(self, port: int, host: str = "0.0.0.0") -> int:
        """Serve the registry over HTTP (any path, conventionally /metrics) in a daemon thread.

        ``port=0`` binds a free port. Returns the bound port, also readable as ``.port``.
        """
        if self._server is not None:
            raise RuntimeError("metrics server already running")
        from prometheus_client import start_http_server

        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        self.port = self._server.server_port
        return self.port

    def stop(self) -> None:
        """Stop the HTTP server if running; idempotent."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server = self._thread = None


#: Gauges computed when scraped, from the informers running in this process.
_SCRAPE_TIME = (
    "watch_idle_seconds",
    "watch_idle_limit_seconds",
    "watch_up",
    "watch_checks_total",
)


class _WatchActivityCollector:
    """Yields the watch_* series of :data:`_SCRAPE_TIME` from the informers of this process
    (:func:`operatord.informer.watch_activity` and :func:`operatord.informer.check_counts`)."""

    def describe(self) -> list:
        return [self._family(name) for name in _SCRAPE_TIME]

    def collect(self) -> list:
        from operatord.informer import check_counts, watch_activity

        idle, limit, up, checks = (self._family(name) for name in _SCRAPE_TIME)
        for resource, health in sorted(watch_activity().items()):
            idle.add_metric([resource], health.idle)
            limit.add_metric([resource], health.limit)
            up.add_metric([resource], 0.0 if health.problem else 1.0)
        for (resource, result), count in sorted(check_counts().items()):
            checks.add_metric([resource, result], count)
        return [idle, limit, up, checks]

    @staticmethod
    def _family(name: str) -> GaugeMetricFamily | CounterMetricFamily:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        m = _BY_NAME[name]
        if m.type == "counter":
            return CounterMetricFamily(m.full_name[: -len("_total")], m.help, labels=m.labels)
        return GaugeMetricFamily(m.full_name, m.help, labels=list(m.labels))


class DeltaRecorder:
    """A worker-side recorder that buffers operations for the leader.

    Validation happens at the call, exactly as in :class:`Metrics`. Counter increments with the
    same labels are summed until drained; gauge operations and histogram observations keep their
    order. Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._ops: list[Delta] = []

    def inc(self, name: str, labels: Mapping[str, Any] | None = None, value: float = 1.0) -> None:
        """Buffer an increment of a counter or gauge."""
        self._add(_validate("inc", name, labels, value))

    def observe(self, name: str, value: float, labels: Mapping[str, Any] | None = None) -> None:
        """Buffer one histogram observation."""
        self._add(_validate("observe", name, labels, value))

    def set(self, name: str, value: float, labels: Mapping[str, Any] | None = None) -> None:
        """Buffer setting a gauge."""
        self._add(_validate("set", name, labels, value))

    def _add(self, delta: Delta) -> None:
        op, name, pairs, value = delta
        with self._lock:
            if op == "inc" and _BY_NAME[name].type == "counter":
                key = (name, pairs)
                self._counts[key] = self._counts.get(key, 0.0) + value
            else:
                self._ops.append(delta)

    def drain(self) -> list[Delta]:
        """Return and forget everything buffered, as plain picklable tuples."""
        with self._lock:
            out: list[Delta] = [("inc", n, p, v) for (n, p), v in self._counts.items()]
            out.extend(self._ops)
            self._counts = {}
            self._ops = []
        return out

    def __len__(self) -> int:
        with self._lock:
            return len(self._counts) + len(self._ops)


def _combinations(m: MetricSpec) -> list[dict[str, str]]:
    combos: list[dict[str, str]] = [{}]
    for key in m.labels:
        combos = [{**c, key: v} for c in combos for v in m.values[key]]
    return combos


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("operatord")
    except Exception:
        return "unknown"


def _python() -> str:
    return platform.python_version()


def metrics_reference_markdown() -> str:
    """The catalog as a Markdown table: metric, type, labels, help."""
    lines = ["| metric | type | labels | description |", "|---|---|---|---|"]
    for m in CATALOG:
        labels = []
        for key in m.labels:
            allowed = m.values.get(key)
            labels.append(f"`{key}` ({', '.join(allowed)})" if allowed else f"`{key}`")
        desc = m.help
        if m.buckets:
            desc += " Buckets: " + ", ".join(f"{b:g}" for b in m.buckets) + "."
        lines.append(f"| `{m.full_name}` | {m.type} | {', '.join(labels) or '—'} | {desc} |")
    return "\n".join(lines) + "\n"


class _Labelled:
    """A collector exposing another registry's families with ``controller=<name>`` added."""

    def __init__(self, inner: CollectorRegistry, controller: str | None) -> None:
        self.inner = inner
        self.controller = controller
        self.refreshers: list[Callable[[], None]] = []

    def collect(self) -> Iterator[Metric]:
        for refresh in self.refreshers:
            try:
                refresh()
            except Exception:  # noqa: BLE001 - a scrape must not fail on a refresher
                log.exception("refreshing gauges before a scrape failed")
        for family in self.inner.collect():
            samples = []
            for s in family.samples:
                value = s.labels.get("controller")
                if value is None and self.controller is not None:
                    s = s._replace(labels={**s.labels, "controller": self.controller})
                elif value == "":  # a registry without a daemon name: no controller label
                    s = s._replace(labels={k: v for k, v in s.labels.items() if k != "controller"})
                samples.append(s)
            family.samples = samples
            yield family


# -- controller-runtime compatibility -----------------------------------------------------------

#: controller-runtime's reconcile_time_seconds buckets (v0.15 and later).
_CR_RECONCILE_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8,
    0.9, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5, 6, 7, 8, 9, 10, 15, 20, 25, 30,
    40, 50, 60,
)  # fmt: skip
#: client-go workqueue duration buckets: 10ns to 10s, powers of ten.
_WORKQUEUE_BUCKETS = tuple(10.0**e for e in range(-8, 2))

#: name -> (type, labels, how operatord derives it); the reference for docs/metrics.md.
CONTROLLER_RUNTIME_SERIES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "controller_runtime_reconcile_total": (
        "counter",
        ("controller", "result"),
        "syncs and finalizes: ok/finalized -> success, pending -> requeue_after, "
        "error/invalid/conflict/timeout/crash -> error",
    ),
    "controller_runtime_reconcile_errors_total": (
        "counter",
        ("controller",),
        "syncs and finalizes that ended in error, invalid, conflict, timeout or crash",
    ),
    "controller_runtime_reconcile_time_seconds": (
        "histogram",
        ("controller",),
        "sync and finalize durations, controller-runtime's buckets",
    ),
    "controller_runtime_max_concurrent_reconciles": (
        "gauge",
        ("controller",),
        "workers * inFlightPerWorker",
    ),
    "controller_runtime_active_workers": (
        "gauge",
        ("controller",),
        "operatord_in_flight summed over workers: parents being synced now",
    ),
    "workqueue_depth": ("gauge", ("name",), "operatord_queue_depth summed over workers"),
    "workqueue_adds_total": ("counter", ("name",), "parents dispatched from the queues"),
    "workqueue_retries_total": ("counter", ("name",), "operatord_retries_total"),
    "workqueue_queue_duration_seconds": (
        "histogram",
        ("name",),
        "operatord_queue_wait_seconds, client-go's buckets",
    ),
    "workqueue_work_duration_seconds": (
        "histogram",
        ("name",),
        "sync and finalize durations, client-go's buckets",
    ),
    "leader_election_master_status": (
        "gauge",
        ("name",),
        "operatord_leader; name is the lease name",
    ),
}

_CR_RESULT = {
    ("syncs_total", "ok"): "success",
    ("finalizes_total", "finalized"): "success",
    ("finalizes_total", "pending"): "requeue_after",
}


class _ControllerRuntime:
    """The controller-runtime series, fed from the recorder calls of :class:`Metrics`."""

    def __init__(
        self,
        registry: CollectorRegistry,
        controller: str,
        lease: str | None,
        max_concurrent: int | None = None,
    ) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.controller = controller
        kw: dict[str, Any] = {"registry": registry}
        c = ("controller",)
        n = ("name",)
        self.reconcile_total = Counter(
            "controller_runtime_reconcile_total",
            "Total number of reconciliations per controller",
            c + ("result",),
            **kw,
        )
        self.reconcile_errors = Counter(
            "controller_runtime_reconcile_errors_total",
            "Total number of reconciliation errors per controller",
            c,
            **kw,
        )
        self.reconcile_time = Histogram(
            "controller_runtime_reconcile_time_seconds",
            "Length of time per reconciliation per controller",
            c,
            buckets=_CR_RECONCILE_BUCKETS,
            **kw,
        )
        self.max_concurrent = Gauge(
            "controller_runtime_max_concurrent_reconciles",
            "Maximum number of concurrent reconciles per controller",
            c,
            **kw,
        )
        self.active_workers = Gauge(
            "controller_runtime_active_workers",
            "Number of currently used workers per controller",
            c,
            **kw,
        )
        self.depth = Gauge("workqueue_depth", "Current depth of workqueue", n, **kw)
        self.adds = Counter(
            "workqueue_adds_total", "Total number of adds handled by workqueue", n, **kw
        )
        self.retries = Counter(
            "workqueue_retries_total", "Total number of retries handled by workqueue", n, **kw
        )
        self.queue_duration = Histogram(
            "workqueue_queue_duration_seconds",
            "How long in seconds an item stays in workqueue before being requested",
            n,
            buckets=_WORKQUEUE_BUCKETS,
            **kw,
        )
        self.work_duration = Histogram(
            "workqueue_work_duration_seconds",
            "How long in seconds processing an item from workqueue takes",
            n,
            buckets=_WORKQUEUE_BUCKETS,
            **kw,
        )
        self.master = Gauge(
            "leader_election_master_status",
            "Gauge of if the reporting system is master of the relevant lease, 0 indicates "
            "backup, 1 indicates master. 'name' is the string used to identify the lease.",
            n,
            **kw,
        )
        self.lease = lease or f"{controller}-leader"
        for result in ("success", "error", "requeue", "requeue_after"):
            self.reconcile_total.labels(controller, result)
        self.reconcile_errors.labels(controller)
        self.depth.labels(controller)
        self.adds.labels(controller)
        self.retries.labels(controller)
        self.master.labels(self.lease)
        self._lock = threading.Lock()
        self._depths: dict[str, float] = {}
        self._in_flight: dict[str, float] = {}
        if max_concurrent is not None:
            self.max_concurrent.labels(controller).set(max_concurrent)
        self.active_workers.labels(controller)

    def mirror(self, op: str, name: str, labels: dict[str, str], value: float) -> None:
        c = labels.get("controller") or self.controller
        if name in ("syncs_total", "finalizes_total"):
            result = _CR_RESULT.get((name, labels["result"]), "error")
            self.reconcile_total.labels(c, result).inc(value)
            if result == "error":
                self.reconcile_errors.labels(c).inc(value)
        elif name in ("sync_duration_seconds", "finalize_duration_seconds"):
            self.reconcile_time.labels(c).observe(value)
            self.work_duration.labels(c).observe(value)
        elif name == "queue_wait_seconds":
            self.queue_duration.labels(c).observe(value)
            self.adds.labels(c).inc()
        elif name == "retries_total":
            self.retries.labels(c).inc(value)
        elif name in ("queue_depth", "in_flight"):
            per_worker = self._depths if name == "queue_depth" else self._in_flight
            gauge = self.depth if name == "queue_depth" else self.active_workers
            with self._lock:
                key = labels["worker"]
                per_worker[key] = value if op == "set" else per_worker.get(key, 0.0) + value
                gauge.labels(c).set(sum(per_worker.values()))
        elif name == "leader":
            self.master.labels(self.lease).set(value)


# -- per-worker resource usage ------------------------------------------------------------------

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def read_proc_stat(pid: int) -> tuple[float, float] | None:
    """(CPU seconds user+system, resident bytes) of a Linux process from /proc; None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = data[data.rindex(")") + 2 :].split()  # after "pid (comm) "
    # fields[0] is field 3 (state): utime is field 14, stime 15, rss 24 (in pages)
    cpu = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    return cpu, int(fields[21]) * _PAGE_SIZE


class ProcessSampler:
    """Samples each worker's RSS and CPU from /proc in the leader, every ``interval`` seconds.

    ``pids()`` returns worker index -> pid of the running workers. CPU is exported as a
    per-index counter that adds each process's growth, so it survives worker restarts.
    Without /proc (not Linux) it records nothing.
    """

    def __init__(
        self, metrics: Metrics, pids: Callable[[], Mapping[str, int]], interval: float = 5.0
    ) -> None:
        self.metrics = metrics
        self.pids = pids
        self.interval = interval
        self._last_cpu: dict[str, tuple[int, float]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        """Take one sample now."""
        try:
            pids = dict(self.pids())
        except Exception:  # noqa: BLE001 - a sampler must never break the daemon
            return
        for worker, pid in pids.items():
            stat = read_proc_stat(pid)
            if stat is None:
                continue
            cpu, rss = stat
            self.metrics.set("worker_resident_memory_bytes", rss, {"worker": worker})
            last_pid, last_cpu = self._last_cpu.get(worker, (pid, 0.0))
            grown = cpu - last_cpu if last_pid == pid else cpu
            # Always touched: an idle worker's series exists (at 0) from its first sample on.
            self.metrics.inc("worker_cpu_seconds_total", {"worker": worker}, max(grown, 0.0))
            self._last_cpu[worker] = (pid, cpu)

    def start(self) -> None:
        """Sample in a daemon thread until :meth:`stop`."""
        if not os.path.isdir("/proc"):
            return

        def loop() -> None:
            while not self._stop.is_set():
                self.sample()
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=loop, name="process-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
