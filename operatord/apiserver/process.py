"""`ApiServer`: an embedded Kubernetes API server on 127.0.0.1, for tests, demos and benchmarks.

    from operatord.testing import ApiServer   # or operatord.apiserver

    with ApiServer() as api:
        core = kubernetes.client.CoreV1Api(api.client())
        ...

Guarantees:
- `start()` returns once the server answers HTTP; `stop()` ends it and removes its kubeconfig.
- By default the server runs in its own process (its own GIL: the client under test and the
  server do not compete for one interpreter lock); `in_process=True` runs it on a thread.
  Both modes behave identically: everything — faults, audit log — goes over HTTP.
- A server process started by `ApiServer` exits when its parent dies (it watches its stdin).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, TypedDict

__all__ = ["ApiServer", "FaultsClient", "serve_forever", "write_kubeconfig"]


def write_kubeconfig(path: str, url: str, namespace: str = "default") -> str:
    """Write a kubeconfig for `url` (token auth with a dummy token, plain HTTP)."""
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "operatord", "cluster": {"server": url}}],
        "users": [{"name": "operatord", "user": {"token": "operatord-embedded"}}],
        "contexts": [
            {
                "name": "operatord",
                "context": {"cluster": "operatord", "user": "operatord", "namespace": namespace},
            }
        ],
        "current-context": "operatord",
        "preferences": {},
    }
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)  # JSON is YAML: no PyYAML needed
    return path


class _ServerOptions(TypedDict):
    """Keyword arguments of `ApiHttpServer` that `ApiServer` and `serve_forever` pass on."""

    history_size: int
    bookmark_interval: float
    gc_delay: float


class _Control:
    """Plain HTTP client for the `/_operatord/` control endpoints (no kubernetes import)."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port

    def call(self, method: str, path: str, body: Any = None) -> Any:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            data = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if data is not None else {}
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            out = json.loads(raw) if raw else None
            if resp.status >= 400:
                raise RuntimeError(f"{method} {path}: {resp.status} {out}")
            return out
        finally:
            conn.close()


class FaultsClient:
    """Fault injection of a running server (works across processes: it is all HTTP).

    Fault rules apply to resource requests only (not discovery or control endpoints). The
    HTTP form is `PUT /_operatord/faults` with the document `get()` returns."""

    def __init__(self, control: _Control) -> None:
        self._c = control

    def get(self) -> dict:
        """The current fault configuration."""
        return self._c.call("GET", "/_operatord/faults")

    def _update(self, **changes: Any) -> dict:
        cfg = self.get()
        cfg.update(changes)
        return self._c.call("PUT", "/_operatord/faults", cfg)

    def set_latency(self, seconds: float, jitter: float = 0.0) -> None:
        """Delay every API request by `seconds` plus a uniform random `jitter`."""
        self._update(latency=seconds, latencyJitter=jitter)

    def add_error(
        self,
        code: int = 500,
        fraction: float = 1.0,
        verbs: list[str] | None = None,
        resources: list[str] | None = None,
        retry_after: int | None = None,
        count: int | None = None,
        seed: int | None = None,
    ) -> None:
        """Answer a `fraction` of matching requests with `code` (429, 500 or 503).

        `verbs` are audit verbs (get, list, watch, create, update, patch, delete,
        deletecollection); `resources` are plurals (`configmaps`), `plural.group`
        (`widgets.example.com`) or with a subresource (`widgets/status`); empty means all.
        429 answers carry `Retry-After` (`retry_after`, default 1). `count` caps how many
        requests the rule fails; None means unlimited. `seed` makes the choice of failed
        requests reproducible: the rule draws from its own generator seeded with it, so the
        same sequence of matching requests fails the same way (the generator restarts
        whenever the fault configuration is replaced, e.g. by the next `add_error`)."""
        cfg = self.get()
        cfg["errors"].append(
            {
                "code": code,
                "fraction": fraction,
                "verbs": verbs or [],
                "resources": resources or [],
                "retryAfter": retry_after,
                "count": count,
                "seed": seed,
            }
        )
        self._c.call("PUT", "/_operatord/faults", cfg)

    def drop_watches(self) -> int:
        """Abort every open watch connection now (no terminating chunk); returns how many."""
        return self._c.call("POST", "/_operatord/faults/drop-watches", {})["dropped"]

    def drop_watches_after(self, seconds: float | None) -> None:
        """Abort each watch `seconds` after it starts (None: never)."""
        self._update(watchDropAfter=seconds)

    def ignore_shard_selector(self, ignore: bool = True) -> None:
        """Act like an API server without ShardedListAndWatch (before v1.36, or the gate off):
        ``shardSelector`` is ignored on lists and watches and no ``shardInfo`` is returned."""
        self._update(ignoreShardSelector=ignore)

    def without_watch_list(self, how: str | None = "ignore") -> None:
        """Act like an API server without streaming lists (WatchList, KEP-3157).

        ``"ignore"``: ``sendInitialEvents`` and ``resourceVersionMatch`` of watches are
        dropped, as by servers and proxies that do not know them: a plain watch (without a
        resourceVersion it still starts with the current state as ADDED events), and no
        ``k8s.io/initial-events-end`` bookmark. ``"reject"``: such watches are a 422 Invalid,
        as kube-apiserver answers with the WatchList feature gate off. None: supported."""
        self._update(withoutWatchList=how)

    def without_partial_metadata(self, without: bool = True) -> None:
        """Act like an API server without meta.k8s.io/v1 PartialObjectMetadata: the
        ``as=PartialObjectMetadata`` and ``as=PartialObjectMetadataList`` media types are not
        acceptable, so an ``Accept`` header with a plain ``application/json`` fallback gets
        the full object and one without it gets 406 NotAcceptable."""
        self._update(withoutPartialObjectMetadata=without)

    def compact(self) -> str:
        """Forget the event history: the next watch from any older resourceVersion (and any
        older continue token) gets 410 Expired. Returns the current resourceVersion."""
        return self._c.call("POST", "/_operatord/faults/compact", {})["resourceVersion"]

    def clear(self) -> None:
        """Remove every fault."""
        self._c.call("DELETE", "/_operatord/faults")


class ApiServer:
    """An embedded Kubernetes API server; a context manager.

    Attributes once started: `url`, `port`, `kubeconfig` (path), `faults` (FaultsClient)."""

    def __init__(
        self,
        port: int = 0,
        *,
        in_process: bool = False,
        history_size: int = 10_000,
        bookmark_interval: float = 1.0,
        gc_delay: float = 0.05,
        startup_timeout: float = 10.0,
    ) -> None:
        self._port = port
        self.in_process = in_process
        self._opts: _ServerOptions = {
            "history_size": history_size,
            "bookmark_interval": bookmark_interval,
            "gc_delay": gc_delay,
        }
        self._startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._tmpdir: str | None = None
        self.url = ""
        self.host = "127.0.0.1"
        self.port = 0
        self.kubeconfig = ""
        self._control: _Control | None = None
        self.faults: FaultsClient | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> ApiServer:
        if self.url:
            return self
        if self.in_process:
            self._start_thread()
        else:
            self._start_process()
        self._tmpdir = tempfile.mkdtemp(prefix="operatord-apiserver-")
        self.kubeconfig = write_kubeconfig(os.path.join(self._tmpdir, "kubeconfig"), self.url)
        self._control = _Control(self.host, self.port)
        self.faults = FaultsClient(self._control)
        return self

    def _start_process(self) -> None:
        cmd = [
            sys.executable,
            "-m",
            "operatord.apiserver",
            "--port",
            str(self._port),
            "--exit-on-stdin-eof",
            "--history-size",
            str(self._opts["history_size"]),
            "--bookmark-interval",
            str(self._opts["bookmark_interval"]),
            "--gc-delay",
            str(self._opts["gc_delay"]),
        ]
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        proc = self._proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True
        )
        assert proc.stdout is not None  # stdout=PIPE
        line = b""
        deadline = time.monotonic() + self._startup_timeout
        # the first stdout line is the URL; anything else means it failed to start
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line or proc.poll() is not None:
                break
        url = line.decode().strip()
        if not url.startswith("http://"):
            proc.kill()
            proc.wait()
            raise RuntimeError(f"embedded API server failed to start: {url!r}")
        self.url = url
        self.port = int(url.rsplit(":", 1)[1])

    def _start_thread(self) -> None:
        from .server import ApiHttpServer

        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            async def main() -> None:
                srv = ApiHttpServer(port=self._port, **self._opts)
                await srv.start()
                self._loop = asyncio.get_running_loop()
                self._stop_event = asyncio.Event()
                self.port = srv.port
                self.url = srv.url
                ready.set()
                await self._stop_event.wait()
                await srv.close()

            try:
                asyncio.run(main())
            except BaseException as e:  # reported to start()
                errors.append(e)
                ready.set()

        self._thread = threading.Thread(target=run, name="operatord-apiserver", daemon=True)
        self._thread.start()
        ready.wait(self._startup_timeout)
        if errors or not self.url:
            raise RuntimeError(f"embedded API server failed to start: {errors!r}")

    def stop(self) -> None:
        """Stop the server (idempotent)."""
        if self._proc is not None:
            proc, self._proc = self._proc, None
            try:
                if proc.stdin is not None:  # always: started with stdin=PIPE
                    proc.stdin.close()  # end of input: the server shuts down cleanly
            except OSError:
                pass
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stdout is not None:  # always: started with stdout=PIPE
                proc.stdout.close()
        if self._thread is not None:
            if self._loop is not None and self._stop_event is not None:
                self._loop.call_soon_threadsafe(self._stop_event.set)
            self._thread.join(5)
            self._thread = None
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
        self.url = ""

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers ----------------------------------------------------------------------------

    def client(self) -> Any:
        """A new `kubernetes.client.ApiClient` configured for this server."""
        import kubernetes.client

        cfg = kubernetes.client.Configuration()
        cfg.host = self.url
        cfg.api_key = {"authorization": "operatord-embedded"}
        cfg.api_key_prefix = {"authorization": "Bearer"}
        return kubernetes.client.ApiClient(cfg)

    def _ctl(self) -> _Control:
        if self._control is None:
            raise RuntimeError("the embedded API server is not started")
        return self._control

    def requests(self) -> list[dict]:
        """The audit log, oldest first: dicts with verb, apiGroup, resource, subresource,
        namespace, name, code, requestURI, userAgent and time (when the request arrived, as
        ``time.monotonic()``: comparable with the caller's clock on the same Linux host) (the
        last 100,000 resource requests); writes (create,
        update, patch, delete, deletecollection) also carry ``dryRun`` (sent with
        ``dryRun=All``)."""
        return self._ctl().call("GET", "/_operatord/requests")

    def clear_requests(self) -> None:
        self._ctl().call("DELETE", "/_operatord/requests")

    def state(self) -> dict:
        """Current resourceVersion, open watches and served types."""
        return self._ctl().call("GET", "/_operatord/state")

    def apply_crd(
        self,
        group: str,
        version: str,
        kind: str,
        plural: str | None = None,
        *,
        namespaced: bool = True,
        status_subresource: bool = True,
        schema: dict | None = None,
        short_names: list[str] | None = None,
        timeout: float = 10.0,
    ) -> dict:
        """Create (or replace) a CRD and return it once its type is served."""
        plural = plural or kind.lower() + "s"
        ver: dict[str, Any] = {
            "name": version,
            "served": True,
            "storage": True,
            "schema": {
                "openAPIV3Schema": schema
                or {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
            },
        }
        if status_subresource:
            ver["subresources"] = {"status": {}}
        names: dict[str, Any] = {
            "plural": plural,
            "singular": kind.lower(),
            "kind": kind,
            "listKind": kind + "List",
        }
        if short_names:
            names["shortNames"] = list(short_names)
        crd = {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}"},
            "spec": {
                "group": group,
                "names": names,
                "scope": "Namespaced" if namespaced else "Cluster",
                "versions": [ver],
            },
        }
        path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{plural}.{group}"
        out = self._raw(
            "PATCH",
            path + "?fieldManager=operatord-testing&force=true",
            crd,
            "application/apply-patch+yaml",
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self._raw("GET", f"/apis/{group}/{version}/{plural}?limit=1")
                return out
            except RuntimeError:
                time.sleep(0.02)
        raise TimeoutError(f"{plural}.{group} not served after {timeout}s")

    def _raw(
        self, method: str, path: str, body: Any = None, ctype: str = "application/json"
    ) -> Any:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, body=data, headers={"Content-Type": ctype} if data else {})
            resp = conn.getresponse()
            out = json.loads(resp.read() or b"null")
            if resp.status >= 400:
                raise RuntimeError(f"{method} {path}: {resp.status} {out}")
            return out
        finally:
            conn.close()


# -- process entry points ------------------------------------------------------------------


async def _serve(
    port: int,
    kubeconfig_out: str | None,
    exit_on_stdin_eof: bool,
    opts: _ServerOptions,
) -> int:
    from .server import ApiHttpServer

    srv = ApiHttpServer(port=port, **opts)
    await srv.start()
    if kubeconfig_out:
        write_kubeconfig(kubeconfig_out, srv.url)
    sys.stdout.write(srv.url + "\n")
    sys.stdout.flush()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if exit_on_stdin_eof:

        def on_stdin() -> None:
            try:
                data = os.read(0, 4096)
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(0)
                stop.set()

        loop.add_reader(0, on_stdin)
    await stop.wait()
    # Before the loop closes its wakeup pipe: a signal arriving during shutdown then acts as
    # by default instead of writing to a closed descriptor (a noisy "Exception ignored").
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(sig)
    await srv.close()
    return 0


def serve_forever(
    port: int = 0,
    kubeconfig_out: str | None = None,
    *,
    exit_on_stdin_eof: bool = False,
    history_size: int = 10_000,
    bookmark_interval: float = 1.0,
    gc_delay: float = 0.05,
) -> int:
    """Run the server in the foreground until SIGINT/SIGTERM; print its URL first.
    Returns the process exit code."""
    opts: _ServerOptions = {
        "history_size": history_size,
        "bookmark_interval": bookmark_interval,
        "gc_delay": gc_delay,
    }
    try:
        return asyncio.run(_serve(port, kubeconfig_out, exit_on_stdin_eof, opts))
    except OSError as e:
        print(f"operatord apiserver: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m operatord.apiserver")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--kubeconfig-out", default=None)
    p.add_argument("--exit-on-stdin-eof", action="store_true")
    p.add_argument("--history-size", type=int, default=10_000)
    p.add_argument("--bookmark-interval", type=float, default=1.0)
    p.add_argument("--gc-delay", type=float, default=0.05)
    a = p.parse_args(argv)
    return serve_forever(
        a.port,
        a.kubeconfig_out,
        exit_on_stdin_eof=a.exit_on_stdin_eof,
        history_size=a.history_size,
        bookmark_interval=a.bookmark_interval,
        gc_delay=a.gc_delay,
    )


if __name__ == "__main__":
    sys.exit(main())
