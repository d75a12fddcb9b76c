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

import platform
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily

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

_SYNC_RESULTS = ("ok", "error", "invalid", "timeout", "crash")
_FINALIZE_RESULTS = ("finalized", "pending", "error", "invalid", "timeout", "crash")

CATALOG: tuple[MetricSpec, ...] = (
    MetricSpec(
        "syncs_total",
        "counter",
        "Syncs of a parent (one per dispatch to a worker), by result: ok, error (handler raised "
        "or a write failed), invalid (bad response), timeout (handlerTimeoutSeconds exceeded), "
        "crash (the worker process died while syncing this parent alone).",
        ("result",),
        values={"result": _SYNC_RESULTS},
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
        "Seconds since the informer of this resource last heard from the API server (an event, "
        "a bookmark, a list or an opened watch); computed at scrape time.",
        ("resource",),
    ),
    MetricSpec(
        "watch_idle_limit_seconds",
        "gauge",
        "The informer's liveness bound: a watch silent this long is torn down and resumed, and "
        "/readyz fails while watch_idle_seconds exceeds it.",
        ("resource",),
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
    """The leader's metrics: a private ``CollectorRegistry`` holding every catalog metric.

    Operations apply immediately and are thread-safe (prometheus_client locks per child).
    ``_created`` series are disabled process-wide so the exposition stays small.
    """

    def __init__(self, version: str | None = None) -> None:
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        self._metrics: dict[str, Counter | Gauge | Histogram] = {}
        for m in CATALOG:
            if m.name in _SCRAPE_TIME:
                continue
            kwargs: dict[str, Any] = {"labelnames": m.labels, "registry": self.registry}
            if m.type == "counter":
                self._metrics[m.name] = Counter(m.full_name, m.help, **kwargs)
            elif m.type == "gauge":
                self._metrics[m.name] = Gauge(m.full_name, m.help, **kwargs)
            else:
                self._metrics[m.name] = Histogram(m.full_name, m.help, buckets=m.buckets, **kwargs)
            if m.labels and set(m.values) == set(m.labels):
                for combo in _combinations(m):
                    self._metrics[m.name].labels(**combo)
        self.registry.register(_WatchActivityCollector())
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None
        # (name, label pairs) -> the labelled child, and (op, name, pairs) already validated:
        # worker deltas repeat the same few series, so a repeat costs two dict lookups.
        self._children: dict[tuple[str, tuple], Any] = {}
        self._valid: set[tuple[str, str, tuple]] = set()
        self.set("build_info", 1, {"version": version or _version(), "python": _python()})

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
        if pairs:
            metric = self._children.get((name, pairs))
            if metric is None:
                metric = self._metrics[name].labels(**dict(pairs))
                self._children[(name, pairs)] = metric
        else:
            metric = self._metrics[name]
        if op == "inc":
            metric.inc(value)
        elif op == "set":
            metric.set(value)
        else:
            metric.observe(value)

    # -- exposition ---------------------------------------------------------------------------

    def render(self) -> bytes:
        """The registry in the Prometheus text exposition format."""
        return generate_latest(self.registry)

    def serve(self, port: int, host: str = "0.0.0.0") -> int:
        """Serve the registry over HTTP (any path, conventionally /metrics) in a daemon thread.

        ``port=0`` binds a free port. Returns the bound port, also readable as ``.port``.
        """
        if self._server is not None:
            raise RuntimeError("metrics server already running")
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
_SCRAPE_TIME = ("watch_idle_seconds", "watch_idle_limit_seconds")


class _WatchActivityCollector:
    """Yields the watch_idle_* gauges from :func:`operatord.informer.watch_activity`."""

    def describe(self) -> list:
        return [self._family(name) for name in _SCRAPE_TIME]

    def collect(self) -> list:
        from operatord.informer import watch_activity

        idle, limit = (self._family(name) for name in _SCRAPE_TIME)
        for resource, (seconds, bound) in sorted(watch_activity().items()):
            idle.add_metric([resource], seconds)
            limit.add_metric([resource], bound)
        return [idle, limit]

    @staticmethod
    def _family(name: str) -> GaugeMetricFamily:
        m = _BY_NAME[name]
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
