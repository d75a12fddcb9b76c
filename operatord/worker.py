"""The worker process: runs the user's handler for the parents the leader sends it.

Guarantees:
- A worker holds up to ``inFlightPerWorker`` parents at once; their API requests overlap
  (one thread each). A synchronous handler is called for one parent at a time per process,
  so handler code need not be thread-safe; an ``async def`` handler runs its calls
  concurrently on the worker's event loop.
- Every task gets exactly one result, whatever the handler does (raises, returns garbage,
  hangs), unless the process dies.
- The handler gets its own copies of the parent and children: whatever it does to them cannot
  change what operatord compares its response against. They never carry
  ``metadata.managedFields``, in the first run of a sync as in the follow-up runs.
- When a sync wrote children, the handler runs again at once with the children as written
  (up to ``MAX_RUNS`` runs per task) and the status is written once, from the last run; so
  the handler observes what it caused without a trip through the leader. The Events of every
  run are reported (an Event identical to one an earlier run of the same sync returned is
  reported once), also when a later run fails: the writes of the earlier runs happened.
- A handler that raises or returns an invalid response changes nothing in the cluster for that
  parent (children and status are only written after the response validated).
- A call that exceeds ``handlerTimeoutSeconds`` (measured from the call's start, not from
  when it was queued) fails that parent. A stuck synchronous call cannot be stopped: the
  worker then gives back every parent still waiting for the handler (ABANDONED: retried
  without being charged a failure), finishes the others, answers, and exits; the leader
  starts a fresh worker.
- No write after the lease fence (``SyncTask.lease_valid_until`` / `LeaseUpdate`, monotonic;
  for a task with a replica ``shard``, that shard's lease and its renewals only) or once the
  leader process is gone; a worker whose leader is gone exits at once. The leader is watched
  through the pipe end ``multiprocess`` keeps for it, not through the parent pid (a worker
  forked by the fork server is not the leader's child).
- Every handler call (sync, related, finalize) is marked on the worker's `protocol.CallBoard`
  with its parent's uid from its start until it returns, so the leader can name the parent
  whose call was running if the process dies.
- Objects of ``metadata`` and ``none`` related types reach the handler as this worker reads
  them from the API server, before the handler's sync or finalize
  (`operatord.related.SelectedReader`); the leader never holds their data.
- Only plain data crosses the pipe (`operatord.protocol`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import os
import queue
import select
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import structlog
from multiprocess import parent_process

from operatord import conditions, fingerprint, protocol
from operatord.apply import (
    Applier,
    ChildConflict,
    Outcome,
    ParentChanged,
    ResponseError,
    changed_paths,
)
from operatord.cache import child_key, slim
from operatord.config import Config, ControllerConfig
from operatord.handler import (
    InvalidResponse,
    SyncRequest,
    load_handler,
    validate_finalize_response,
    validate_related,
    validate_sync_response,
)
from operatord.kube import ApiError, ClientSettings, Connection, Kube, Resource
from operatord.logs import bind_parent, configure_logging, redact
from operatord.metrics import DeltaRecorder
from operatord.protocol import SyncResult, SyncTask
from operatord.related import SelectedReader
from operatord.turns import TurnLock

log = structlog.get_logger("operatord.worker")

EXIT_HANDLER_TIMEOUT = 3
EXIT_LEADER_GONE = 4

# Handler runs per task: the first, plus follow-ups while a run wrote children.
MAX_RUNS = 3


class HandlerTimeout(Exception):
    pass


class HandlerFailed(Exception):
    """The user's handler raised; ``__cause__`` is its exception."""


class Wedged(Exception):
    """The handler is stuck in an earlier call: this call never started."""


class Fenced(Exception):
    """A write was refused: the lease may have passed to another replica, or the leader is gone."""


# ---- calling the handler -----------------------------------------------------------------------


class HandlerRunner:
    """Calls the user's handler with a per-call timeout.

    Synchronous functions run on the calling thread, one call at a time per runner, so
    handler code need not be thread-safe, and no thread hand-off is paid per call. Waiting
    callers are served in turn (`TurnLock`): each ``turn`` key (a controller's name) gets one
    call in rotation, and calls of one key go first come, first served, so one controller's
    storm of calls delays another controller's call by at most one call of each. The timeout
    counts from the moment a call starts. A watchdog thread looks at the running call every
    ``tick`` seconds (1/20 of the timeout, between 5 ms and 0.5 s); once a call overruns, the
    runner is *wedged*: ``on_overrun`` gets the overrunning caller's thread id (that thread is
    stuck in user code and cannot answer for itself), calls that have not started raise
    `Wedged`, and should the stuck call ever return, it raises `HandlerTimeout` (nothing it
    computed is used).
    Coroutine functions run on one event loop thread, concurrently, each under
    ``asyncio.wait_for``. With a ``board``, each call is marked on it with its parent's uid
    from the moment it starts running until it returns.
    """

    def __init__(
        self,
        timeout: float,
        board: protocol.CallBoard | None = None,
        on_overrun: Callable[[int], None] | None = None,
    ):
        self.timeout = timeout
        self.board = board
        self.on_overrun = on_overrun
        self.tick = min(0.5, max(0.005, timeout / 20))
        self.wedged = False
        self._call_lock = TurnLock()  # held while a synchronous call runs
        self._state = threading.Lock()  # guards _running / _overran transitions
        self._running: tuple[float, int, float] | None = None  # (start, caller, timeout)
        self._overran: int | None = None  # the thread id of the call that overran
        self._watchdog: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        """A synchronous call is running now."""
        return self._running is not None

    def call(
        self,
        fn: Callable[[Any], Any],
        request: Any,
        is_async: bool,
        uid: str = "",
        timeout: float | None = None,
        turn: str = "",
    ) -> Any:
        """``fn(request)`` for the parent ``uid``, under ``timeout`` (default: the runner's;
        each controller of a daemon has its own), waiting in ``turn``'s turn."""
        limit = self.timeout if timeout is None else timeout
        if is_async:
            return self._call_async(fn, request, uid, limit)
        self._ensure_watchdog()
        if not self._call_lock.acquire(turn, self.tick, lambda: self.wedged):
            raise Wedged("the handler is stuck in another call")
        me = threading.get_ident()
        error: BaseException | None = None
        result: Any = None
        overran = False
        try:
            if self.wedged:
                raise Wedged("the handler is stuck in another call")
            self._running = (time.monotonic(), me, limit)
            board = self.board
            if board is not None:
                board.mark(0, uid)
            try:
                result = fn(request)
            except BaseException as exc:  # noqa: BLE001 - user code: everything is its failure
                error = exc
            if board is not None:
                board.clear(0)
            with self._state:
                self._running = None
                overran = self._overran == me
        finally:
            self._call_lock.release()
        if overran:
            raise HandlerTimeout(f"handler did not return within {limit:g}s")
        if error is not None:
            raise HandlerFailed(f"{type(error).__name__}: {error}") from error
        if asyncio.iscoroutine(result):  # a plain function that returned a coroutine
            return self._run_coroutine(result, uid, limit)
        return result

    def _ensure_watchdog(self) -> None:
        if self._watchdog is None:
            with self._lock:
                if self._watchdog is None:
                    self._watchdog = threading.Thread(
                        target=self._watch, name="handler-watchdog", daemon=True
                    )
                    self._watchdog.start()

    def _watch(self) -> None:
        while not self.wedged:
            time.sleep(self.tick)
            running = self._running
            if running is None or time.monotonic() - running[0] < running[2]:
                continue
            with self._state:
                if self._running is not running:
                    continue  # it returned meanwhile
                self._overran = running[1]
                self.wedged = True
            if self.on_overrun is not None:
                self.on_overrun(running[1])

    # -- async --

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            with self._lock:
                if self._loop is None:
                    loop = asyncio.new_event_loop()
                    threading.Thread(
                        target=loop.run_forever, name="handler-loop", daemon=True
                    ).start()
                    self._loop = loop
        return self._loop

    def _call_async(
        self, fn: Callable[[Any], Awaitable[Any]], request: Any, uid: str, timeout: float
    ) -> Any:
        async def run() -> Any:
            board = self.board
            if board is None:
                return await fn(request)
            entry = board.enter(uid)
            try:
                return await fn(request)
            finally:
                board.leave(entry)

        return self._await(run(), timeout)

    def _run_coroutine(self, coro: Awaitable[Any], uid: str, timeout: float) -> Any:
        async def run() -> Any:
            board = self.board
            if board is None:
                return await coro
            entry = board.enter(uid)
            try:
                return await coro
            finally:
                board.leave(entry)

        return self._await(run(), timeout)

    def _await(self, coro: Coroutine[Any, Any, Any], timeout: float) -> Any:
        loop = self._ensure_loop()
        future = asyncio.run_coroutine_threadsafe(asyncio.wait_for(coro, timeout), loop)
        try:
            # The loop itself enforces the timeout; the extra margin catches a loop that is
            # blocked by synchronous code inside an async handler.
            return future.result(timeout + 5.0)
        except (TimeoutError, concurrent.futures.TimeoutError):
            if not future.done():
                self.wedged = True  # the loop is blocked: nothing on it can finish
                future.cancel()
            raise HandlerTimeout(f"handler did not return within {timeout:g}s") from None
        except concurrent.futures.CancelledError as exc:
            raise HandlerFailed("CancelledError: the handler was cancelled") from exc
        except Exception as exc:
            raise HandlerFailed(f"{type(exc).__name__}: {exc}") from exc


# ---- one parent -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Unit:
    """One controller as a worker runs it."""

    config: ControllerConfig
    handler: Any  # the loaded handler (operatord.handler.LoadedHandler)
    applier: Applier | None
    # The server dropped the conditions from a status write (the parent's CRD schema does not
    # declare status.conditions): adding them again would rewrite the status on every sync,
    # so this process stops maintaining them for this controller.
    conditions_dropped: bool = False
    # The controller's part of each parent's inputs fingerprint ("" when skipUnchanged is off).
    digest: str = ""
    # The server dropped status.observedInputs from a status write (the CRD schema prunes it):
    # recording it would rewrite the status on every sync, so this process stops recording
    # it, and the leader never skips this controller's parents.
    inputs_dropped: bool = False
    # Reads the selected objects of its ``metadata`` and ``none`` related types.
    reader: SelectedReader | None = None


class Worker:
    """Everything one worker process needs; also usable in-process (tests). Serves every
    controller of the daemon: each task names its controller."""

    def __init__(
        self,
        index: int,
        config: Config,
        settings: ClientSettings | Connection,
        *,
        recorder: DeltaRecorder | None = None,
        leader_sentinel: int | None = None,
        board: protocol.CallBoard | None = None,
    ):
        self.index = index
        self.config = config
        self.recorder = recorder or DeltaRecorder()
        self._api_local = threading.local()  # the running task's API requests, per thread
        self.kube = Kube(settings, on_request=self._observe_request)
        # One unit per controller: its config, its handler (every worker imports every
        # handler) and its applier; a task names its controller ("" = the first).
        self.units = {
            c.name: _Unit(
                c,
                load_handler(c.handler, c.python_path),
                None,
                reader=SelectedReader(self.kube, c.related),
            )
            for c in config.controllers
        }
        first = next(iter(self.units.values()))
        self.handler = first.handler
        # A file descriptor that becomes readable (EOF) once the leader process is gone.
        self._leader_sentinel = [leader_sentinel] if leader_sentinel is not None else None
        self.runner = HandlerRunner(
            min(c.handler_timeout_seconds for c in config.controllers),
            board,
            on_overrun=self._overrun,
        )
        # Answers a task whose thread is stuck in the handler (set by the worker process).
        self.on_stuck: Callable[[SyncTask, SyncResult], None] | None = None
        # thread id -> (task, its outcome so far, start) for every task being handled
        self._handling: dict[int, tuple[SyncTask, Outcome, float]] = {}
        self.lease_valid_until: float | None = None
        # replica shard -> the fence its lease renewals moved to (sharding.shards > 1)
        self.shard_fences: dict[int, float] = {}
        self._fence_local = threading.local()
        for unit in self.units.values():
            unit.applier = Applier(self.kube, unit.config, guard=self._guard)
            if unit.config.skip_unchanged:
                unit.digest = fingerprint.controller_digest(unit.config)
        self.applier = first.applier

    def unit(self, task: SyncTask) -> _Unit:
        """The controller unit a task belongs to (KeyError for an unknown controller)."""
        if not task.controller:
            return next(iter(self.units.values()))
        return self.units[task.controller]

    @staticmethod
    def maintains_conditions(unit: _Unit) -> bool:
        return unit.config.conditions and not unit.conditions_dropped

    def _check_kept(self, unit: _Unit, sent: dict, updated: dict | None) -> None:
        """Stop maintaining conditions once the server drops them from a status write."""
        if updated is None or "conditions" not in sent or unit.conditions_dropped:
            return
        if "conditions" not in (updated.get("status") or {}):
            unit.conditions_dropped = True
            log.warning(
                "the server dropped status.conditions from a status write: the parent's CRD "
                "schema does not declare them; not maintaining the standard conditions (declare "
                "status.conditions, or set conditions: false)",
                controller=unit.config.name,
            )

    @staticmethod
    def records_inputs(unit: _Unit) -> bool:
        return bool(unit.digest) and not unit.inputs_dropped

    def _check_inputs_kept(self, unit: _Unit, sent: dict, updated: dict | None) -> None:
        """Stop recording the inputs fingerprint once the server drops it from a status write."""
        if updated is None or fingerprint.FIELD not in sent or unit.inputs_dropped:
            return
        if fingerprint.FIELD not in (updated.get("status") or {}):
            unit.inputs_dropped = True
            log.warning(
                f"the server dropped status.{fingerprint.FIELD} from a status write: the "
                f"parent's CRD schema does not declare it; unchanged parents are not skipped "
                f"(declare status.{fingerprint.FIELD} as an object with "
                "x-kubernetes-preserve-unknown-fields, or set skipUnchanged: false)",
                controller=unit.config.name,
            )

    @property
    def wedged(self) -> bool:
        return self.runner.wedged

    def update_lease(self, valid_until: float | None, shard: int | None = None) -> None:
        """Move the write fence (a renewed lease); never moves it backwards. ``shard``: the
        fence of that replica shard's lease instead of the leader lease's."""
        if shard is not None:
            if valid_until is not None and valid_until > self.shard_fences.get(shard, 0.0):
                self.shard_fences[shard] = valid_until
            return
        current = self.lease_valid_until
        if valid_until is None or current is None or valid_until > current:
            self.lease_valid_until = valid_until

    def _guard(self) -> None:
        """Called before every write."""
        if self._leader_sentinel is not None and select.select(self._leader_sentinel, (), (), 0)[0]:
            log.error("leader process is gone; exiting without writing")
            os._exit(EXIT_LEADER_GONE)
        task_fence = getattr(self._fence_local, "valid_until", None)
        shard = getattr(self._fence_local, "shard", None)
        fence = self.lease_valid_until if shard is None else self.shard_fences.get(shard)
        if task_fence is not None and (fence is None or task_fence > fence):
            fence = task_fence
        if fence is not None and time.monotonic() >= fence:
            raise Fenced("the leader's lease may have expired; not writing")

    def _observe_request(self, verb: str, code: int, seconds: float) -> None:
        self.recorder.inc("api_requests_total", {"verb": verb, "code": str(code or "error")})
        self.recorder.observe("api_request_duration_seconds", seconds, {"verb": verb})
        spent = getattr(self._api_local, "spent", None)
        if spent is not None:  # a task runs on this thread: its requests' count and latency
            spent[0] += 1
            spent[1] += seconds

    def handle(self, task: SyncTask) -> SyncResult:
        """Run one task; never raises. Thread-safe for tasks of different parents."""
        me = threading.get_ident()
        parent = task.parent
        start = time.monotonic()
        outcome = Outcome()
        self._handling[me] = (task, outcome, start)
        self._api_local.spent = [0, 0.0]
        try:
            return self._handle(task, parent, start, outcome)
        finally:
            self._handling.pop(me, None)
            self._api_local.spent = None

    def _overrun(self, thread_id: int) -> None:
        """The handler call of ``thread_id`` overran: answer its task now (that thread is
        stuck in user code), with what it wrote so far."""
        entry = self._handling.get(thread_id)
        if entry is None or self.on_stuck is None:
            return
        task, outcome, start = entry
        unit = self.unit(task)
        error = f"handler did not return within {unit.config.handler_timeout_seconds:g}s"
        fields: dict[str, Any] = {
            "outcome": protocol.ERROR,
            "error": error,
            "error_kind": "timeout",
            "handler_calls": 1,
        }
        duration = time.monotonic() - start
        with bind_parent(task.parent, worker=self.index):
            log.error("handler timed out", error=error)
        self._record(unit, fields, task.finalizing, duration, outcome)
        written = tuple(outcome.written)
        for w in written:
            slim(w["object"])
        self.on_stuck(task, SyncResult(uid=task.uid, written=written, duration=duration, **fields))

    def _handle(self, task: SyncTask, parent: dict, start: float, outcome: Outcome) -> SyncResult:
        fields: dict[str, Any] = {"outcome": protocol.OK}
        finalizing = task.finalizing
        self._fence_local.valid_until = task.lease_valid_until
        self._fence_local.shard = task.shard
        unit = self.unit(task)
        with bind_parent(parent, worker=self.index, controller=unit.config.name):
            try:
                related = self._select_related(unit, task, fields)
                if related is None:
                    pass  # re-selection: the leader sends the parent again with its objects
                elif finalizing:
                    self._finalize(
                        unit, parent, task.children, fields, outcome, related, task.retry
                    )
                else:
                    self._sync(unit, parent, task.children, fields, outcome, related, task.retry)
            except Wedged:
                fields.update(outcome=protocol.ABANDONED, error="worker restarting")
            except Fenced as exc:
                fields.update(outcome=protocol.ABANDONED, error=str(exc))
                log.warning("write fenced", error=str(exc))
            except ParentChanged as exc:
                # Someone changed the parent meanwhile: sync again on the new version (handed to
                # the leader's cache, so the next sync starts from it).
                if exc.current is not None:
                    outcome.upsert(exc.current)
                fields.update(outcome=protocol.ABANDONED, error=str(exc))
                log.info("parent changed during the sync; syncing again", error=str(exc))
            except HandlerTimeout as exc:
                fields.update(outcome=protocol.ERROR, error=str(exc), error_kind="timeout")
                log.error("handler timed out", error=str(exc))
            except HandlerFailed as exc:
                fields.update(outcome=protocol.ERROR, error=str(exc), error_kind="error")
                log.error("handler raised", error=str(exc), exc_info=exc.__cause__)
            except ChildConflict as exc:
                fields.update(outcome=protocol.ERROR, error=str(exc), error_kind="conflict")
                log.warning("child name conflict", error=str(exc))
            except (InvalidResponse, ResponseError) as exc:
                fields.update(
                    outcome=protocol.ERROR, error=f"invalid response: {exc}", error_kind="invalid"
                )
                log.error("invalid handler response", error=str(exc))
            except ApiError as exc:
                fields.update(outcome=protocol.ERROR, error=f"API error: {exc}", error_kind="api")
                log.warning("API error while applying", status=exc.status, error=exc.message)
            except Exception as exc:  # noqa: BLE001 - a bug must cost one parent, not the worker
                fields.update(
                    outcome=protocol.ERROR, error=f"{type(exc).__name__}: {exc}", error_kind="error"
                )
                log.exception("unexpected error")
            if (
                fields["outcome"] == protocol.ERROR
                and self.maintains_conditions(unit)
                and not finalizing
            ):
                self._failure_conditions(task, fields, outcome)
            duration = time.monotonic() - start
            self._record(unit, fields, finalizing, duration, outcome)
            if fields["outcome"] != protocol.ERROR:
                log.debug("synced", outcome=fields["outcome"], duration=round(duration, 4))
        for w in outcome.written:
            slim(w["object"])  # the leader's cache keeps no managedFields: don't ship them
        requests, seconds = self._api_local.spent or (0, 0.0)
        return SyncResult(
            uid=task.uid,
            written=tuple(outcome.written),
            duration=duration,
            plan=tuple(outcome.plan),
            api_requests=requests,
            api_seconds=seconds,
            **fields,
        )

    def _record(
        self, unit: _Unit, fields: dict, finalizing: bool, duration: float, outcome: Outcome
    ) -> None:
        c = unit.config.name
        calls = fields.get("handler_calls", 0)
        if calls:
            method = "finalize" if finalizing else "sync"
            self.recorder.inc("handler_calls_total", {"method": method, "controller": c}, calls)
        if fields["outcome"] == protocol.ABANDONED or fields.get("reselect"):
            return
        kind = fields.get("error_kind")
        if kind == "api":
            kind = "error"
        if finalizing:
            label = kind or {"finalized": "finalized", "finalize_pending": "pending"}.get(
                fields["outcome"], "finalized"
            )
            self.recorder.inc("finalizes_total", {"result": label, "controller": c})
            self.recorder.observe("finalize_duration_seconds", duration, {"controller": c})
        else:
            label = kind or "ok"
            self.recorder.inc("syncs_total", {"result": label, "controller": c})
            self.recorder.observe(
                "sync_duration_seconds", duration, {"result": label, "controller": c}
            )
        for child_kind, op in outcome.writes:
            self.recorder.inc(
                "child_writes_total", {"kind": child_kind, "operation": op, "controller": c}
            )
        if outcome.status_written:
            self.recorder.inc("status_writes_total", {"controller": c})

    def _failure_conditions(self, task: SyncTask, fields: dict, outcome: Outcome) -> None:
        """After a failed sync: write the failing (or, after `conditions.STALLED_AFTER`
        consecutive failures, stalled) conditions into the parent's live status, only when
        that is a transition (so at most one write per transition, at the backoff's pace).
        A write that fails is given up: the sync has failed already."""
        unit = self.unit(task)
        assert unit.applier is not None
        parent = task.parent
        key = child_key(parent)
        for w in outcome.written:  # the parent as this sync left it (e.g. its finalizer added)
            if w["action"] == "upsert" and child_key(w["object"]) == key:
                parent = w["object"]
        failures = task.retry + 1
        state = conditions.failure_state(failures)
        message = str(redact(fields.get("error") or ""))[:1024]
        if state == conditions.STALLED_STATE:
            message = f"{failures} consecutive failed syncs, backing off: {message}"
        reason = conditions.FAILURE_REASONS.get(fields.get("error_kind") or "error", "HandlerError")
        status = with_conditions(parent, None, state, reason=reason, message=message)
        if status is not None and not self.kube.dry_run:
            # The parent is not converged any more: never skipped until a sync succeeds.
            status.pop(fingerprint.FIELD, None)
        live = (parent.get("status") or {}).get("conditions")
        if status is None or conditions.transition_key(
            status.get("conditions")
        ) == conditions.transition_key(live if isinstance(live, list) else None):
            return
        try:
            updated = unit.applier.write_status(
                self._parent_resource(unit), parent, status, outcome
            )
        except (ApiError, Fenced, ParentChanged) as exc:
            log.info("failure conditions not written", error=str(exc))
            return
        self._check_kept(unit, status, updated)
        if updated is not None:
            outcome.upsert(updated)
            outcome.status_written = True

    def _parent_resource(self, unit: _Unit) -> Resource:
        return self.kube.resource(unit.config.parent.api_version, unit.config.parent.kind)

    def _select_related(self, unit: _Unit, task: SyncTask, fields: dict) -> list | None:
        """Run the handler's ``related(parent)``; returns the related objects for the request,
        or None when its selection differs from the one the task's objects were chosen by
        (``fields`` then asks the leader for a re-selection)."""
        handler = unit.handler
        related_fn = handler.related
        if not unit.config.related:
            return []
        selection: tuple = ()
        if related_fn is not None:
            selection = validate_related(
                self.runner.call(
                    related_fn,
                    plain_copy(task.parent),
                    handler.related_is_async,
                    task.uid,
                    unit.config.handler_timeout_seconds,
                    turn=unit.config.name,
                ),
                allowed_types=unit.config.related_keys,
            )
        fields["selection"] = selection
        if selection != tuple(task.selection or ()):
            fields["reselect"] = True
            log.debug("related selection changed; asking for its objects")
            return None
        reader = unit.reader
        if (
            reader is not None and reader.needed
        ):  # metadata and none types: read from the API server now
            return reader.read(selection, task.parent, task.related)
        return list(task.related)

    def _sync(
        self,
        unit: _Unit,
        parent: dict,
        children: list[dict],
        fields: dict,
        outcome: Outcome,
        related: list[dict] | tuple = (),
        retry: int = 0,
    ) -> None:
        cfg, applier, handler = unit.config, unit.applier, unit.handler
        assert applier is not None
        res = self._parent_resource(unit)
        if cfg.finalizer not in (parent["metadata"].get("finalizers") or []):
            updated = applier.set_finalizer(res, parent, True, outcome)
            if updated is not None:
                outcome.upsert(updated)
                parent = updated
                self.recorder.inc(
                    "finalizer_writes_total", {"operation": "add", "controller": cfg.name}
                )
        parent_key = child_key(parent)
        calls = 0
        wrote_children = False
        events: list[tuple[str, str, str]] = []
        while True:
            request = SyncRequest.build(
                _seen(parent),
                [_seen(c) for c in children],
                related=plain_copy(related),
                retry=retry,
            )
            calls += 1
            fields["handler_calls"] = calls
            response = validate_sync_response(
                self.runner.call(
                    handler.sync,
                    request,
                    handler.sync_is_async,
                    _uid(parent),
                    cfg.handler_timeout_seconds,
                    turn=cfg.name,
                ),
                default_namespace=parent["metadata"].get("namespace"),
                allowed_types=cfg.child_keys,
            )
            _add_events(events, response.events)
            fields["events"] = tuple(events)
            before = len(outcome.written)
            applier.apply_children(parent, children, list(response.children), outcome)
            wrote = [w for w in outcome.written[before:] if child_key(w["object"]) != parent_key]
            if not wrote:
                break
            wrote_children = True
            if calls >= MAX_RUNS:
                fields["children_changed"] = True
                fields["changing"] = _changes(children, wrote)
                break
            children = _children_after(children, wrote)
        status = response.status
        if self.maintains_conditions(unit):
            state = (
                conditions.PROGRESSING if fields.get("children_changed") else conditions.CONVERGED
            )
            status = with_conditions(parent, status, state)
        if status is not None and self.records_inputs(unit):
            status = self._with_inputs(
                unit, parent, children, related, status, fields, response, wrote_children
            )
        if status is not None:
            updated = applier.write_status(res, parent, status, outcome)
            self._check_kept(unit, status, updated)
            self._check_inputs_kept(unit, status, updated)
            if updated is not None:
                outcome.upsert(updated)
                outcome.status_written = True
        fields["resync_after"] = response.resync_after

    def _with_inputs(
        self,
        unit: _Unit,
        parent: dict,
        children: list[dict],
        related: list[dict] | tuple,
        status: dict,
        fields: dict,
        response: Any,
        wrote_children: bool,
    ) -> dict:
        """``status`` with the fingerprint of the inputs this sync converged on (the parent it
        saw, the children as its writes left them, its related objects) in
        `fingerprint.FIELD`; without it when the sync did not converge (children still
        changing) or the handler asked for a later sync (its answer depends on more than its
        inputs).

        A record alone (the status otherwise unchanged) is written only by a sync that wrote
        children (a repair: its own writes moved the inputs) or when the live record is missing
        or was made by another config or handler version (once per parent after a deploy, so
        skipping resumes). Otherwise the live record stays and the sync writes nothing, so
        inputs that churn without changing the status (a label, a child's status the handler
        does not report) cost no write; an older record is harmless: it matches only the
        inputs it was computed from. A dry run keeps the live record: it changes nothing."""
        out = dict(status)
        found = parent.get("status")
        live_status: dict = found if isinstance(found, dict) else {}
        live = live_status.get(fingerprint.FIELD)
        if fields.get("children_changed") or response.resync_after is not None:
            out.pop(fingerprint.FIELD, None)
        else:
            selection = fields.get("selection") if unit.config.related else None
            value = fingerprint.of(unit.digest, parent, children, selection, related)
            out[fingerprint.FIELD] = fingerprint.record(value, selection, unit.digest)
        if out.get(fingerprint.FIELD) == live:
            return out
        keep = self.kube.dry_run
        if not keep and not wrote_children and fingerprint.recorded_version(parent) == unit.digest:
            rest = {k: v for k, v in out.items() if k != fingerprint.FIELD}
            generation = (parent.get("metadata") or {}).get("generation")
            if generation is not None:
                rest["observedGeneration"] = generation  # as write_status adds it
            keep = rest == {k: v for k, v in live_status.items() if k != fingerprint.FIELD}
        if keep:
            if live is None:
                out.pop(fingerprint.FIELD, None)
            else:
                out[fingerprint.FIELD] = live
        return out

    def _finalize(
        self,
        unit: _Unit,
        parent: dict,
        children: list[dict],
        fields: dict,
        outcome: Outcome,
        related: list[dict] | tuple = (),
        retry: int = 0,
    ) -> None:
        cfg, applier, handler = unit.config, unit.applier, unit.handler
        assert applier is not None
        if cfg.finalizer not in (parent["metadata"].get("finalizers") or []):
            fields["outcome"] = protocol.FINALIZED  # not ours to finalize (or already done)
            return
        res = self._parent_resource(unit)
        request = SyncRequest.build(
            _seen(parent),
            [_seen(c) for c in children],
            finalizing=True,
            related=plain_copy(related),
            retry=retry,
        )
        fields["handler_calls"] = 1
        response = validate_finalize_response(
            self.runner.call(
                handler.finalize,
                request,
                handler.finalize_is_async,
                _uid(parent),
                cfg.handler_timeout_seconds,
                turn=cfg.name,
            )
        )
        status = response.status
        if status is not None and self.maintains_conditions(unit):
            status = with_conditions(parent, status, conditions.FINALIZING)
        if status is not None:
            updated = applier.write_status(res, parent, status, outcome)
            if updated is not None:
                outcome.upsert(updated)
                outcome.status_written = True
                parent = updated
        fields["events"] = tuple((e.type, e.reason, e.message) for e in response.events)
        if response.finalized:
            updated = applier.set_finalizer(res, parent, False, outcome)
            if updated is not None:
                outcome.upsert(updated)
                self.recorder.inc(
                    "finalizer_writes_total", {"operation": "remove", "controller": cfg.name}
                )
            fields["outcome"] = protocol.FINALIZED
        else:
            fields["outcome"] = protocol.FINALIZE_PENDING
            fields["retry_after"] = response.retry_after


def with_conditions(
    parent: dict,
    status: dict | None,
    state: str,
    *,
    reason: str = "",
    message: str = "",
) -> dict | None:
    """The status to write for ``parent`` in ``state`` with the standard conditions merged in
    (`conditions.maintain`). ``status`` None (the handler returned none, or failed): the live
    status. None when the conditions cannot be merged (a status whose ``conditions`` is not a
    list stays the handler's)."""
    found = parent.get("status")
    live_status: dict = found if isinstance(found, dict) else {}
    live = live_status.get("conditions")
    live = live if isinstance(live, list) else None
    if status is None:
        base, handler = dict(live_status), None
    else:
        base = dict(status)
        handler = base.get("conditions", [])
        if not isinstance(handler, list):
            return status
    base["conditions"] = conditions.maintain(
        live,
        state,
        handler=handler,
        reason=reason,
        message=message,
        generation=(parent.get("metadata") or {}).get("generation"),
    )
    return base


def plain_copy(value: Any) -> Any:
    """A deep copy of JSON-shaped data (dicts, lists, tuples, str, numbers, bools, None), about
    3x faster than ``copy.deepcopy`` on API objects; anything else goes through deepcopy."""
    t = type(value)
    if t is dict:
        return {k: plain_copy(v) for k, v in value.items()}
    if t is list:
        return [plain_copy(v) for v in value]
    if t is str or t is int or t is float or t is bool or value is None:
        return value
    if t is tuple:
        return tuple(plain_copy(v) for v in value)
    return copy.deepcopy(value)


def _add_events(events: list[tuple[str, str, str]], new: Any) -> None:
    """Append the Events of one handler run to those of the earlier runs of the same sync; an
    Event an earlier run already returned (same type, reason and message) is not repeated."""
    seen = set(events)
    for e in new:
        item = (e.type, e.reason, e.message)
        if item not in seen:
            events.append(item)


def _seen(obj: dict) -> dict:
    """The handler's copy of an object: without ``metadata.managedFields``, whether it comes
    from the leader's cache (slimmed there) or from a write this task made (the API server's
    answer carries them)."""
    return slim(plain_copy(obj))


def _uid(parent: dict) -> str:
    return (parent.get("metadata") or {}).get("uid") or ""


def _changes(children: list[dict], written: list[dict]) -> tuple:
    """(apiVersion, kind, namespace, name, field paths) of each child ``written`` changed,
    compared with its version in ``children``."""
    by_key = {child_key(c): c for c in children}
    out = []
    for w in written:
        key = child_key(w["object"])
        before = by_key.get(key)
        if w["action"] != "upsert":
            paths: tuple[str, ...] = ("deleted",)
        elif before is None:
            paths = ("created",)
        else:
            paths = tuple(changed_paths(before, w["object"]))
        out.append((*key, paths))
    return tuple(out)


def _children_after(children: list[dict], written: list[dict]) -> list[dict]:
    """The observed children once ``written`` (upserts and deletes) happened."""
    by_key = {child_key(c): c for c in children}
    for w in written:
        key = child_key(w["object"])
        if w["action"] == "upsert":
            by_key[key] = w["object"]
        else:
            by_key.pop(key, None)
    return list(by_key.values())


# ---- the process --------------------------------------------------------------------------


def _watch_leader(sentinel: int) -> None:
    """Exit as soon as the leader process is gone (``sentinel``, the pipe end ``multiprocess``
    keeps for it, reads EOF), so a worker never writes on behalf of a leader that may have been
    replaced. The leader need not be this process's parent (with forkserver, the fork server
    is)."""
    watch = select.poll()
    watch.register(sentinel, select.POLLIN)
    while not watch.poll():
        pass
    os._exit(EXIT_LEADER_GONE)


def limit_memory(extra_mb: int, threads: int) -> int | None:
    """Cap this process's address space at its current size plus ``extra_mb`` MiB (and the
    stacks of ``threads`` threads yet to start); returns the cap in bytes, None when off.

    An allocation past the cap raises MemoryError in the thread that made it: a runaway
    handler fails its parent's sync instead of the pod being OOM-killed.
    """
    if extra_mb <= 0:
        return None
    import resource

    size = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                size = int(line.split()[1]) * 1024
    stack = threading.stack_size() or 8 * 1024 * 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = size + threads * stack + extra_mb * 1024 * 1024
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    return cap


class _TaskThreads:
    """``size`` threads that call ``fn`` on each submitted item, in submission order (a thread
    pool without futures: nothing to wait on, nothing allocated per item but the queue slot).
    `shutdown` lets every item submitted before it finish, then joins the threads."""

    _STOP = object()

    def __init__(self, size: int, fn: Callable[[Any], None]) -> None:
        self._fn = fn
        self._items: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._serve, name=f"task-{i}", daemon=True) for i in range(size)
        ]
        for t in self._threads:
            t.start()

    def submit(self, item: Any) -> None:
        self._items.put(item)

    def shutdown(self) -> None:
        for _ in self._threads:
            self._items.put(self._STOP)
        for t in self._threads:
            t.join()

    def _serve(self) -> None:
        while True:
            item = self._items.get()
            if item is self._STOP:
                return
            self._fn(item)


class _Outbox:
    """Results waiting to be sent; the sender batches whatever accumulated."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._items: list[SyncResult] = []
        self.closed = False

    def put(self, result: SyncResult) -> None:
        with self._cond:
            self._items.append(result)
            self._cond.notify()

    def take(self, timeout: float) -> list[SyncResult]:
        with self._cond:
            if not self._items and not self.closed:
                self._cond.wait(timeout)
            items, self._items = self._items, []
            return items

    def close(self) -> None:
        """No more results come: wake the sender at once, so it sends the rest and returns."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()


def worker_main(
    index: int,
    config_dict: dict,
    connection_dict: dict,
    conn: Any,
    board: tuple[str, int] | None = None,
) -> None:
    """Entry point of a worker process (receives plain data only: the leader's validated
    config, its resolved `Connection`, and the path and size of its `CallBoard`)."""
    config = Config.from_trusted_dict(config_dict)
    configure_logging(config.logging_format, config.logging_level, process="worker", worker=index)
    sentinel = parent_process().sentinel  # the leader's, whichever process forked this one
    calls = protocol.CallBoard.attach(*board) if board is not None else None
    worker = Worker(
        index,
        config,
        Connection.from_dict(connection_dict),
        leader_sentinel=sentinel,
        board=calls,
    )
    threading.Thread(
        target=_watch_leader, args=(sentinel,), name="leader-watch", daemon=True
    ).start()
    send_lock = threading.Lock()

    def send(message: Any) -> bool:
        data = protocol.encode(message)
        try:
            with send_lock:
                conn.send_bytes(data)
            return True
        except (BrokenPipeError, OSError):
            return False

    # Threads: one per parent in flight, the handler watchdog, its event loop, sender, watcher.
    limit_memory(config.worker_memory_limit_mb, config.in_flight_per_worker + 4)
    send(protocol.Ready(os.getpid(), tuple(worker.recorder.drain())))
    outbox = _Outbox()
    count_lock = threading.Lock()
    all_done = threading.Condition(count_lock)
    unanswered: dict[int, SyncTask] = {}  # id(task) -> task, for every task not answered yet

    def answer(task: SyncTask, result: SyncResult) -> None:
        """Queue the one result of ``task``; a second answer (a stuck thread that returned
        after its task was answered for it) is dropped."""
        with count_lock:
            if unanswered.pop(id(task), None) is None:
                return
            outbox.put(result)
            all_done.notify_all()

    worker.on_stuck = answer

    def run(task: SyncTask) -> None:
        try:
            result = worker.handle(task)
        except BaseException as exc:  # noqa: BLE001 - handle() never raises; if it did, answer
            result = SyncResult(
                uid=task.uid, outcome=protocol.ERROR, error=f"{type(exc).__name__}: {exc}"
            )
        answer(task, result)

    def sender() -> None:
        while True:
            results = outbox.take(0.5)
            if not results:
                if outbox.closed:
                    return
                continue
            exiting = worker.wedged
            if exiting:
                with count_lock:  # answer everything this process still holds in one go
                    all_done.wait_for(lambda: not unanswered, timeout=30)
                results += outbox.take(0)
            if not send(protocol.Results(tuple(results), tuple(worker.recorder.drain()), exiting)):
                os._exit(0)
            if exiting:
                log.error("handler is stuck in a call; exiting so the leader starts a fresh worker")
                os._exit(EXIT_HANDLER_TIMEOUT)

    pool = _TaskThreads(config.in_flight_per_worker, run)
    sender_thread = threading.Thread(target=sender, name="sender", daemon=True)
    sender_thread.start()
    while True:
        try:
            message = protocol.decode(conn.recv_bytes())
        except (EOFError, OSError):
            break
        if isinstance(message, protocol.Stop):
            break
        if isinstance(message, protocol.LeaseUpdate):
            worker.update_lease(message.valid_until, message.shard)
            continue
        if isinstance(message, protocol.Credentials):
            worker.kube.set_auth(message.headers)
            continue
        if isinstance(message, protocol.Tasks):
            with count_lock:
                for task in message.tasks:
                    unanswered[id(task)] = task
            for task in message.tasks:
                pool.submit(task)
    pool.shutdown()
    outbox.close()
    sender_thread.join(5)
    worker.kube.close()
