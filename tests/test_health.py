"""HealthServer over real HTTP: status codes, bodies, failing and raising checks, Heartbeat."""

from __future__ import annotations

import socket
import threading
import urllib.error
import urllib.request

import pytest

from operatord.health import HealthServer, Heartbeat


def get(port: int, path: str, method: str = "GET") -> tuple[int, str, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode(), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(), dict(err.headers)


@pytest.fixture
def server():
    s = HealthServer(0, host="127.0.0.1")
    s.start()
    yield s
    s.stop()


def test_free_port_and_ok_with_no_checks(server):
    assert server.port and server.port > 0
    assert get(server.port, "/healthz")[:2] == (200, "ok\n")
    code, body, headers = get(server.port, "/readyz")
    assert (code, body) == (200, "ok\n")
    assert headers["Content-Type"].startswith("text/plain")


def test_failing_checks_are_listed_one_per_line(server):
    state = {"leader": None, "caches": "caches not synced: widgets"}
    server.add_liveness("lease", lambda: state["leader"])
    server.add_liveness("dispatcher", lambda: None)
    server.add_readiness("caches", lambda: state["caches"])
    server.add_readiness("workers", lambda: "0/2 workers up")

    assert get(server.port, "/healthz")[:2] == (200, "ok\n")
    code, body, _ = get(server.port, "/readyz")
    assert code == 503
    assert body.splitlines() == ["caches: caches not synced: widgets", "workers: 0/2 workers up"]

    state["leader"] = "lease renewal stale (12.0s)"
    code, body, _ = get(server.port, "/healthz")
    assert (code, body) == (503, "lease: lease renewal stale (12.0s)\n")

    # checks are evaluated per request, never cached
    state["caches"] = None
    server.remove("workers")
    assert get(server.port, "/readyz")[:2] == (200, "ok\n")


def test_a_raising_check_fails_with_its_exception_and_server_survives(server):
    def boom():
        raise RuntimeError("dispatcher thread gone")

    server.add_liveness("dispatcher", boom)
    code, body, _ = get(server.port, "/healthz")
    assert code == 503
    assert body == "dispatcher: RuntimeError: dispatcher thread gone\n"
    assert get(server.port, "/readyz")[0] == 200


def test_multiline_reasons_stay_on_one_line(server):
    server.add_readiness("x", lambda: "first\nsecond")
    assert get(server.port, "/readyz")[1] == "x: first second\n"


def test_unknown_path_is_404_and_head_has_no_body(server):
    assert get(server.port, "/metrics")[0] == 404
    code, body, headers = get(server.port, "/healthz", method="HEAD")
    assert code == 200 and body == "" and headers["Content-Length"] == "3"
    assert get(server.port, "/healthz?verbose")[0] == 200


def test_concurrent_probes(server):
    server.add_readiness("r", lambda: None)
    results = []

    def probe():
        results.append(get(server.port, "/readyz")[0])

    threads = [threading.Thread(target=probe) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [200] * 20


def test_stop_releases_the_port():
    s = HealthServer(0, host="127.0.0.1")
    port = s.start()
    s.stop()
    s.stop()  # idempotent
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))  # would raise if the server still held it
    with HealthServer(0, host="127.0.0.1") as s2:
        assert get(s2.port, "/healthz")[0] == 200


def test_heartbeat_goes_stale_on_its_clock():
    now = [100.0]
    hb = Heartbeat("dispatcher", max_age=5, clock=lambda: now[0])
    assert hb.check() is None
    now[0] += 6
    assert hb.check() == "dispatcher stuck for 6.0s (limit 5s)"
    hb.beat()
    assert hb.check() is None
