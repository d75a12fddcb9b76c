"""The leader <-> worker protocol: typed messages, their wire form, and what a result means.

Guarantees:
- Every message is a frozen dataclass of plain data (dicts, lists, str, int, float, bool,
  None); `encode` / `decode` turn a message into bytes and back with the C pickler on plain
  tuples, so no object but plain data ever crosses the pipe and no pure-Python pickler runs.
- A batch carries any number of tasks or results: the leader hands a worker several parents
  in one message, the worker answers several in one message.
- Every `SyncTask` a worker accepts is answered by exactly one `SyncResult` with the same uid,
  unless the worker process dies (the leader then requeues what it had in flight).
- `next_step` is the single place that maps a result to the work queue's next step; it needs
  no process and no queue, so it is tested on its own.
- `CallBoard`: besides the pipe, the only thing the two processes share. It records which
  parents' handler calls a worker is running, without a message or a system call, and stays
  readable by the leader after the worker died (so a crash is attributed to the call that
  was running).
"""

from __future__ import annotations

import mmap
import os
import pickle
import tempfile
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ABANDONED",
    "CallBoard",
    "Credentials",
    "ERROR",
    "FINALIZED",
    "FINALIZE_PENDING",
    "OK",
    "LeaseUpdate",
    "Ready",
    "Results",
    "Step",
    "Stop",
    "SyncResult",
    "SyncTask",
    "Tasks",
    "decode",
    "describe_changes",
    "encode",
    "next_step",
]

# SyncResult.outcome values.
OK = "ok"  # the sync ran and everything it asked for is written
ERROR = "error"  # the handler failed, answered garbage, or a write failed: back off
FINALIZED = "finalized"  # the finalizer is gone (or was never ours)
FINALIZE_PENDING = "finalize_pending"  # finalize answered finalized=False: retry later
ABANDONED = "abandoned"  # the worker gave the parent back without a verdict: retry, uncharged

OUTCOMES = (OK, ERROR, FINALIZED, FINALIZE_PENDING, ABANDONED)


@dataclass(frozen=True, slots=True)
class SyncTask:
    """Leader -> worker: sync (or finalize, when the parent is being deleted) one parent."""

    uid: str
    parent: dict  # the parent as cached; finalizing when metadata.deletionTimestamp is set
    children: list  # every cached child of this parent
    # Monotonic time (system-wide clock) until which the leader's lease is certainly ours;
    # the worker writes nothing after it. None: no leader election, no fence.
    lease_valid_until: float | None = None
    # The cached related objects the parent's recorded selection matches, and that selection
    # (operatord.selectors.Selection; None: none recorded yet). The worker re-selects first.
    related: list | tuple = ()
    selection: tuple | None = None
    # The replica shard (operatord.shards) of the parent when sharding.shards > 1: the worker
    # fences the task's writes with that shard's lease (`LeaseUpdate` with this shard). None:
    # the single leader lease.
    shard: int | None = None
    # The controller the parent belongs to (config ``controllers[].name``); "" means the
    # daemon's first (its only one in a single-controller config).
    controller: str = ""
    # Consecutive failed attempts of this parent before this one (the leader's backoff count):
    # a failure that makes it `conditions.STALLED_AFTER` marks the parent Stalled.
    retry: int = 0

    @property
    def finalizing(self) -> bool:
        return bool((self.parent.get("metadata") or {}).get("deletionTimestamp"))


@dataclass(frozen=True, slots=True)
class SyncResult:
    """Worker -> leader: what one task did. Exactly one per accepted task."""

    uid: str
    outcome: str  # one of OUTCOMES
    error: str | None = None  # one line for logs and Events when outcome is ERROR
    # "error" | "invalid" | "conflict" (a child's name is taken) | "timeout" | "api" for metrics
    error_kind: str | None = None
    resync_after: float | None = None  # the handler asked for another sync after this delay
    retry_after: float | None = None  # FINALIZE_PENDING: retry after this (None: backoff)
    # Every object the worker wrote, as the API server answered: {"action": "upsert" |
    # "delete", "object": {...}}; the leader puts them in its cache before the next sync.
    written: tuple = ()
    # The last handler run still changed children (it did not settle within the worker's
    # runs): the leader syncs the parent again (at its backoff pace after a long streak).
    children_changed: bool = False
    # With children_changed: what the last run still changed, one (apiVersion, kind,
    # namespace, name, field paths) per child ("created"/"deleted" as the only path when it
    # created or deleted the child), so the leader can say which child does not settle.
    changing: tuple = ()
    duration: float = 0.0  # seconds the task took in the worker
    handler_calls: int = 0  # how many times the handler ran for this task
    # Events the handler asked for, (type, reason, message); the leader records them.
    events: tuple = ()
    # What the handler's related(parent) returned (operatord.selectors.Selection); None when it
    # did not run (no related types configured, or it failed).
    selection: tuple | None = None
    # The selection differs from the one the task was built with: nothing was synced or
    # written; the leader records the selection and dispatches the parent again at once.
    reselect: bool = False
    # Dry run (a `Connection` with dry_run): every write the task sent with dryRun=All, in
    # order: {"operation", "apiVersion", "kind", "namespace", "name", "live", "answer"} with
    # the object before (None for a create) and as the server answered (None for a delete).
    plan: tuple = ()
    # The task's API requests: how many, and their summed latency (the leader adapts the
    # worker's in-flight limit to it, `operatord.inflight`).
    api_requests: int = 0
    api_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class Tasks:
    """Leader -> worker: a batch of tasks."""

    tasks: tuple[SyncTask, ...]


@dataclass(frozen=True, slots=True)
class LeaseUpdate:
    """Leader -> worker: the lease was renewed; writes are fenced at ``valid_until``.

    ``shard`` None: the leader lease (every task without a shard); else the lease of that
    replica shard (the tasks whose `SyncTask.shard` it is)."""

    valid_until: float | None
    shard: int | None = None


@dataclass(frozen=True, slots=True)
class Credentials:
    """Leader -> worker: fresh auth headers for API requests (tokens expire and rotate)."""

    headers: dict


@dataclass(frozen=True, slots=True)
class Stop:
    """Leader -> worker: finish what is in flight, answer it, and exit."""


@dataclass(frozen=True, slots=True)
class Ready:
    """Worker -> leader: the handler is imported; tasks may come."""

    pid: int
    metrics: tuple = ()  # metric deltas (operatord.metrics.DeltaRecorder.drain())


@dataclass(frozen=True, slots=True)
class Results:
    """Worker -> leader: a batch of results, the worker's metric deltas since the last batch,
    and whether the worker exits after this message (a handler stuck in a call)."""

    results: tuple[SyncResult, ...]
    metrics: tuple = ()
    exiting: bool = False


# ---- wire form ------------------------------------------------------------------------------

_TASK_FIELDS = tuple(SyncTask.__dataclass_fields__)
_RESULT_FIELDS = tuple(SyncResult.__dataclass_fields__)


def _task_wire(t: SyncTask) -> tuple:
    return tuple(getattr(t, f) for f in _TASK_FIELDS)


def _result_wire(r: SyncResult) -> tuple:
    return tuple(getattr(r, f) for f in _RESULT_FIELDS)


def encode(message: Any) -> bytes:
    """Bytes for one message (plain tuples through the C pickler)."""
    if isinstance(message, Tasks):
        wire: tuple = ("tasks", [_task_wire(t) for t in message.tasks])
    elif isinstance(message, Results):
        wire = (
            "results",
            [_result_wire(r) for r in message.results],
            list(message.metrics),
            message.exiting,
        )
    elif isinstance(message, LeaseUpdate):
        wire = ("lease", message.valid_until, message.shard)
    elif isinstance(message, Credentials):
        wire = ("auth", dict(message.headers))
    elif isinstance(message, Stop):
        wire = ("stop",)
    elif isinstance(message, Ready):
        wire = ("ready", message.pid, list(message.metrics))
    else:
        raise TypeError(f"not a protocol message: {type(message).__name__}")
    return pickle.dumps(wire, protocol=pickle.HIGHEST_PROTOCOL)


def decode(data: bytes) -> Tasks | Results | LeaseUpdate | Credentials | Stop | Ready:
    """The message `encode` made; raises ValueError for anything else."""
    try:
        wire = pickle.loads(data)
        op = wire[0]
        if op == "tasks":
            return Tasks(tuple(SyncTask(*t) for t in wire[1]))
        if op == "results":
            return Results(tuple(SyncResult(*r) for r in wire[1]), tuple(wire[2]), wire[3])
        if op == "lease":
            return LeaseUpdate(*wire[1:3])
        if op == "auth":
            return Credentials(wire[1])
        if op == "stop":
            return Stop()
        if op == "ready":
            return Ready(wire[1], tuple(wire[2]))
    except (pickle.UnpicklingError, TypeError, IndexError, EOFError) as exc:
        raise ValueError(f"undecodable message: {exc}") from exc
    raise ValueError(f"unknown message {op!r}")


# ---- the call board ---------------------------------------------------------------------------


class CallBoard:
    """Which parents' handler calls a worker is running, in a small file both processes map.

    The leader creates the board (`create`) and passes its path to the worker as plain data;
    the worker maps it (`attach`) before it says Ready, and the leader then unlinks the file
    (`unlink`), so nothing is left behind whoever dies. Marking a call writes a few bytes into
    shared memory: no message, no system call. The mapping outlives the worker process, so
    after the worker died, `running` tells the leader whose calls were running at that moment.

    Entry 0 belongs to the synchronous handler thread (one call at a time); entries 1..n to the
    calls of an ``async def`` handler running on the event loop thread. Each entry has a single
    writer thread. An entry holds a length byte (0: free; `UNKNOWN`: a call whose uid is not
    recorded) and the uid; the uid is written before its length, so a process that dies
    mid-mark leaves the entry free, never a wrong uid. Calls beyond the last entry are counted
    in the header as unknown.
    """

    ENTRY = 128
    UNKNOWN = 255
    _HEADER = 8  # byte 0: calls running without an entry

    def __init__(self, path: str, entries: int, mapping: mmap.mmap):
        self.path = path
        self.entries = entries
        self._mm = mapping
        self._free = list(range(entries - 1, 0, -1))  # async entries (used by one thread)

    @staticmethod
    def size(entries: int) -> int:
        return CallBoard._HEADER + entries * CallBoard.ENTRY

    @classmethod
    def create(cls, entries: int) -> CallBoard:
        """A new, empty board in shared memory (/dev/shm when there is one)."""
        directory = "/dev/shm" if os.path.isdir("/dev/shm") else None
        fd, path = tempfile.mkstemp(prefix="operatord-calls-", dir=directory)
        try:
            os.ftruncate(fd, cls.size(entries))
            mapping = mmap.mmap(fd, cls.size(entries))
        finally:
            os.close(fd)
        return cls(path, entries, mapping)

    @classmethod
    def attach(cls, path: str, entries: int) -> CallBoard:
        """The board the leader created at ``path`` (in the worker)."""
        fd = os.open(path, os.O_RDWR)
        try:
            mapping = mmap.mmap(fd, cls.size(entries))
        finally:
            os.close(fd)
        return cls(path, entries, mapping)

    def unlink(self) -> None:
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def close(self) -> None:
        self.unlink()
        self._mm.close()

    def mark(self, entry: int, uid: str) -> None:
        """Entry ``entry`` runs a call for ``uid`` (only that entry's thread may call this)."""
        off = self._HEADER + entry * self.ENTRY
        data = uid.encode()
        if len(data) < self.ENTRY and len(data) < self.UNKNOWN:
            self._mm[off + 1 : off + 1 + len(data)] = data
            self._mm[off] = len(data)
        else:
            self._mm[off] = self.UNKNOWN

    def clear(self, entry: int) -> None:
        self._mm[self._HEADER + entry * self.ENTRY] = 0

    def enter(self, uid: str) -> int:
        """Mark an async call; returns its entry for `leave` (-1: none free, counted as
        unknown). Event loop thread only."""
        if not self._free:
            self._mm[0] = min(self._mm[0] + 1, 255)
            return -1
        entry = self._free.pop()
        self.mark(entry, uid)
        return entry

    def leave(self, entry: int) -> None:
        if entry < 0:
            self._mm[0] = max(self._mm[0] - 1, 0)
            return
        self.clear(entry)
        self._free.append(entry)

    def running(self) -> list[str | None]:
        """The uids of the calls marked as running (None: a call whose uid is unknown)."""
        mm = self._mm
        out: list[str | None] = [None] * mm[0]
        for entry in range(self.entries):
            off = self._HEADER + entry * self.ENTRY
            n = mm[off]
            if n == self.UNKNOWN:
                out.append(None)
            elif n:
                out.append(bytes(mm[off + 1 : off + 1 + n]).decode(errors="replace"))
        return out


def describe_changes(changing: tuple) -> str:
    """One line naming the children in `SyncResult.changing` and their changing fields, e.g.
    ``ConfigMap ns/web: data.at; Secret ns/web-tls: created``."""
    parts = []
    for _api_version, kind, namespace, name, paths in changing:
        where = f"{namespace}/{name}" if namespace else name
        parts.append(f"{kind} {where}: {', '.join(paths) or 'no field change seen'}")
    return "; ".join(parts) or "unknown children"


# ---- what a result means for the queue -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    """The work queue's next step for a parent after a result (controller-runtime's
    ``reconcile.Result`` mapped onto a client-go workqueue)."""

    forget: bool = False  # reset the parent's failure count (success)
    backoff: bool = False  # count a failure and retry after the parent's backoff delay
    after: float | None = None  # also retry after this many seconds (event lane)
    resync: bool = False  # schedule the periodic resync (resync lane)
    again: bool = False  # sync again as soon as possible (uncharged)
    # "failed" | "not_converging" | "unstable_selection": the leader logs why it backs off
    log: str | None = None


def next_step(result: SyncResult, *, streak_exceeded: bool = False) -> Step:
    """Map ``result`` to the queue's next step.

    ``streak_exceeded``: the parent's recent syncs all changed children (or all asked to
    re-select related objects); a further re-sync waits for its backoff instead of running at
    once (a handler that never converges must not hot-loop).
    """
    outcome = result.outcome
    if outcome == OK and result.reselect:
        if streak_exceeded:
            return Step(backoff=True, log="unstable_selection")
        return Step(again=True)
    if outcome == OK:
        if result.children_changed:
            if streak_exceeded:
                return Step(backoff=True, log="not_converging")
            return Step(forget=True, again=True)
        return Step(forget=True, after=result.resync_after, resync=True)
    if outcome == FINALIZED:
        return Step(forget=True)
    if outcome == FINALIZE_PENDING:
        if result.retry_after is not None:
            return Step(after=result.retry_after)
        return Step(backoff=True)
    if outcome == ABANDONED:
        return Step(again=True)
    return Step(backoff=True, log="failed")
