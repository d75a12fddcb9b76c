"""Liveness (/healthz) and readiness (/readyz) over HTTP.

A *check* is a callable taking no arguments that returns ``None`` when fine or a short reason
string when not. Guarantees:

- ``/healthz`` runs every liveness check, ``/readyz`` every readiness check, on each request
  (no caching); the answer is ``200 ok`` when all pass, otherwise ``503`` with one line
  ``name: reason`` per failing check, in registration order.
- A check that raises counts as failing, with the exception type and text as its reason; it
  never takes the server down.
- Checks may be added or removed while serving. Checks run on the server's request threads, so
  they must be fast and must not block (read a timestamp, a flag).
- Unless constructed with ``watch_readiness=False``, ``/readyz`` also runs the check
  ``watches`` (:func:`operatord.informer.watch_readiness`): it fails while any informer running
  in this process is down (a request of its own, such as a watch liveness check, got no HTTP
  answer and it has heard nothing since) or unconfirmed for 120 s, so a leader whose caches
  are going stale is reported not ready; silence alone on a quiet server is not a failure, and
  a process without running informers (a standby) passes it.
- Bodies are ``text/plain``; any other path is 404. The server is a stdlib ``ThreadingHTTPServer``
  in a daemon thread and logs nothing per request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Check = Callable[[], str | None]


class HealthServer:
    """Serves ``/healthz`` and ``/readyz`` on ``host:port``; ``port=0`` binds a free port."""

    def __init__(self, port: int, host: str = "0.0.0.0", *, watch_readiness: bool = True) -> None:
        self._requested = (host, port)
        self._lock = threading.Lock()
        self._checks: dict[str, dict[str, Check]] = {"/healthz": {}, "/readyz": {}}
        if watch_readiness:
            self._checks["/readyz"]["watches"] = _watch_readiness
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    def add_liveness(self, name: str, check: Check) -> None:
        """Add (or replace) a check answered by ``/healthz``."""
        with self._lock:
            self._checks["/healthz"][name] = check

    def add_readiness(self, name: str, check: Check) -> None:
        """Add (or replace) a check answered by ``/readyz``."""
        with self._lock:
            self._checks["/readyz"][name] = check

    def remove(self, name: str) -> None:
        """Remove a check by name from both endpoints; unknown names are ignored."""
        with self._lock:
            for checks in self._checks.values():
                checks.pop(name, None)

    def evaluate(self, path: str) -> tuple[int, str]:
        """Run the checks for ``/healthz`` or ``/readyz``; return (status code, body)."""
        with self._lock:
            checks = list(self._checks[path].items())
        failures = []
        for name, check in checks:
            try:
                reason = check()
            except Exception as exc:  # a broken check is a failing check
                reason = f"{type(exc).__name__}: {exc}"
            if reason is not None:
                text = " ".join(str(reason).split()) or "failed"
                failures.append(f"{name}: {text}")
        if failures:
            return 503, "\n".join(failures) + "\n"
        return 200, "ok\n"

    def start(self) -> int:
        """Bind and serve in a daemon thread; returns the bound port (also ``.port``)."""
        if self._server is not None:
            raise RuntimeError("health server already running")
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (stdlib naming)
                self._answer(send_body=True)

            def do_HEAD(self) -> None:  # noqa: N802
                self._answer(send_body=False)

            def _answer(self, send_body: bool) -> None:
                path = self.path.split("?", 1)[0].rstrip("/") or "/"
                if path in ("/healthz", "/readyz"):
                    code, body = owner.evaluate(path)
                else:
                    code, body = 404, "not found\n"
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                if send_body:
                    self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                return  # probes every few seconds would flood the logs

        server = ThreadingHTTPServer(self._requested, Handler)
        server.daemon_threads = True
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.1,), name="operatord-health", daemon=True
        )
        self._thread.start()
        return self.port

    def stop(self) -> None:
        """Stop serving and close the socket; idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> HealthServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _watch_readiness() -> str | None:
    from operatord.informer import watch_readiness

    return watch_readiness()


class Heartbeat:
    """A liveness check for a loop: the loop calls :meth:`beat`; :meth:`check` fails when the
    last beat is older than ``max_age`` seconds on the monotonic ``clock``.

    Before the first beat, the age counts from construction, so a loop that never starts also
    fails the check.
    """

    def __init__(
        self, what: str, max_age: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.what = what
        self.max_age = max_age
        self._clock = clock
        self._last = clock()

    def beat(self) -> None:
        """Record that the loop made progress now."""
        self._last = self._clock()

    def check(self) -> str | None:
        """``None`` while fresh, else ``"<what> stuck for Ns"``."""
        age = self._clock() - self._last
        if age > self.max_age:
            return f"{self.what} stuck for {age:.1f}s (limit {self.max_age:g}s)"
        return None
