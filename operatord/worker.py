"""The worker process: runs the user's handler for the parents the leader sends it.

Guarantees:
- A worker handles one parent at a time and answers every task with exactly one result
  message, whatever the handler does (raises, returns garbage, hangs).
- The handler gets its own copies of the parent and children: whatever it does to them cannot
  change what operatord compares its response against.
- A handler that raises or returns an invalid response changes nothing in the cluster for that
  parent (children and status are only written after the response validated) and is reported
  with a Warning Event on the parent, at most one API call per parent per ``event_interval``
  seconds; repeats update the same Event's count.
- A handler that exceeds ``handlerTimeoutSeconds`` is reported as a timeout; the worker then
  exits (its stuck thread cannot be stopped) and the leader starts a fresh one.
- A worker whose leader process is gone exits within ~0.1 s and checks before every write, so
  it never writes for a leader that may already have been replaced.
- Only plain data crosses the pipe: tasks and results as documented in docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import concurrent.futures
import copy
import datetime
import os
import threading
import time
import uuid

import structlog

from operatord.apply import Applier, Outcome, ResponseError
from operatord.config import Config
from operatord.handler import (
    InvalidResponse,
    SyncRequest,
    load_handler,
    validate_finalize_response,
    validate_sync_response,
)
from operatord.kube import ApiError, ClientSettings, Kube
from operatord.logs import bind_parent, configure_logging
from operatord.metrics import DeltaRecorder

log = structlog.get_logger("operatord.worker")

EXIT_HANDLER_TIMEOUT = 3
EXIT_LEADER_GONE = 4


class HandlerTimeout(Exception):
    pass


class HandlerFailed(Exception):
    """The user's handler raised; ``__cause__`` is its exception."""


class LeaderGone(Exception):
    """The leader process that started this worker is gone: no more writes."""


class Worker:
    """Everything one worker process needs; also usable in-process for tests."""

    def __init__(
        self,
        index: int,
        config: Config,
        settings: ClientSettings,
        *,
        recorder: DeltaRecorder | None = None,
        event_interval: float = 60.0,
        leader_pid: int | None = None,
    ):
        self.index = index
        self.config = config
        self.recorder = recorder or DeltaRecorder()
        self.kube = Kube(settings, on_request=self._observe_request)
        self.handler = load_handler(config.handler, config.python_path)
        self.leader_pid = leader_pid
        self.applier = Applier(self.kube, config, guard=self._check_leader)
        self.event_interval = event_interval
        self._last_event: dict[str, float] = {}
        self._events: dict[str, dict] = {}  # parent uid -> the Event last posted about it
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="handler")
        self.wedged = False

    def _check_leader(self) -> None:
        if self.leader_pid is not None and os.getppid() != self.leader_pid:
            log.error("leader process is gone; exiting without writing")
            os._exit(EXIT_LEADER_GONE)

    def _observe_request(self, verb: str, code: int, seconds: float) -> None:
        self.recorder.inc("api_requests_total", {"verb": verb, "code": str(code or "error")})
        self.recorder.observe("api_request_duration_seconds", seconds, {"verb": verb})

    def _call(self, fn, request: SyncRequest):
        future = self._pool.submit(fn, request)
        try:
            return future.result(timeout=self.config.handler_timeout_seconds)
        except concurrent.futures.TimeoutError:
            self.wedged = True
            raise HandlerTimeout(
                f"handler did not return within {self.config.handler_timeout_seconds:g}s"
            ) from None
        except Exception as exc:
            raise HandlerFailed(f"{type(exc).__name__}: {exc}") from exc

    def handle(self, task: dict) -> dict:
        """Run one task; never raises."""
        parent = task["parent"]
        start = time.monotonic()
        outcome = Outcome()
        result = {
            "op": "result",
            "uid": task["uid"],
            "outcome": "ok",
            "error": None,
            "resync_after": None,
            "retry_after": None,
            "written": outcome.written,
        }
        finalizing = bool(parent["metadata"].get("deletionTimestamp"))
        with bind_parent(parent, worker=self.index):
            try:
                if finalizing:
                    self._finalize(parent, task["children"], result, outcome)
                else:
                    self._sync(parent, task["children"], result, outcome)
            except HandlerTimeout as exc:
                result.update(outcome="error", error=str(exc), kind="timeout")
            except HandlerFailed as exc:
                result.update(outcome="error", error=str(exc), kind="error")
                log.error("handler raised", error=str(exc), exc_info=exc.__cause__)
            except (InvalidResponse, ResponseError) as exc:
                result.update(outcome="error", error=f"invalid response: {exc}", kind="invalid")
                log.error("invalid handler response", error=str(exc))
            except ApiError as exc:
                result.update(outcome="error", error=f"API error: {exc}", kind="error")
                log.warning("API error while applying", status=exc.status, error=exc.message)
            except Exception as exc:  # noqa: BLE001 - a bug must cost one parent, not the worker
                result.update(outcome="error", error=f"{type(exc).__name__}: {exc}", kind="error")
                log.exception("unexpected error")
            duration = time.monotonic() - start
            result["duration"] = duration
            self._record(result, finalizing, duration, outcome)
            if result["outcome"] == "error":
                self._post_event(parent, "FinalizeFailed" if finalizing else "SyncFailed", result)
            else:
                log.debug("synced", outcome=result["outcome"], duration=round(duration, 4))
        result.pop("kind", None)
        return result

    def _record(self, result: dict, finalizing: bool, duration: float, outcome: Outcome) -> None:
        kind = result.get("kind")
        if finalizing:
            label = kind or {"finalized": "finalized", "finalize_pending": "pending"}.get(
                result["outcome"], "finalized"
            )
            self.recorder.inc("finalizes_total", {"result": label})
            self.recorder.observe("finalize_duration_seconds", duration)
        else:
            label = kind or "ok"
            self.recorder.inc("syncs_total", {"result": label})
            self.recorder.observe("sync_duration_seconds", duration, {"result": label})
        for child_kind, op in outcome.writes:
            self.recorder.inc("child_writes_total", {"kind": child_kind, "operation": op})
        if outcome.status_written:
            self.recorder.inc("status_writes_total")

    def _parent_resource(self):
        return self.kube.resource(self.config.parent.api_version, self.config.parent.kind)

    def _sync(self, parent: dict, children: list[dict], result: dict, outcome: Outcome) -> None:
        res = self._parent_resource()
        if self.config.finalizer not in (parent["metadata"].get("finalizers") or []):
            updated = self.applier.set_finalizer(res, parent, True)
            if updated is not None:
                outcome.upsert(updated)
                parent = updated
                self.recorder.inc("finalizer_writes_total", {"operation": "add"})
        request = SyncRequest.build(copy.deepcopy(parent), copy.deepcopy(children))
        response = validate_sync_response(
            self._call(self.handler.sync, request),
            default_namespace=parent["metadata"].get("namespace"),
            allowed_types=self.config.child_keys,
        )
        self.applier.apply_children(parent, children, list(response.children), outcome)
        if response.status is not None:
            updated = self.applier.write_status(res, parent, response.status)
            if updated is not None:
                outcome.upsert(updated)
                outcome.status_written = True
        result["resync_after"] = response.resync_after

    def _finalize(self, parent: dict, children: list[dict], result: dict, outcome: Outcome) -> None:
        if self.config.finalizer not in (parent["metadata"].get("finalizers") or []):
            result["outcome"] = "finalized"  # not ours to finalize (or already done)
            return
        res = self._parent_resource()
        request = SyncRequest.build(copy.deepcopy(parent), copy.deepcopy(children), finalizing=True)
        response = validate_finalize_response(self._call(self.handler.finalize, request))
        if response.status is not None:
            updated = self.applier.write_status(res, parent, response.status)
            if updated is not None:
                outcome.upsert(updated)
                outcome.status_written = True
                parent = updated
        if response.finalized:
            updated = self.applier.set_finalizer(res, parent, False)
            if updated is not None:
                outcome.upsert(updated)
                self.recorder.inc("finalizer_writes_total", {"operation": "remove"})
            result["outcome"] = "finalized"
        else:
            result["outcome"] = "finalize_pending"
            result["retry_after"] = response.retry_after

    def _post_event(self, parent: dict, reason: str, result: dict) -> None:
        """A Warning Event on the parent, at most one API call per parent per
        ``event_interval``; a repeat of the same reason updates the same Event (count and
        lastTimestamp, as kubectl describe shows them). Failures are only logged."""
        meta = parent["metadata"]
        uid = meta["uid"]
        now = time.monotonic()
        last = self._last_event.get(uid)
        if last is not None and now - last < self.event_interval:
            return
        self._last_event[uid] = now
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        message = (result.get("error") or "")[:1024]
        namespace = meta.get("namespace") or "default"
        previous = self._events.get(uid)
        try:
            if previous is not None and previous["reason"] == reason:
                previous["count"] += 1
                try:
                    self.kube.request(
                        "PATCH",
                        f"/api/v1/namespaces/{namespace}/events/{previous['name']}",
                        body={
                            "count": previous["count"],
                            "lastTimestamp": stamp,
                            "message": message,
                        },
                        content_type="application/merge-patch+json",
                        retry=False,
                    )
                    self.recorder.inc("events_total", {"type": "Warning"})
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
                "type": "Warning",
                "count": 1,
                "firstTimestamp": stamp,
                "lastTimestamp": stamp,
                "source": {"component": f"operatord-{self.config.name}"},
                "reportingComponent": f"operatord-{self.config.name}",
            }
            self.kube.request(
                "POST", f"/api/v1/namespaces/{namespace}/events", body=event, retry=False
            )
            self._events[uid] = {"name": name, "reason": reason, "count": 1}
            self.recorder.inc("events_total", {"type": "Warning"})
        except ApiError as exc:
            log.warning("could not post event", status=exc.status, error=exc.message)


def _watch_leader(leader_pid: int, interval: float = 0.1) -> None:
    """Exit as soon as the leader process is gone (this process is then re-parented), so a
    worker never writes on behalf of a leader that may have been replaced."""
    while os.getppid() == leader_pid:
        time.sleep(interval)
    os._exit(EXIT_LEADER_GONE)


def worker_main(index: int, config_dict: dict, settings_dict: dict, conn) -> None:
    """Entry point of a worker process (spawned; receives plain data only)."""
    config = Config.from_dict(config_dict)
    configure_logging(config.logging_format, config.logging_level, process="worker", worker=index)
    leader_pid = os.getppid()
    worker = Worker(index, config, ClientSettings.from_dict(settings_dict), leader_pid=leader_pid)
    threading.Thread(
        target=_watch_leader, args=(leader_pid,), name="leader-watch", daemon=True
    ).start()
    conn.send({"op": "ready", "pid": os.getpid(), "metrics": worker.recorder.drain()})
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            break
        if task.get("op") == "stop":
            break
        result = worker.handle(task)
        result["metrics"] = worker.recorder.drain()
        result["exiting"] = worker.wedged
        try:
            conn.send(result)
        except (BrokenPipeError, OSError):
            break
        if worker.wedged:
            log.error("handler thread is stuck; exiting so the leader starts a fresh worker")
            os._exit(EXIT_HANDLER_TIMEOUT)
    worker.kube.close()
