"""Worker processes as the leader sees them: start, talk, replace, kill, count restarts.

Guarantees:
- A worker is started with a `multiprocess` context that never forks the leader: forkserver
  by default (`worker_context`: a clean fork server process, started once, with
  `operatord.worker` imported, forks each worker, so a replacement is ready in tens of
  milliseconds), or spawn. It receives plain data only: the config and client settings as
  dicts, and a pipe. Either way the worker notices the leader's death through the pipe end
  ``multiprocess`` keeps for its parent process (the leader), not through its own parent pid.
- `start` returns once the worker has imported the handler and said `Ready`, or raises
  `WorkerGone` (it died, or stayed silent past ``ready_timeout``).
- `send` and `receive` move `operatord.protocol` messages; any failure of the process or the
  pipe surfaces as `WorkerGone`, never as a hang: `receive` waits at most its timeout.
- A worker that keeps dying gets a spare (`SpareWorker`): a started, idle process that its
  next replacement adopts at once instead of waiting for a fresh start.
- Restarts are paced (`RestartPacer`): the first ``RESTART_BURST`` restarts of a worker
  within a minute are immediate, each further one waits twice as long as the one before
  (0.1 s, 0.2 s, ... capped at 30 s), so handlers that kill their process cannot turn the
  leader into a fork bomb.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import multiprocess
import structlog

from operatord import protocol
from operatord.worker import worker_main

# Any message of operatord.protocol (what protocol.decode returns).
Message = (
    protocol.Tasks
    | protocol.Results
    | protocol.LeaseUpdate
    | protocol.Credentials
    | protocol.Stop
    | protocol.Ready
)

log = structlog.get_logger("operatord.supervisor")


def skip_resource_tracker() -> None:
    """Spare the process that ``multiprocess`` starts to track named semaphores and shared
    memory (~17 MB): workers create neither, they only use a pipe. The tracker's channel is
    pointed at /dev/null, which is where its messages would go unread anyway. Idempotent;
    a ``multiprocess`` without this internal simply starts its tracker as usual."""
    try:
        from multiprocess import resource_tracker

        tracker = resource_tracker._resource_tracker
        with tracker._lock:
            if tracker._fd is None:
                tracker._fd = os.open(os.devnull, os.O_WRONLY)
    except (ImportError, AttributeError, OSError):
        pass


# Restarts of one worker within a minute that start at once, before pacing sets in.
RESTART_BURST = 10

# Imported once by the fork server, so that forked workers start without importing them.
PRELOAD = ["operatord.worker"]


def worker_context(start_method: str = "forkserver") -> Any:
    """The ``multiprocess`` context workers are started with (``forkserver`` or ``spawn``)."""
    if start_method not in ("forkserver", "spawn"):
        raise ValueError(f"workers start with forkserver or spawn, not {start_method!r}")
    ctx = multiprocess.get_context(start_method)
    if start_method == "forkserver":
        ctx.set_forkserver_preload(PRELOAD)
    return ctx


class RestartPacer:
    """How long the replacement of one worker waits: nothing for the first ``burst`` restarts
    within ``window`` seconds, then ``initial`` doubling with each further one, capped at
    ``maximum``."""

    def __init__(
        self,
        burst: int = RESTART_BURST,
        initial: float = 0.1,
        maximum: float = 30.0,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.burst, self.initial, self.maximum, self.window = burst, initial, maximum, window
        self._clock = clock
        self._recent: list[float] = []

    def next_delay(self) -> float:
        """Count one restart (now) and return how long it waits."""
        now = self._clock()
        self._recent = [t for t in self._recent if now - t < self.window]
        n = len(self._recent)
        self._recent.append(now)
        if n < self.burst:
            return 0.0
        return min(self.initial * 2 ** (n - self.burst), self.maximum)

    @property
    def recent(self) -> int:
        """Restarts counted within the window (as of the last `next_delay`)."""
        return len(self._recent)

    def quiet(self) -> bool:
        """No restart within the window."""
        return not self._recent or self._clock() - self._recent[-1] >= self.window


class WorkerGone(Exception):
    """The worker process died, broke its pipe, or missed its deadline."""


class WorkerProcess:
    """One worker process and its pipe. `send` may be called from any thread; `receive` from
    one thread at a time."""

    def __init__(
        self,
        index: int,
        config_dict: dict,
        connection_dict: dict,
        ctx: Any,
    ):
        self.index = index
        self.config_dict = config_dict
        self.connection_dict = connection_dict
        self.ctx = ctx
        self.process: Any = None  # a multiprocess Process, once started
        self.conn: Any = None  # its multiprocess Connection
        self.exiting = False  # the worker announced that it exits after its last message
        self._send_lock = threading.Lock()
        # Entries of the call board: the handler thread, and one per async call in flight.
        self.board_entries = 1 + int(config_dict.get("inFlightPerWorker", 16))
        self.board: protocol.CallBoard | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def exitcode(self) -> int | None:
        return self.process.exitcode if self.process is not None else None

    def start(self, ready_timeout: float = 120.0) -> protocol.Ready:
        skip_resource_tracker()
        # glibc gives each thread that allocates its own 64 MiB heap arena (address space, not
        # memory); workers run many threads, and a memory limit counts address space.
        os.environ.setdefault("MALLOC_ARENA_MAX", "2")
        if self.board is not None:
            self.board.close()
        board = self.board = protocol.CallBoard.create(self.board_entries)
        parent_conn, child_conn = self.ctx.Pipe()
        proc = self.ctx.Process(
            target=worker_main,
            args=(
                self.index,
                self.config_dict,
                self.connection_dict,
                child_conn,
                (board.path, board.entries),
            ),
            name=f"operatord-worker-{self.index}",
            daemon=True,
        )
        try:
            proc.start()
            child_conn.close()
            self.process, self.conn = proc, parent_conn
            self.exiting = False
            msg = self.receive(ready_timeout)
        finally:
            board.unlink()  # mapped by the worker once it is Ready; by nobody if it is not
        if msg is None:
            raise WorkerGone(f"worker {self.index} did not start within {ready_timeout:g}s")
        if not isinstance(msg, protocol.Ready):
            raise WorkerGone(f"worker {self.index} sent {type(msg).__name__} instead of Ready")
        log.info("worker started", worker=self.index, pid=proc.pid)
        return msg

    def running_calls(self) -> list[str | None]:
        """The parents whose handler calls the worker is running (or was, when it died): see
        `protocol.CallBoard.running`. Meaningful once the process is gone."""
        return self.board.running() if self.board is not None else [None]

    def send(self, message: Message) -> None:
        data = protocol.encode(message)
        try:
            with self._send_lock:
                self.conn.send_bytes(data)
        except (OSError, ValueError, AttributeError) as exc:
            raise WorkerGone(f"worker {self.index} pipe broken: {exc}") from exc

    def receive(self, timeout: float) -> Message | None:
        """The next message, or None when none arrived within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.conn.poll(max(0.0, min(deadline - time.monotonic(), 0.2))):
                    return protocol.decode(self.conn.recv_bytes())
            except (EOFError, OSError, ValueError) as exc:
                raise WorkerGone(f"worker {self.index} connection lost: {exc}") from exc
            if not self.process.is_alive():
                # Whatever it sent before dying is still in the pipe: read that first.
                try:
                    if self.conn.poll(0):
                        return protocol.decode(self.conn.recv_bytes())
                except (EOFError, OSError, ValueError):
                    pass
                raise WorkerGone(f"worker {self.index} exited with {self.process.exitcode}")
            if time.monotonic() >= deadline:
                return None

    def kill(self) -> None:
        if self.process is not None and self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        if self.conn is not None:
            self.conn.close()

    def request_stop(self) -> None:
        """Ask the worker to finish what it holds, answer it and exit, without waiting: its
        pipe then reaches EOF, which ends a receiver waiting on it at once."""
        if self.process is None:
            return
        try:
            self.send(protocol.Stop())
        except WorkerGone:
            pass

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the worker to finish and exit; kill it if it does not within ``timeout``."""
        if self.process is None:
            return
        self.request_stop()
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self.conn.close()


class SpareWorker:
    """At most one started, idle replacement process for one worker.

    - `prepare` starts one in a background thread unless there is one, one is starting, or
      the spare is closed; a start that fails is logged and leaves no spare.
    - `take` hands the spare over exactly once (None when there is none); the caller checks
      it is alive and brings it up to date before using it.
    - After `close`, no spare is kept: the current one is stopped (or killed), and one that
      finishes starting afterwards is stopped at once.
    """

    def __init__(self, index: int, make: Callable[[], WorkerProcess]) -> None:
        self.index = index
        self._make = make
        self._lock = threading.Lock()
        self._proc: WorkerProcess | None = None
        self._starting = False
        self._closed = False

    @property
    def ready(self) -> bool:
        """A started spare is waiting."""
        return self._proc is not None

    def prepare(self) -> None:
        with self._lock:
            if self._proc is not None or self._starting or self._closed:
                return
            self._starting = True
        threading.Thread(target=self._start, name=f"spare-{self.index}", daemon=True).start()

    def _start(self) -> None:
        proc = self._make()
        try:
            proc.start()
            started = True
        except WorkerGone as exc:
            log.warning("spare worker failed to start", worker=self.index, error=str(exc))
            proc.kill()
            started = False
        with self._lock:
            self._starting = False
            kept = started and not self._closed
            if kept:
                self._proc = proc
        if started and not kept:  # closed while it started
            proc.stop()

    def take(self) -> WorkerProcess | None:
        with self._lock:
            proc, self._proc = self._proc, None
        return proc

    def retire(self) -> None:
        """Stop the waiting spare, if any; a later `prepare` may start another."""
        proc = self.take()
        if proc is not None:
            proc.stop()

    def close(self, kill: bool = False) -> None:
        """Keep no spare from now on; stop (``kill``: kill) the waiting one."""
        with self._lock:
            self._closed = True
        proc = self.take()
        if proc is not None:
            proc.kill() if kill else proc.stop()
