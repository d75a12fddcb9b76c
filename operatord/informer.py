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
- Restart reasons reported to ``observe("restart", ...)``: "timeout" (the server ended the
  watch), "closed" (the connection was lost), "expired" (410: relist), "error" (anything else).
- A connection that is silent for longer than ``idle_timeout`` is treated as dead and
  reconnected, so a half-open connection cannot wedge it.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import structlog

from operatord.kube import ApiError, Kube, Resource

log = structlog.get_logger("operatord.informer")

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
    ):
        self.kube = kube
        self.resource = resource
        self.on_list = on_list
        self.on_event = on_event
        self.namespace = namespace or None
        self.label_selector = label_selector
        self.watch_timeout = watch_timeout
        self.idle_timeout = idle_timeout or watch_timeout + 30
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.observe = observe
        self.synced = threading.Event()
        self.resource_version = ""
        self.last_activity = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._response = None  # the open watch response, for stop() to interrupt

    @property
    def name(self) -> str:
        return self.resource.key

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=f"informer-{self.name}", daemon=True)
        self._thread.start()

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

    def _opened(self, response) -> None:
        self._response = response
        if self._stop.is_set():
            self._interrupt()

    def join(self, timeout: float | None = None) -> None:
        if self._thread:
            self._thread.join(timeout)

    def _note(self, metric: str, label: str) -> None:
        if self.observe:
            self.observe(metric, self.name, label)

    def _sleep(self, delay: float) -> None:
        self._stop.wait(delay * random.uniform(0.8, 1.2))

    def run(self) -> None:
        delay = self.backoff_initial
        need_list = True
        while not self._stop.is_set():
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
                log.info("watch ended without progress", resource=self.name, reason=reason)
            except ApiError as exc:
                if self._stop.is_set():
                    return
                reason = "expired" if exc.status == 410 else "error"
                if exc.status == 410:
                    need_list = True
                self._note("restart", reason)
                log.warning(
                    "watch failed", resource=self.name, status=exc.status, error=exc.message
                )
                if exc.retry_after:  # e.g. 429 on opening the watch: wait as long as asked
                    self._sleep(max(exc.retry_after - delay, 0))
            except Exception as exc:  # noqa: BLE001 - an informer must outlive any bug in a callback
                if self._stop.is_set():
                    return
                self._note("restart", "error")
                log.exception("informer error", resource=self.name, error=str(exc))
                need_list = True
            self._sleep(delay)
            delay = min(delay * 2, self.backoff_max)

    def _list(self) -> None:
        items, rv = self.kube.list(
            self.resource, self.namespace, label_selector=self.label_selector
        )
        self.resource_version = rv
        self.last_activity = time.monotonic()
        self.on_list(items)
        self.synced.set()
        log.debug("listed", resource=self.name, count=len(items), resource_version=rv)

    def _watch(self) -> tuple[str, bool]:
        """Watch until the stream ends; returns why ("timeout", "closed", "expired", "stopped")
        and whether it delivered anything (an event or a bookmark)."""
        progressed = False
        stream = self.kube.watch(
            self.resource,
            self.namespace,
            resource_version=self.resource_version,
            label_selector=self.label_selector,
            timeout_seconds=self.watch_timeout,
            idle_timeout=self.idle_timeout,
            on_open=self._opened,
        )
        try:
            for event in stream:
                if self._stop.is_set():
                    return "stopped", progressed
                self.last_activity = time.monotonic()
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
                obj.setdefault("apiVersion", self.resource.api_version)
                obj.setdefault("kind", self.resource.kind)
                self.on_event(etype, obj)
        except ApiError as exc:
            if self._response is None or exc.status != 0:
                raise  # the watch could not be opened, or the server sent an ERROR event
            if self._stop.is_set():
                return "stopped", progressed
            log.info("watch connection lost", resource=self.name, error=exc.message)
            return "closed", progressed
        finally:
            self._response = None
            close = getattr(stream, "close", None)
            if close:
                close()
        return "timeout", progressed
