"""Shared pieces of the benchmarks under bench/ (a helper module, not a benchmark).

- `new_api`: a fresh embedded API server with the Widget CRD and the namespace ``bench``;
- `Http`: plain keep-alive HTTP (http.client, one connection per thread) and a thread pool, so
  the benchmark's own creates and spec changes are fast and concurrent;
- `WidgetWatch`: a list+watch of every Widget in a thread: when did every Widget's status
  reach a generation, and a hook per event (latency);
- `ProcTree`: CPU seconds, peak RSS and peak PSS of a process and all its descendants, from
  /proc;
- `Operatord`, `Kopf`: the two systems under test, started as subprocesses, with the same
  interface (start, wait_ready, handled, calls, stop).

The benchmark's own requests carry the User-Agent `BENCH_AGENT`, kopf's carry ``kopf/<version>``:
the API server's audit log records it (`userAgent`), so whose request an entry is never depends
on timing.
"""

from __future__ import annotations

import http.client
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from operatord.testing import ApiServer, OperatorProcess, wait_for  # noqa: E402

GROUP, VERSION, PLURAL, KIND, NS = "example.com", "v1", "widgets", "Widget", "bench"
WIDGETS = f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}"
CONFIGMAPS = f"/api/v1/namespaces/{NS}/configmaps"
READ_VERBS = {"get", "list", "watch"}
MERGE_PATCH = "application/merge-patch+json"
AUDIT_LIMIT = 100_000  # the embedded server keeps the last 100,000 requests
BENCH_AGENT = "operatord-bench"  # User-Agent of the benchmark's own requests and watch
KOPF_AGENT = "kopf/"  # kopf's User-Agent is kopf/<version>


def machine() -> dict[str, str]:
    """CPU count and model, Python and kopf versions: the header of every result."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        from importlib.metadata import version

        kopf_version = version("kopf")
    except Exception:  # noqa: BLE001 - kopf is optional for operatord-only runs
        kopf_version = "not installed"
    return {
        "cpus": str(os.cpu_count()),
        "model": model,
        "python": platform.python_version(),
        "kopf": kopf_version,
    }


def machine_line() -> str:
    m = machine()
    return (
        f"{m['cpus']} CPUs ({m['model']}), Python {m['python']}, kopf {m['kopf']}, "
        f"load average {load_average()}"
    )


def load_average() -> str:
    """The 1-minute load average: how busy the (shared) machine was, i.e. how noisy timings are."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "unknown"


def wait(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    return wait_for(pred, timeout, interval, what)


# ---- the API server -------------------------------------------------------------------------


def new_api(parents: int, latency: float = 0.0) -> ApiServer:
    """A fresh embedded API server serving the Widget CRD, with the namespace ``bench``; every
    request then waits ``latency`` seconds (fault injection)."""
    api = ApiServer(history_size=max(10_000, 20 * parents)).start()
    try:
        crd = yaml.safe_load((REPO / "examples" / "widget-crd.yaml").read_text())
        api._raw("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
        api._raw("POST", "/api/v1/namespaces", {"metadata": {"name": NS}})
        wait(lambda: api._raw("GET", WIDGETS + "?limit=1"), 10, "Widget CRD served")
        if latency:
            api.faults.set_latency(latency)
    except BaseException:
        api.stop()
        raise
    return api


def audit(api: ApiServer) -> list[dict]:
    """The audit log since the last call (which it clears); warns when it may be truncated."""
    reqs = api.requests()
    api.clear_requests()
    if len(reqs) >= AUDIT_LIMIT:
        print(f"warning: audit log full ({len(reqs)} entries): counts are low", file=sys.stderr)
    return reqs


def watch_opened(reqs: Iterable[dict], agent_prefix: str, resource: str = PLURAL) -> bool:
    """Whether a client whose User-Agent starts with ``agent_prefix`` opened a watch on
    ``resource`` in these audit entries; other clients' watches (the benchmark's own) never
    count."""
    return any(
        r["verb"] == "watch"
        and r["resource"] == resource
        and (r.get("userAgent") or "").startswith(agent_prefix)
        for r in reqs
    )


def writes(reqs: Iterable[dict]) -> int:
    return sum(1 for r in reqs if r["verb"] not in READ_VERBS)


def conflicts(reqs: Iterable[dict]) -> int:
    return sum(1 for r in reqs if r["code"] == 409)


def widget_body(i: int) -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": widget_name(i)},
        "spec": {"size": i % 7, "message": "hello"},
    }


def widget_name(i: int) -> str:
    return f"w-{i:05d}"


# ---- plain HTTP -----------------------------------------------------------------------------


class Http:
    """Keep-alive JSON requests to the API server: one http.client connection per thread, and
    a pool of ``threads`` threads for `map`."""

    def __init__(self, port: int, threads: int = 32) -> None:
        self.port = port
        self.threads = threads
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="bench-http")

    def request(
        self, method: str, path: str, body: Any = None, ctype: str = "application/json"
    ) -> tuple[int, Any]:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        data = json.dumps(body).encode() if body is not None else None
        headers = {"User-Agent": BENCH_AGENT}
        if data is not None:
            headers["Content-Type"] = ctype
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            self._local.conn = None
            raise
        return resp.status, (json.loads(raw) if raw else None)

    def must(
        self, method: str, path: str, body: Any = None, ctype: str = "application/json"
    ) -> Any:
        status, out = self.request(method, path, body, ctype)
        if status >= 300:
            raise RuntimeError(f"{method} {path}: {status} {out}")
        return out

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
        return list(self._pool.map(fn, items))

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def create_widgets(http_: Http, count: int) -> list[dict]:
    """Create Widgets 0..count-1 concurrently; returns them as the server returned them."""
    return http_.map(lambda i: http_.must("POST", WIDGETS, widget_body(i)), range(count))


def change_spec(http_: Http, i: int, size: int) -> dict:
    """Merge-patch Widget i's spec.size; returns the Widget (with its new generation)."""
    return http_.must("PATCH", f"{WIDGETS}/{widget_name(i)}", {"spec": {"size": size}}, MERGE_PATCH)


# ---- watching the Widgets -------------------------------------------------------------------


class WidgetWatch:
    """Every Widget's (generation, status.observedGeneration, status.ready), kept current by a
    list+watch in a daemon thread.

    `expect(generation, count)` starts a wait: a Widget is *done* when its status is ready and
    its observedGeneration equals its generation, which is at least ``generation``; `done_at`
    is the monotonic time at which the count-th Widget became done (seen by the watch).
    ``on_event(name, generation, observed, ready, t)`` is called for every event."""

    def __init__(
        self,
        port: int,
        on_event: Callable[[str, int, int | None, bool, float], None] | None = None,
    ) -> None:
        self.port = port
        self.on_event = on_event
        self._lock = threading.Lock()
        self._state: dict[str, tuple[int, int | None, bool]] = {}
        self._done: set[str] = set()
        self._min_generation = 1 << 62
        self._count = 0
        self.done_at: float | None = None
        self._stopping = False
        self._conn: http.client.HTTPConnection | None = None
        self._listed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="widget-watch", daemon=True)

    def start(self) -> WidgetWatch:
        self._thread.start()
        wait(self._listed.is_set, 30, "widget watch listed")
        return self

    def stop(self) -> None:
        self._stopping = True
        conn = self._conn
        if conn is not None and conn.sock is not None:
            try:
                conn.sock.shutdown(2)
            except OSError:
                pass
        self._thread.join(5)

    def expect(self, generation: int, count: int) -> None:
        with self._lock:
            self._min_generation = generation
            self._count = count
            self._done = {n for n, s in self._state.items() if self._is_done(s)}
            self.done_at = time.monotonic() if len(self._done) >= count else None

    def done(self) -> int:
        with self._lock:
            return len(self._done)

    def _is_done(self, s: tuple[int, int | None, bool]) -> bool:
        gen, observed, ready = s
        return ready and observed == gen and gen >= self._min_generation

    def _update(self, obj: dict, t: float) -> None:
        meta = obj.get("metadata") or {}
        status = obj.get("status") or {}
        name = meta.get("name")
        s = (
            int(meta.get("generation") or 0),
            status.get("observedGeneration"),
            bool(status.get("ready")),
        )
        with self._lock:
            self._state[name] = s
            if self._is_done(s):
                if name not in self._done:
                    self._done.add(name)
                    if len(self._done) >= self._count and self.done_at is None:
                        self.done_at = t
            else:
                self._done.discard(name)
        if self.on_event is not None:
            self.on_event(name, s[0], s[1], s[2], t)

    def _run(self) -> None:
        while not self._stopping:
            try:
                self._list_and_watch()
            except (OSError, http.client.HTTPException, ValueError):
                if self._stopping:
                    return
                time.sleep(0.1)  # reconnect pause after a dropped watch

    def _list_and_watch(self) -> None:
        conn = self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=None)
        agent = {"User-Agent": BENCH_AGENT}
        conn.request("GET", f"/apis/{GROUP}/{VERSION}/{PLURAL}", headers=agent)
        resp = conn.getresponse()
        listed = json.loads(resp.read())
        t = time.monotonic()
        for obj in listed.get("items", []):
            self._update(obj, t)
        self._listed.set()
        rv = listed["metadata"]["resourceVersion"]
        path = f"/apis/{GROUP}/{VERSION}/{PLURAL}?watch=true&resourceVersion={rv}"
        conn.request("GET", path, headers=agent)
        resp = conn.getresponse()
        while True:
            line = resp.readline()
            if not line:
                return
            event = json.loads(line)
            if event.get("type") in ("ADDED", "MODIFIED"):
                self._update(event["object"], time.monotonic())
            elif event.get("type") == "ERROR":
                return  # e.g. 410 Expired: relist


# ---- the process tree of a system -----------------------------------------------------------

_CLK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process (a thread's /proc/PID/task/TID/children list is
    best-effort: a child moves lists when the thread that forked it ends)."""
    out: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    out[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # ended meanwhile
    return out


def tree_pids(root: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for pid, ppid in _parents().items():
        kids.setdefault(ppid, []).append(pid)
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(kids.get(pid, ()))
    return pids


class ProcTree:
    """CPU and memory of a process and its descendants, read from /proc.

    CPU: utime+stime+cutime+cstime of every live process of the tree (cutime/cstime hold the
    CPU of exited children their parent reaped). Peak RSS: the largest sum of resident set
    sizes over the tree; peak PSS: the largest sum of proportional set sizes (a page shared by
    k processes counts 1/k in each, so pages that forked workers share with their fork server
    count once, not once per process); both sampled at ``hz`` in a thread while the tree
    runs."""

    def __init__(self, root: int, hz: float = 20.0) -> None:
        self.root = root
        self.interval = 1.0 / hz
        self.peak_rss = 0
        self.peak_pss = 0
        self._last_cpu = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="proctree", daemon=True)
        self._thread.start()

    def cpu(self) -> float:
        """CPU seconds used by the tree so far (the last value once the root has exited)."""
        total = 0
        found = False
        for pid in tree_pids(self.root):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            found = True
            total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        if found:
            self._last_cpu = total / _CLK
        return self._last_cpu

    def rss(self, pids: list[int] | None = None) -> int:
        total = 0
        for pid in tree_pids(self.root) if pids is None else pids:
            try:
                with open(f"/proc/{pid}/statm") as f:
                    total += int(f.read().split()[1]) * _PAGE
            except OSError:
                continue
        return total

    def pss(self, pids: list[int] | None = None) -> int:
        total = 0
        for pid in tree_pids(self.root) if pids is None else pids:
            try:
                with open(f"/proc/{pid}/smaps_rollup") as f:
                    for line in f:
                        if line.startswith("Pss:"):
                            total += int(line.split()[1]) * 1024
                            break
            except OSError:
                continue
        return total

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            pids = tree_pids(self.root)  # once per sample: the /proc scan is the dear part
            self.peak_rss = max(self.peak_rss, self.rss(pids))
            self.peak_pss = max(self.peak_pss, self.pss(pids))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


def kopf_pool_line(rows: Iterable[dict]) -> str | None:
    """The sentence stating kopf's thread-pool size next to results (None without kopf rows)."""
    sizes = sorted({r["kopf_threads"] for r in rows if r.get("kopf_threads")})
    if not sizes:
        return None
    cpus = os.cpu_count() or 1
    return (
        f"kopf ran its synchronous handlers on a thread pool of "
        f"{' / '.join(str(s) for s in sizes)} threads "
        f"(settings.execution.max_workers; kopf's default is min(32, CPUs + 4) = "
        f"{min(32, cpus + 4)} here)"
    )


def wait_idle(tree: ProcTree, timeout: float, window: float = 0.5, cores: float = 0.1) -> None:
    """Wait until ``tree`` used less than ``cores`` CPUs over a ``window`` (seconds): the system
    finished the work it still had after the last status was seen (e.g. its own echoes)."""
    last = [tree.cpu(), time.monotonic()]

    def idle() -> bool:
        now = time.monotonic()
        if now - last[1] < window:
            return False
        cpu = tree.cpu()
        rate = (cpu - last[0]) / (now - last[1])
        last[:] = [cpu, now]
        return rate < cores

    wait(idle, timeout, "operator idle", 0.05)


# ---- the systems under test -----------------------------------------------------------------


class Operatord:
    """operatord running the example Widget operator (`operatord run`, leader + workers)."""

    def __init__(
        self,
        api: ApiServer,
        workers: int = 2,
        in_flight: int | None = None,
        burn: bool = False,
        workdir: Path | None = None,
        skip_unchanged: bool = True,
        resync_seconds: float = 0,
        adaptive: bool = True,
    ) -> None:
        self.api = api
        self.label = (
            f"operatord (workers={workers}"
            + (f", inFlight={in_flight}" if in_flight else "")
            + ("" if skip_unchanged else ", skipUnchanged off")
            + ("" if adaptive else ", inFlightAdaptive off")
            + ")"
        )
        self.config: dict[str, Any] = {
            "name": "bench",
            "handler": "cpu_widgets:Widgets" if burn else "examples.widgets:Widgets",
            "pythonPath": [str(BENCH), str(REPO)],
            "parent": {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND},
            "children": [{"apiVersion": "v1", "kind": "ConfigMap"}],
            "workers": workers,
            "resyncSeconds": resync_seconds,
            "skipUnchanged": skip_unchanged,
            "inFlightAdaptive": adaptive,
            "logging": {"format": "json", "level": "warning"},
        }
        if in_flight:
            self.config["inFlightPerWorker"] = in_flight
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="bench-operatord-"))
        self.op: OperatorProcess | None = None

    def start(self) -> int:
        self.op = OperatorProcess(self.api, self.config, workdir=self.workdir).start()
        return self.op.proc.pid

    def wait_ready(self, timeout: float = 120) -> None:
        self.op.wait_ready(timeout)

    def handled(self) -> int:
        """Parents handled so far: syncs finished, whatever their result
        (`operatord_syncs_total`), and syncs skipped because the parent's inputs were those
        of its last converged sync (`operatord_syncs_skipped_total`, skipUnchanged)."""
        return int(self.op.metric("operatord_syncs_total")) + self.skipped()

    def skipped(self) -> int:
        """Dispatches skipped as unchanged (`operatord_syncs_skipped_total`)."""
        return int(self.op.metric("operatord_syncs_skipped_total"))

    def calls(self) -> int:
        """Calls of the handler's `sync` so far: two per sync that wrote children (the
        follow-up run observes them before the status is written), one per sync that wrote
        none."""
        return int(self.op.metric("operatord_handler_calls_total", method="sync"))

    def stop(self) -> None:
        if self.op is not None:
            self.op.stop(60)

    def output(self) -> str:
        return self.op.output() if self.op else ""


class Kopf:
    """The kopf twin (bench/kopf_widgets.py), `kopf run --standalone --all-namespaces -q`.

    kopf runs synchronous handlers on a thread pool: ``threads`` sets its size
    (`settings.execution.max_workers`); None keeps kopf's default, a `ThreadPoolExecutor()`
    of min(32, CPUs + 4) threads. `pool_size` is the size kopf actually ran with."""

    label = "kopf"

    def __init__(
        self,
        api: ApiServer,
        burn: float = 0.0,
        workdir: Path | None = None,
        threads: int | None = None,
    ) -> None:
        self.api = api
        self.burn = burn
        self.threads = threads
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="bench-kopf-"))
        self.proc: subprocess.Popen | None = None
        self.calls_path = self.workdir / "calls"
        self.pool_path = self.workdir / "pool"
        self.log_path = self.workdir / "kopf.log"
        self.pool_size: int | None = None
        self._log = None

    def start(self) -> int:
        self.calls_path.write_text("")
        self.pool_path.write_text("")
        self._log = open(self.log_path, "a")  # noqa: SIM115 - closed in stop()
        env = {
            **os.environ,
            "KUBECONFIG": self.api.kubeconfig,
            "BENCH_KOPF_CALLS": str(self.calls_path),
            "BENCH_KOPF_POOL": str(self.pool_path),
            "BENCH_BURN_SECONDS": str(self.burn),
            "PYTHONUNBUFFERED": "1",
        }
        if self.threads is not None:
            env["BENCH_KOPF_THREADS"] = str(self.threads)
        cmd = [sys.executable, "-m", "kopf", "run", "--standalone", "--all-namespaces", "-q"]
        self.proc = subprocess.Popen(
            [*cmd, str(BENCH / "kopf_widgets.py")],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.workdir,
        )
        return self.proc.pid

    def wait_ready(self, timeout: float = 120) -> None:
        """kopf has no readiness probe: ready once kopf itself (User-Agent ``kopf/...``) has
        opened its watch on Widgets, as the API server's audit log shows. The benchmark's own
        watch (another User-Agent) never counts, however late it reaches the server."""

        def watching() -> bool:
            if self.proc.poll() is not None:
                raise SystemExit(f"kopf exited with {self.proc.returncode}:\n{self.output()}")
            return watch_opened(self.api.requests(), KOPF_AGENT)

        wait(watching, timeout, "kopf watching Widgets", 0.05)
        text = self.pool_path.read_text().strip()
        self.pool_size = int(text) if text else None

    def _letters(self) -> str:
        return self.calls_path.read_text()

    def handled(self, letters: str = "r") -> int:
        """Handler calls so far whose kind is in ``letters`` (default: resume)."""
        return sum(1 for c in self._letters() if c in letters)

    def calls(self) -> int:
        return len(self._letters())

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def output(self) -> str:
        return self.log_path.read_text()[-3000:] if self.log_path.exists() else ""
