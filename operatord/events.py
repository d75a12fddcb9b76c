"""Kubernetes Events about parents: rate-limited, aggregated, redacted.

Guarantees:
- At most one API call per (parent, type, reason) per ``interval`` seconds; what arrives
  meanwhile is counted and dropped (the count reaches the Event with the next call).
- A repeat of the same reason updates the Event posted before (``count``, ``lastTimestamp``,
  ``message``), as ``kubectl describe`` aggregates them; an Event that expired meanwhile (404)
  is posted anew.
- Messages pass the same redaction as log lines (`operatord.logs.redact`) and are cut to
  1024 characters: a secret in a handler's error never reaches an Event.
- `post` never raises and never blocks on the API: Events are written by one background
  thread from a bounded queue (overflow is dropped and counted), so a flood of failures cannot
  slow down syncs. An Event is not written when ``guard(parent)`` raises (the lease of that
  parent may be gone).
"""

from __future__ import annotations

import datetime
import queue
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from operatord.kube import ApiError, Kube
from operatord.logs import redact

if TYPE_CHECKING:
    from operatord.metrics import Recorder

log = structlog.get_logger("operatord.events")

MAX_MESSAGE = 1024


class EventRecorder:
    """Posts Events about parents for one operator; see the module docstring."""

    def __init__(
        self,
        kube: Kube,
        component: str,
        *,
        interval: float = 60.0,
        metrics: Recorder | None = None,
        guard: Callable[[dict], None] | None = None,
        max_pending: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.component = component
        self.interval = interval
        self.metrics = metrics
        self.guard: Callable[[dict], None] = guard or (lambda parent: None)
        self.clock = clock
        self._lock = threading.Lock()
        # uid -> (type, reason) -> state; one dict per parent so forgetting one is O(1)
        self._last_call: dict[str, dict[tuple[str, str], float]] = {}
        self._posted: dict[str, dict[tuple[str, str], dict]] = {}  # -> {name, count}
        self._pending_counts: dict[str, dict[tuple[str, str], int]] = {}
        self._queue: queue.Queue = queue.Queue(max_pending)
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self.dropped = 0  # Events lost to a full queue

    # ---- public ---------------------------------------------------------------------------

    def post(self, parent: dict, reason: str, message: str, type_: str = "Warning") -> bool:
        """Record an Event about ``parent``; returns True when it will reach the API now (False:
        rate-limited, counted into the next call)."""
        meta = parent.get("metadata") or {}
        uid = meta.get("uid")
        if not uid:
            return False
        key = (type_, reason)
        now = self.clock()
        with self._lock:
            calls = self._last_call.setdefault(uid, {})
            last = calls.get(key)
            if last is not None and now - last < self.interval:
                pending = self._pending_counts.setdefault(uid, {})
                pending[key] = pending.get(key, 0) + 1
                return False
            calls[key] = now
            extra = self._pending_counts.get(uid, {}).pop(key, 0)
        item = (parent, reason, redact(str(message))[:MAX_MESSAGE], type_, extra)
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1
            return False
        self._ensure_thread()
        return True

    def forget(self, uid: str) -> None:
        """Drop the state of a parent that is gone."""
        with self._lock:
            self._last_call.pop(uid, None)
            self._posted.pop(uid, None)
            self._pending_counts.pop(uid, None)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued Event is written (or given up); True when the queue is empty."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.01)
        return self._queue.unfinished_tasks == 0

    def stop(self) -> None:
        self._stopped.set()

    # ---- writing --------------------------------------------------------------------------

    def _ensure_thread(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="events", daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                item = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                self.write(*item)
            except Exception:  # noqa: BLE001 - an Event must never take the recorder down
                log.exception("could not post event")
            finally:
                self._queue.task_done()

    def write(self, parent: dict, reason: str, message: str, type_: str, extra: int = 0) -> None:
        """Post or update one Event now (the background thread's step; tests call it)."""
        meta = parent["metadata"]
        uid = meta["uid"]
        key = (type_, reason)
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        namespace = meta.get("namespace") or "default"
        with self._lock:
            found = self._posted.get(uid, {}).get(key)
            previous = dict(found) if found is not None else None
        try:
            self.guard(parent)
        except Exception:  # noqa: BLE001 - the fence said no: write nothing
            return
        try:
            if previous is not None:
                count = previous["count"] + 1 + extra
                try:
                    self.kube.request(
                        "PATCH",
                        f"/api/v1/namespaces/{namespace}/events/{previous['name']}",
                        body={"count": count, "lastTimestamp": stamp, "message": message},
                        content_type="application/merge-patch+json",
                        retry=False,
                    )
                    with self._lock:
                        self._posted.setdefault(uid, {})[key] = {**previous, "count": count}
                    self._count(type_)
                    return
                except ApiError as exc:
                    if exc.status != 404:  # expired (events have a TTL): post a new one
                        raise
            name = f"{meta['name']}.{uuid.uuid4().hex[:16]}"
            event = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": name, "namespace": namespace},
                "involvedObject": {
                    "apiVersion": parent.get("apiVersion"),
                    "kind": parent.get("kind"),
                    "name": meta["name"],
                    "namespace": meta.get("namespace", ""),
                    "uid": uid,
                    "resourceVersion": meta.get("resourceVersion", ""),
                },
                "reason": reason,
                "message": message,
                "type": type_,
                "count": 1 + extra,
                "firstTimestamp": stamp,
                "lastTimestamp": stamp,
                "source": {"component": self.component},
                "reportingComponent": self.component,
            }
            self.kube.request(
                "POST", f"/api/v1/namespaces/{namespace}/events", body=event, retry=False
            )
            with self._lock:
                self._posted.setdefault(uid, {})[key] = {"name": name, "count": 1 + extra}
            self._count(type_)
        except ApiError as exc:
            log.warning("could not post event", status=exc.status, error=exc.message)

    def _count(self, type_: str) -> None:
        if self.metrics is not None:
            self.metrics.inc("events_total", {"type": type_})
