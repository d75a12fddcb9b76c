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
  watch), "closed" (the connection was lost), "idle" (nothing heard for the liveness bound),
  "expired" (410: relist), "error" (anything else).

Liveness (a hung API server or a silently dropped connection):
- *Activity* is anything heard from the API server: a completed list, an opened watch (HTTP 200)
  or any watch message, bookmarks included. :meth:`Informer.idle_seconds` is the time since the
  last activity on the monotonic clock.
- The *liveness bound* (:meth:`Informer.liveness_bound`) is twice the spacing of the server's
  bookmarks as last observed on this informer's watches, clamped to [``IDLE_FLOOR_SECONDS``,
  ``IDLE_CEILING_SECONDS``] (5 s and 120 s); the ceiling until a first bookmark was seen; or
  ``idle_timeout`` when given. kube-apiserver sends a bookmark about every minute, the
  embedded API server after every ``bookmark_interval`` of idleness.
- An open watch that hears nothing for the liveness bound is torn down (reason "idle") and
  resumed from its resourceVersion, by a watchdog thread that does not depend on the socket.
  Opening a watch has the liveness bound as its read timeout; a list has
  ``max(liveness bound, 10 s)`` (at most 30 s) and no retries of its own.
- While waiting out a backoff after a failure without an HTTP answer (refused, reset, timed
  out) longer than ``PROBE_INTERVAL_SECONDS``, the informer probes ``GET /version`` once per
  interval (``PROBE_TIMEOUT_SECONDS`` timeout); as soon as the server answers, the backoff
  resets and the informer reconnects at once. Failures the server answered (5xx, 429) keep
  their backoff, except that an answer with ``Retry-After`` is waited out exactly as asked
  without growing the backoff (the server paces; repeated 429s do not stretch into minutes).
  So an outage costs at most one probe per second per informer and recovery needs at most
  about one liveness bound plus one probe interval after the server is back.
- Every running informer of the process is visible to :func:`watch_readiness` (a /readyz check:
  failing while any informer has been idle longer than its bound) and
  :func:`watch_activity` (the ``watch_idle_seconds`` metric).

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
  full list.
"""

from __future__ import annotations

import random
import threading
import time
import weakref
from collections.abc import Callable
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

IDLE_FLOOR_SECONDS = 5.0
IDLE_CEILING_SECONDS = 120.0
LIST_TIMEOUT_FLOOR_SECONDS = 10.0
LIST_TIMEOUT_CEILING_SECONDS = 30.0
PROBE_INTERVAL_SECONDS = 1.0
PROBE_TIMEOUT_SECONDS = 1.0
INITIAL_EVENTS_TIMEOUT_SECONDS = 10.0

# Servers found not to support streaming lists: per API client, the resource keys.
_no_streaming: weakref.WeakKeyDictionary[Kube, set[str]] = weakref.WeakKeyDictionary()
_no_streaming_lock = threading.Lock()

_running_lock = threading.Lock()
_running: dict[int, Informer] = {}  # id -> informer, from start() until its thread ends


def running_informers() -> list[Informer]:
    """Every informer of this process that has been started and whose thread still runs."""
    with _running_lock:
        return list(_running.values())


def watch_activity() -> dict[str, tuple[float, float]]:
    """``{resource key: (idle seconds, liveness bound)}`` over the running informers (the most
    idle one when a resource has several)."""
    out: dict[str, tuple[float, float]] = {}
    for inf in running_informers():
        idle, bound = inf.idle_seconds(), inf.liveness_bound()
        if inf.name not in out or idle > out[inf.name][0]:
            out[inf.name] = (idle, bound)
    return out


def watch_readiness() -> str | None:
    """A readiness check: a reason naming every running informer that has heard nothing from
    the API server for longer than its liveness bound, else None."""
    stale = [
        f"{name} silent for {idle:.1f}s (limit {bound:g}s)"
        for name, (idle, bound) in sorted(watch_activity().items())
        if idle > bound
    ]
    return "stale watches: " + ", ".join(stale) if stale else None


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
        idle_timeout: float | None = None,
        backoff_initial: float = 0.2,
        backoff_max: float = 30.0,
        observe: Observer | None = None,
        shard_selector: str | None = None,
        metadata_only: bool = False,
        streaming_list: bool = True,
        initial_events_timeout: float = INITIAL_EVENTS_TIMEOUT_SECONDS,
        transform: Callable[[dict], dict] | None = None,
    ):
        self.kube = kube
        self.resource = resource
        self.on_list = on_list
        self.on_event = on_event
        self.namespace = namespace or None
        self.label_selector = label_selector
        self.watch_timeout = watch_timeout
        self.idle_timeout = idle_timeout  # None: learned from the server's bookmarks
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
        self.bookmark_spacing: float | None = None  # last observed time between bookmarks
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._response = None  # the open watch response, for stop() to interrupt
        self._idle_tripped = False  # the watchdog tore the open watch down
        # Initial list and representation (see "Initial list" and "Metadata only" above).
        self.metadata_only = metadata_only
        self.streaming_list = streaming_list
        self.initial_events_timeout = initial_events_timeout
        self.transform = transform  # applied to every object as it arrives
        self.server_metadata: bool | None = None  # the server sent PartialObjectMetadata
        self.last_list_streamed: bool | None = None  # how the last full list arrived

    @property
    def name(self) -> str:
        return self.resource.key

    def liveness_bound(self) -> float:
        """Seconds of silence after which the open watch is torn down and resumed."""
        if self.idle_timeout:
            return float(self.idle_timeout)
        if self.bookmark_spacing is None:
            return IDLE_CEILING_SECONDS
        return min(max(2.0 * self.bookmark_spacing, IDLE_FLOOR_SECONDS), IDLE_CEILING_SECONDS)

    def idle_seconds(self) -> float:
        """Seconds since anything was heard from the API server (see the module docstring)."""
        return time.monotonic() - self.last_activity

    def _heard(self) -> None:
        self.last_activity = time.monotonic()

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
        """Tear down an open watch that has been silent for the liveness bound."""
        while not self._stop.is_set():
            bound = self.liveness_bound()
            idle = self.idle_seconds()
            if idle >= bound and self._response is not None and not self._idle_tripped:
                log.warning(
                    "watch silent; reconnecting",
                    resource=self.name,
                    silent_seconds=round(idle, 1),
                    limit=bound,
                )
                self._idle_tripped = True
                self._interrupt()
            wait = bound - idle if idle < bound else bound / 4
            self._stop.wait(min(max(wait, 0.05), 1.0))

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
        self._idle_tripped = False
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
        """Watch until the stream ends; returns why ("timeout", "closed", "idle", "expired",
        "stopped") and whether it delivered anything (an event or a bookmark)."""
        progressed = False
        self._idle_tripped = False
        stream = self.kube.watch(
            self.resource,
            self.namespace,
            resource_version=self.resource_version,
            label_selector=self.label_selector,
            shard_selector=self.shard_selector,
            timeout_seconds=self.watch_timeout,
            idle_timeout=self.liveness_bound(),
            on_open=self._opened,
            accept=METADATA_ACCEPT if self.metadata_only else "application/json",
        )
        last_bookmark = time.monotonic()
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
                    now = time.monotonic()
                    self.bookmark_spacing = now - last_bookmark
                    last_bookmark = now
                    continue
                self.on_event(etype, self._shaped(obj))
        except ApiError as exc:
            if self._response is None or exc.status != 0:
                raise  # the watch could not be opened, or the server sent an ERROR event
            if self._stop.is_set():
                return "stopped", progressed
            if self._idle_tripped:
                return "idle", progressed
            log.info("watch connection lost", resource=self.name, error=exc.message)
            return "closed", progressed
        finally:
            self._response = None
            close = getattr(stream, "close", None)
            if close:
                close()
        if self._stop.is_set():
            return "stopped", progressed
        return ("idle" if self._idle_tripped else "timeout"), progressed

    # ---- initial list: streaming where supported; metadata-only objects ---------------------

    def _shaped(self, obj: dict) -> dict:
        """A listed or watched object as delivered: typed, and stripped when metadata-only."""
        if self.metadata_only:
            obj = self._metadata(obj)
        else:
            obj.setdefault("apiVersion", self.resource.api_version)
            obj.setdefault("kind", self.resource.kind)
        return self.transform(obj) if self.transform is not None else obj

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
        self._idle_tripped = False
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
            if exc.status == 0 and (self._idle_tripped or silent >= 0.9 * quiet):
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
