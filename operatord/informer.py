"""List + watch of one resource type, delivered to a callback.

Guarantees:
- The first delivery is a full list (`on_list`), paginated; after it `synced` is set.
- Afterwards every watch event is delivered in order (`on_event`), from the list's
  resourceVersion on, so no change between list and watch is missed.
- A watch that ends (server timeout, dropped connection) is resumed from the last
  resourceVersion seen, including bookmarks; a 410 Gone (or an ERROR event) triggers a relist,
  delivered again through `on_list` as the complete current state.
- Errors back off exponentially (capped; at least the server's Retry-After) and never stop the
  informer; only `stop()` does. A watch that delivered events before it ended resets the
  backoff and is resumed at once, so repeatedly dropped connections do not delay events; one
  that ends without progress backs off.
- `stop()` also interrupts a watch blocked on a quiet connection: the thread ends promptly.
- ``shard_selector`` (KEP-5866 ``shardSelector``) goes with every list and watch request;
  `server_sharded` tells after a list whether the server applied it (``metadata.shardInfo``
  echoes it). A server without the feature ignores it: filtering is then the caller's job.
- Restart reasons reported to ``observe("restart", ...)``: "timeout" (the server ended the
  watch), "closed" (the connection was lost), "idle" (a liveness check got no answer),
  "stalled" (a liveness check found events the watch had not delivered, or could not confirm
  it), "expired" (410: relist), "error" (anything else).

Liveness (a hung API server, or a connection that silently stopped carrying anything):
- *Activity* is anything heard from the API server on the informer's own requests: a completed
  list, an opened watch (HTTP 200) or any watch message, bookmarks included. The watch is
  *confirmed* by activity or by a liveness check that passed; :meth:`Informer.idle_seconds` is
  the time since it was last confirmed, on the monotonic clock. Nothing here depends on how
  often the server sends bookmarks.
- A *liveness check* runs once an open watch has been unconfirmed for ``silence_seconds``
  (default ``SILENCE_SECONDS``, 10 s; the daemon sets ``health.watchSilenceSeconds`` through
  :func:`configure`). It is a short watch on the watch's own path and selectors, from its
  resourceVersion, that the server ends after ``CHECK_WINDOW_SECONDS`` (1 s); connect and every
  read are bounded by ``CHECK_TIMEOUT_SECONDS`` (3 s). It is served from the API server's watch
  cache and answers more than whether the server is up: an event in it that the open watch has
  not delivered proves that the open watch's connection is dead while the server is fine.
  - passed (only bookmarks, or the open watch spoke meanwhile): the watch is confirmed; the
    next check comes ``silence_seconds`` later. A silent healthy watch therefore costs at most
    one check request per ``silence_seconds``.
  - no HTTP answer: the watch is *dead*; it is torn down (reason "idle") and resumed, probing
    as below.
  - events the watch had not delivered, or an answer other than 200/429/5xx: torn down
    (reason "stalled", or "expired" for 410, which relists) and resumed.
  - 429 or 5xx: the server answered but is busy; checked again ``silence_seconds`` later.
- Opening a watch waits at most ``CHECK_TIMEOUT_SECONDS`` for its HTTP answer; once open, each
  read of the stream waits at most ``watch_timeout + 30`` s (a backstop: the server ends the
  watch after ``watch_timeout``). A list has ``max(liveness bound, 10 s)`` (at most 30 s) and
  no retries of its own.
- The *liveness bound* (:meth:`Informer.liveness_bound`), ``silence_seconds +
  CHECK_TIMEOUT_SECONDS``: a connection that stops carrying anything is detected (torn down
  and reported dead) within it, and a healthy watch is confirmed at least that often.
- An informer is also *dead* from any list or watch request of its own that got no HTTP
  answer (refused, reset, timed out) until it next hears from the server.
- While waiting out a backoff after a failure without an HTTP answer (refused, reset, timed
  out) longer than ``PROBE_INTERVAL_SECONDS``, the informer probes ``GET /version`` once per
  interval (``PROBE_TIMEOUT_SECONDS`` timeout); as soon as the server answers, the backoff
  resets and the informer reconnects at once. Failures the server answered (5xx, 429) keep
  their backoff, except that an answer with ``Retry-After`` is waited out exactly as asked
  without growing the backoff (the server paces; repeated 429s do not stretch into minutes).
  So an outage costs at most one probe per second per informer and recovery needs at most
  about one ``CHECK_TIMEOUT_SECONDS`` plus one probe interval after the server is back.
- Every running informer of the process is visible to :func:`watch_readiness` (a /readyz check:
  failing while any informer is dead, or unconfirmed for longer than
  ``UNCONFIRMED_LIMIT_SECONDS``, 120 s, e.g. a server answering every request with an error),
  :func:`watch_activity` (the ``watch_idle_seconds``, ``watch_idle_limit_seconds`` and
  ``watch_up`` metrics) and :func:`check_counts` (``watch_checks_total``). Silence alone, on
  a quiet server whose checks pass, never fails readiness.

Initial list (streaming where the server supports it):
- The full list is a streaming list (WatchList, KEP-3157: a watch with
  ``sendInitialEvents=true``) unless ``streaming_list=False``, a ``shard_selector`` is set
  (only a paged list's metadata tells whether the server applied it), or the server is known
  not to support it. Its ADDED events are gathered and handed to ``on_list`` in one call at
  the BOOKMARK annotated ``k8s.io/initial-events-end``, whose resourceVersion the watch then
  resumes from: ``on_list`` sees exactly what a paged list would give it, never a part.
- A server is taken not to support streaming lists when it refuses the request (400 or 422,
  e.g. kube-apiserver with the WatchList gate off), sends a bookmark or a non-ADDED event
  before the end marker, ends the stream without it, or stays silent for
  ``initial_events_timeout`` seconds before it (servers that ignore ``sendInitialEvents``).
  The informer then lists in pages at once; the finding is remembered per API client and
  resource type for the life of the process. Connection losses and 5xx/429 answers are
  ordinary failures: backed off and retried, streaming again.

Metadata only (``metadata_only=True``):
- Lists and watches ask for PartialObjectMetadata (``Accept: application/json;
  as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json``, and
  ``as=PartialObjectMetadata`` for watches and streaming lists). Every object delivered is
  ``{"apiVersion", "kind", "metadata"}`` of the watched type, whether the server answered
  with PartialObjectMetadata or, lacking it, with full objects that the informer strips on
  arrival (their other fields are then briefly in memory while decoded, never delivered).
  `server_metadata` tells which: True, False, or None before the first object.
- ``transform`` (as client-go's ``SetTransform``) is applied to every object as it arrives,
  before it is kept: each streamed event, each item as its page is decoded, each watch
  event. Trimming there (e.g. ``cache.slim``) keeps full objects from piling up during a
  full list. What it returns is what the callbacks get (it need not be a dict, e.g.
  `operatord.related.MetaStub`). With ``transform_events=False`` it is applied to listed
  objects only: watch events reach ``on_event`` as decoded (typed, metadata-stripped), for
  callers that transform only what they keep (most events of a busy operator are echoes of
  its own writes, which its cache ignores).
"""

from __future__ import annotations

import random
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from operatord.kube import (
    INITIAL_EVENTS_END,
    METADATA_ACCEPT,
    METADATA_LIST_ACCEPT,
    ApiError,
    Kube,
    Resource,
)

log = structlog.get_logger("operatord.informer")

SILENCE_SECONDS = 10.0
CHECK_TIMEOUT_SECONDS = 3.0
CHECK_WINDOW_SECONDS = 1
UNCONFIRMED_LIMIT_SECONDS = 120.0
LIST_TIMEOUT_FLOOR_SECONDS = 10.0
LIST_TIMEOUT_CEILING_SECONDS = 30.0
PROBE_INTERVAL_SECONDS = 1.0
PROBE_TIMEOUT_SECONDS = 1.0
INITIAL_EVENTS_TIMEOUT_SECONDS = 10.0

# Servers found not to support streaming lists: per API client, the resource keys.
_no_streaming: weakref.WeakKeyDictionary[Kube, set[str]] = weakref.WeakKeyDictionary()
_no_streaming_lock = threading.Lock()
CHECK_RESULTS = ("ok", "unanswered", "behind", "busy", "expired", "error")

_running_lock = threading.Lock()
_running: dict[int, Informer] = {}  # id -> informer, from start() until its thread ends
_checks: dict[tuple[str, str], int] = {}  # (resource key, result) -> liveness checks
_defaults = {"silence_seconds": SILENCE_SECONDS}


def configure(*, silence_seconds: float) -> None:
    """Set the process-wide default ``silence_seconds`` of informers created afterwards."""
    if not silence_seconds > 0:
        raise ValueError(f"silence_seconds must be > 0, got {silence_seconds!r}")
    _defaults["silence_seconds"] = float(silence_seconds)


def running_informers() -> list[Informer]:
    """Every informer of this process that has been started and whose thread still runs."""
    with _running_lock:
        return list(_running.values())


@dataclass(frozen=True)
class WatchHealth:
    """One resource's watch as /readyz and the metrics see it."""

    idle: float  # seconds since the watch was last confirmed
    limit: float  # the liveness bound
    problem: str | None  # why /readyz fails for it; None while it is up


def watch_activity() -> dict[str, WatchHealth]:
    """``{resource key: WatchHealth}`` over the running informers (when a resource has
    several, one with a problem, else the most idle one)."""
    out: dict[str, WatchHealth] = {}
    for inf in running_informers():
        health = inf.health()
        seen = out.get(inf.name)
        if (
            seen is None
            or (health.problem is not None and seen.problem is None)
            or ((health.problem is None) == (seen.problem is None) and health.idle > seen.idle)
        ):
            out[inf.name] = health
    return out


def watch_readiness() -> str | None:
    """A readiness check: a reason naming every running informer that is dead (a request of
    its own got no HTTP answer and it has heard nothing since) or has not been confirmed for
    ``UNCONFIRMED_LIMIT_SECONDS``, else None."""
    stale = [
        f"{name} {health.problem}"
        for name, health in sorted(watch_activity().items())
        if health.problem is not None
    ]
    return "stale watches: " + ", ".join(stale) if stale else None


def check_counts() -> dict[tuple[str, str], int]:
    """``{(resource key, result): liveness checks}`` since the process started; only grows."""
    with _running_lock:
        return dict(_checks)


def _count_check(resource: str, result: str) -> None:
    with _running_lock:
        _checks[(resource, result)] = _checks.get((resource, result), 0) + 1


ListCallback = Callable[[list[dict]], None]
EventCallback = Callable[[str, dict], None]
Observer = Callable[[str, str, str], None]  # (metric kind, resource key, label value)


class Informer:
    """Keeps one resource type flowing into callbacks; runs in its own daemon thread."""

    def __init__(
        self,
        kube: Kube,
        resource: Resource,
        *,
        on_list: ListCallback,
        on_event: EventCallback,
        namespace: str | None = None,
        label_selector: str | None = None,
        watch_timeout: int = 300,
        silence_seconds: float | None = None,
        backoff_initial: float = 0.2,
        backoff_max: float = 30.0,
        observe: Observer | None = None,
        shard_selector: str | None = None,
        metadata_only: bool = False,
        streaming_list: bool = True,
        initial_events_timeout: float = INITIAL_EVENTS_TIMEOUT_SECONDS,
        transform: Callable[[dict], Any] | None = None,
        transform_events: bool = True,
    ):
        self.kube = kube
        self.resource = resource
        self.on_list = on_list
        self.on_event = on_event
        self.namespace = namespace or None
        self.label_selector = label_selector
        self.watch_timeout = watch_timeout
        # An open watch unconfirmed this long gets a liveness check (None: the process default).
        self.silence_seconds = float(silence_seconds or _defaults["silence_seconds"])
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.observe = observe
        # KEP-5866 shardSelector sent with every list and watch; `server_sharded` tells,
        # after the first list, whether the server applied it (echoed in shardInfo).
        self.shard_selector = shard_selector or None
        self.server_sharded: bool | None = None
        self.synced = threading.Event()
        self.resource_version = ""
        self.last_activity = time.monotonic()
        self._confirmed_at = self.last_activity  # the last liveness check that passed
        self._checked_at = 0.0  # when the last liveness check ended, whatever its result
        self._dead_since: float | None = None  # a request got no answer; nothing heard since
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._response = None  # the open watch response, for stop() to interrupt
        # Initial list and representation (see "Initial list" and "Metadata only" above).
        self.metadata_only = metadata_only
        self.streaming_list = streaming_list
        self.initial_events_timeout = initial_events_timeout
        self.transform = transform  # applied to every object as it arrives
        self.transform_events = transform_events  # ... including watch events
        self.server_metadata: bool | None = None  # the server sent PartialObjectMetadata
        self.last_list_streamed: bool | None = None  # how the last full list arrived
        self._tripped: str | None = None  # why the watchdog tore the open watch down

    @property
    def name(self) -> str:
        return self.resource.key

    def liveness_bound(self) -> float:
        """Seconds within which a watch whose connection stopped carrying anything is torn
        down and reported dead; a healthy watch is confirmed at least this often."""
        return self.silence_seconds + CHECK_TIMEOUT_SECONDS

    def idle_seconds(self) -> float:
        """Seconds since the watch was last confirmed (see the module docstring)."""
        return time.monotonic() - max(self.last_activity, self._confirmed_at)

    def health(self) -> WatchHealth:
        """This informer as /readyz and the metrics see it."""
        idle = self.idle_seconds()
        problem = None
        if self._dead_since is not None:
            problem = f"silent for {idle:.1f}s (no answer from the API server)"
        elif idle > UNCONFIRMED_LIMIT_SECONDS:
            problem = (
                f"silent for {idle:.1f}s (unconfirmed for over {UNCONFIRMED_LIMIT_SECONDS:g}s)"
            )
        return WatchHealth(idle, self.liveness_bound(), problem)

    def _heard(self) -> None:
        self.last_activity = time.monotonic()
        self._dead_since = None

    def _unanswered(self) -> None:
        """A request of this informer got no HTTP answer: dead until it hears something."""
        if self._dead_since is None:
            self._dead_since = time.monotonic()

    def start(self) -> None:
        self.last_activity = time.monotonic()
        with _running_lock:
            _running[id(self)] = self
        self._thread = threading.Thread(
            target=self._main, name=f"informer-{self.name}", daemon=True
        )
        self._thread.start()
        threading.Thread(
            target=self._watchdog, name=f"informer-{self.name}-liveness", daemon=True
        ).start()

    def _main(self) -> None:
        try:
            self.run()
        finally:
            with _running_lock:
                _running.pop(id(self), None)

    def _watchdog(self) -> None:
        """Check an open watch once it has been unconfirmed for ``silence_seconds``."""
        while not self._stop.is_set():
            response = self._response
            due = max(self.last_activity, self._confirmed_at, self._checked_at)
            due += self.silence_seconds
            wait = due - time.monotonic()
            if response is not None and self._tripped is None and wait <= 0:
                try:
                    self._check(response)
                except Exception as exc:  # noqa: BLE001 - the watchdog must outlive any bug
                    log.exception("watch liveness check failed", resource=self.name, error=str(exc))
                finally:
                    self._checked_at = time.monotonic()
                continue
            self._stop.wait(min(max(wait, 0.05), 1.0))

    def _check(self, response: Any) -> None:
        """One liveness check of the open watch ``response`` (see the module docstring)."""
        started = time.monotonic()
        rv = self.resource_version
        if not rv:
            return
        try:
            events = self.kube.watch_window(
                self.resource,
                self.namespace,
                resource_version=rv,
                label_selector=self.label_selector,
                shard_selector=self.shard_selector,
                seconds=CHECK_WINDOW_SECONDS,
                timeout=CHECK_TIMEOUT_SECONDS,
            )
        except ApiError as exc:
            if exc.status == 0:
                result = "unanswered"
            elif exc.status == 429 or exc.status >= 500:
                result = "busy"
            else:
                result = "expired" if exc.status == 410 else "error"
            detail = exc.message
        else:
            result, detail = "ok", ""
            for event in events:
                etype = event.get("type")
                if etype == "ERROR":
                    code = (event.get("object") or {}).get("code")
                    result, detail = ("expired" if code == 410 else "error"), str(code)
                    break
                if etype != "BOOKMARK":
                    result, detail = "behind", f"{etype} at {_rv(event)} after {rv}"
                    break
        if self.last_activity >= started:
            result = "ok"  # the open watch spoke meanwhile: its connection carries
        _count_check(self.name, result)
        if self._stop.is_set() or self._response is not response or self._tripped is not None:
            return
        if result == "ok":
            self._confirmed_at = time.monotonic()
            return
        if result == "busy":
            log.info("watch liveness check: server busy", resource=self.name, error=detail)
            return
        if result == "unanswered":
            self._unanswered()
        reason = {"unanswered": "idle", "expired": "expired"}.get(result, "stalled")
        log.warning(
            "watch liveness check failed; reconnecting",
            resource=self.name,
            result=result,
            detail=detail,
            silent_seconds=round(time.monotonic() - self.last_activity, 1),
        )
        self._tripped = reason
        self._interrupt()

    def stop(self) -> None:
        """Stop the thread; a watch blocked on a quiet connection is interrupted."""
        self._stop.set()
        self._interrupt()

    def _interrupt(self) -> None:
        response = self._response
        if response is not None:
            try:
                response.shutdown()
            except Exception:  # noqa: BLE001 - best effort: the read ends either way
                pass

    def _opened(self, response: Any) -> None:
        self._heard()
        self._tripped = None
        self._response = response
        if self._stop.is_set():
            self._interrupt()

    def join(self, timeout: float | None = None) -> None:
        if self._thread:
            self._thread.join(timeout)

    def _note(self, metric: str, label: str) -> None:
        if self.observe:
            self.observe(metric, self.name, label)

    def _sleep(self, delay: float, probe: bool = False) -> bool:
        """Wait ``delay`` (±20%); with ``probe``, end early once the server answers a probe.

        Returns True when a probe was answered (the caller resets its backoff)."""
        deadline = time.monotonic() + delay * random.uniform(0.8, 1.2)
        while not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if not probe or remaining <= PROBE_INTERVAL_SECONDS:
                self._stop.wait(remaining)
                return False
            started = time.monotonic()
            if self._probe():
                log.info("API server answers again; reconnecting", resource=self.name)
                return True
            self._stop.wait(max(PROBE_INTERVAL_SECONDS - (time.monotonic() - started), 0))
        return False

    def _probe(self) -> bool:
        """True when the API server answers ``GET /version`` at all (any HTTP status)."""
        try:
            self.kube.request(
                "GET", "/version", timeout=PROBE_TIMEOUT_SECONDS, retry=False, verb="probe"
            )
        except ApiError as exc:
            return exc.status != 0
        except Exception:  # noqa: BLE001 - any failure to get an answer is "not yet"
            return False
        return True

    def run(self) -> None:
        delay = self.backoff_initial
        need_list = True
        while not self._stop.is_set():
            unanswered = False  # the failure got no HTTP answer: probe while backing off
            try:
                if need_list:
                    self._list()
                    need_list = False
                reason, progressed = self._watch()
                if reason == "stopped" or self._stop.is_set():
                    return
                if reason == "expired":
                    need_list = True
                self._note("restart", reason)
                if progressed:
                    delay = self.backoff_initial
                    continue
                unanswered = reason in ("closed", "idle")
                log.info("watch ended without progress", resource=self.name, reason=reason)
            except ApiError as exc:
                if self._stop.is_set():
                    return
                reason = "expired" if exc.status == 410 else "error"
                if exc.status == 410:
                    need_list = True
                unanswered = exc.status == 0
                if unanswered:
                    self._unanswered()
                self._note("restart", reason)
                log.warning(
                    "watch failed", resource=self.name, status=exc.status, error=exc.message
                )
                if exc.retry_after:
                    # The server paces us (429/5xx with Retry-After): wait as long as it asks,
                    # and only that; the backoff is for failures it did not pace.
                    self._sleep(exc.retry_after)
                    continue
            except Exception as exc:  # noqa: BLE001 - an informer must outlive any bug in a callback
                if self._stop.is_set():
                    return
                self._note("restart", "error")
                log.exception("informer error", resource=self.name, error=str(exc))
                need_list = True
            if self._sleep(delay, probe=unanswered):
                delay = self.backoff_initial
            else:
                delay = min(delay * 2, self.backoff_max)

    def _list(self) -> None:
        if self._streams() and self._stream_list():
            return
        timeout = min(
            max(self.liveness_bound(), LIST_TIMEOUT_FLOOR_SECONDS), LIST_TIMEOUT_CEILING_SECONDS
        )
        items, rv = self.kube.list(
            self.resource,
            self.namespace,
            label_selector=self.label_selector,
            timeout=timeout,
            retry=False,
            shard_selector=self.shard_selector,
            on_meta=self._list_meta if self.shard_selector else None,
            accept=METADATA_LIST_ACCEPT if self.metadata_only else "application/json",
            transform=self._shaped if self.metadata_only or self.transform else None,
        )
        self.resource_version = rv
        self._heard()
        self.last_list_streamed = False
        self.on_list(items)
        self.synced.set()
        log.debug("listed", resource=self.name, count=len(items), resource_version=rv)

    def _list_meta(self, meta: dict) -> None:
        info = meta.get("shardInfo") or {}
        self.server_sharded = info.get("selector") == self.shard_selector

    def _watch(self) -> tuple[str, bool]:
        """Watch until the stream ends; returns why ("timeout", "closed", "idle", "stalled",
        "expired", "stopped") and whether it delivered anything (an event or a bookmark)."""
        progressed = False
        self._tripped = None
        stream = self.kube.watch(
            self.resource,
            self.namespace,
            resource_version=self.resource_version,
            label_selector=self.label_selector,
            shard_selector=self.shard_selector,
            timeout_seconds=self.watch_timeout,
            open_timeout=CHECK_TIMEOUT_SECONDS,
            on_open=self._opened,
            accept=METADATA_ACCEPT if self.metadata_only else "application/json",
        )
        try:
            for event in stream:
                if self._stop.is_set():
                    return "stopped", progressed
                self._heard()
                etype = event.get("type", "")
                obj = event.get("object") or {}
                if etype == "ERROR":
                    code = obj.get("code")
                    self._note("event", "ERROR")
                    if code == 410:
                        return "expired", progressed
                    raise ApiError(int(code or 500), obj.get("reason", "Error"), obj)
                rv = (obj.get("metadata") or {}).get("resourceVersion")
                if rv:
                    self.resource_version = rv
                self._note("event", etype)
                progressed = True
                if etype == "BOOKMARK":
                    continue
                self.on_event(etype, self._shaped(obj, listed=False))
        except ApiError as exc:
            if self._response is None or exc.status != 0:
                raise  # the watch could not be opened, or the server sent an ERROR event
            if self._stop.is_set():
                return "stopped", progressed
            if self._tripped is not None:
                return self._tripped, progressed
            log.info("watch connection lost", resource=self.name, error=exc.message)
            return "closed", progressed
        finally:
            self._response = None
            close = getattr(stream, "close", None)
            if close:
                close()
        if self._stop.is_set():
            return "stopped", progressed
        return (self._tripped or "timeout"), progressed

    # ---- initial list: streaming where supported; metadata-only objects ---------------------

    def _shaped(self, obj: dict, listed: bool = True) -> Any:
        """A listed or watched object as delivered: typed, stripped when metadata-only, and
        transformed (a watch event only with ``transform_events``)."""
        if self.metadata_only:
            obj = self._metadata(obj)
        else:
            obj.setdefault("apiVersion", self.resource.api_version)
            obj.setdefault("kind", self.resource.kind)
        if self.transform is None or not (listed or self.transform_events):
            return obj
        return self.transform(obj)

    def _metadata(self, obj: dict) -> dict:
        """``obj`` reduced to its metadata, typed as the watched resource."""
        if self.server_metadata is None:
            self.server_metadata = obj.get("kind") == "PartialObjectMetadata"
        return {
            "apiVersion": self.resource.api_version,
            "kind": self.resource.kind,
            "metadata": obj.get("metadata") or {},
        }

    def _streams(self) -> bool:
        """Whether the next full list is tried as a streaming list."""
        if not self.streaming_list or self.shard_selector:
            return False
        with _no_streaming_lock:
            return self.name not in _no_streaming.get(self.kube, ())

    def _no_streaming(self, why: str) -> bool:
        """Remember that the server does not support streaming lists of this type."""
        with _no_streaming_lock:
            _no_streaming.setdefault(self.kube, set()).add(self.name)
        log.info("no streaming lists; listing in pages", resource=self.name, reason=why)
        return False

    def _stream_list(self) -> bool:
        """Run a streaming list and deliver it through ``on_list``. False (nothing delivered)
        when the server turns out not to support it; transient failures raise ApiError."""
        quiet = min(self.initial_events_timeout, self.liveness_bound())
        self._tripped = None
        stream = self.kube.watch(
            self.resource,
            self.namespace,
            label_selector=self.label_selector,
            timeout_seconds=self.watch_timeout,
            idle_timeout=quiet,
            on_open=self._opened,
            send_initial_events=True,
            accept=METADATA_ACCEPT if self.metadata_only else "application/json",
        )
        items: list[dict] = []
        last = time.monotonic()
        try:
            for event in stream:
                if self._stop.is_set():
                    return True  # nothing delivered; the run loop ends
                self._heard()
                last = time.monotonic()
                etype = event.get("type", "")
                obj = event.get("object") or {}
                if etype == "ERROR":
                    code = obj.get("code")
                    raise ApiError(int(code or 500), obj.get("reason", "Error"), obj)
                if etype == "BOOKMARK":
                    meta = obj.get("metadata") or {}
                    if (meta.get("annotations") or {}).get(INITIAL_EVENTS_END) != "true":
                        return self._no_streaming("a bookmark before the end of initial events")
                    self.resource_version = meta.get("resourceVersion", "")
                    self.last_list_streamed = True
                    self.on_list(items)
                    self.synced.set()
                    log.debug(
                        "listed (streaming)",
                        resource=self.name,
                        count=len(items),
                        resource_version=self.resource_version,
                    )
                    return True
                if etype != "ADDED":
                    return self._no_streaming(f"a {etype} event among the initial events")
                items.append(self._shaped(obj))
        except ApiError as exc:
            if self._stop.is_set():
                return True
            if self._response is None:  # refused: a server without (or with WatchList off)
                if exc.status in (400, 422):
                    return self._no_streaming(f"refused with {exc.status}: {exc.message}")
                raise
            silent = time.monotonic() - last
            if exc.status == 0 and (self._tripped is not None or silent >= 0.9 * quiet):
                return self._no_streaming(
                    f"silent for {silent:.1f}s before the end of initial events"
                )
            raise
        finally:
            self._response = None
            close = getattr(stream, "close", None)
            if close:
                close()
        if self._stop.is_set():
            return True
        return self._no_streaming("the stream ended before the end of initial events")


def _rv(event: dict) -> str:
    return ((event.get("object") or {}).get("metadata") or {}).get("resourceVersion") or "?"
