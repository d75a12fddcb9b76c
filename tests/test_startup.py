"""`operatord run` start-up failures: one `error:` line naming what to fix, a documented exit
status, no traceback. Each runs the real console entry point against the embedded API server
(or against nothing, for the unreachable case)."""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from operatord import daemon
from operatord.testing import ApiServer, free_port, write_kubeconfig

REPO = Path(__file__).resolve().parents[1]


def config_file(tmp_path: Path, **overrides) -> Path:
    cfg = {
        "name": "startup",
        "handler": "examples.widgets:Widgets",
        "pythonPath": [str(REPO)],
        "parent": {"apiVersion": "v1", "kind": "ConfigMap"},
        "children": [{"apiVersion": "v1", "kind": "Secret"}],
        "workers": 1,
        "leaderElection": {"enabled": False},
        "metrics": {"port": free_port()},
        "health": {"port": free_port()},
        "logging": {"format": "json"},
        **overrides,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "-m", "operatord", "run", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "KUBECONFIG": "/nonexistent/kubeconfig", **(env or {})},
    )


def assert_one_error_line(r: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    errors = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == code, r.stdout + r.stderr
    assert len(errors) == 1 and errors[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def api():
    with ApiServer() as server:
        yield server


def test_exit_codes_are_distinct_and_documented():
    codes = [
        daemon.EXIT_OK,
        daemon.EXIT_ERROR,
        daemon.EXIT_USAGE,
        daemon.EXIT_ADDRESS,
        daemon.EXIT_CREDENTIALS,
        daemon.EXIT_UNREACHABLE,
        daemon.EXIT_FORBIDDEN,
    ]
    assert codes == list(range(7))
    doc = (REPO / "docs" / "design.md").read_text()
    for code in codes:
        assert f"| {code} |" in doc, code


def test_metrics_port_in_use(api, tmp_path):
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        path = config_file(tmp_path, metrics={"port": port})
        r = run("--config", str(path), "--kubeconfig", api.kubeconfig)
    assert_one_error_line(r, daemon.EXIT_ADDRESS, f"port {port} is already in use", "metrics")


def test_health_port_in_use_named_with_its_flag(api, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = run(
            "--config",
            str(config_file(tmp_path)),
            "--kubeconfig",
            api.kubeconfig,
            "--health-probe-bind-address",
            f"127.0.0.1:{port}",
        )
    assert_one_error_line(
        r, daemon.EXIT_ADDRESS, f"127.0.0.1:{port}", "already in use", "--health-probe"
    )


def test_kubeconfig_missing(tmp_path):
    r = run("--config", str(config_file(tmp_path)), "--kubeconfig", str(tmp_path / "nope"))
    assert_one_error_line(r, daemon.EXIT_CREDENTIALS, "kubeconfig", "does not exist")


def test_no_credentials_at_all(tmp_path):
    r = run("--config", str(config_file(tmp_path)), env={"HOME": str(tmp_path)})
    assert_one_error_line(r, daemon.EXIT_CREDENTIALS, "no Kubernetes credentials", "--kubeconfig")


@pytest.mark.parametrize(
    "content",
    ["{{{ not yaml", "apiVersion: v1\nkind: Config\n", "- a list\n"],
    ids=["syntax", "no-context", "not-a-mapping"],
)
def test_kubeconfig_invalid(tmp_path, content):
    kc = tmp_path / "kubeconfig"
    kc.write_text(content)
    r = run("--config", str(config_file(tmp_path)), "--kubeconfig", str(kc))
    assert_one_error_line(r, daemon.EXIT_CREDENTIALS, f"kubeconfig {kc} is invalid")


def test_api_server_unreachable(tmp_path):
    kc = write_kubeconfig(str(tmp_path / "kubeconfig"), f"http://127.0.0.1:{free_port()}")
    r = run("--config", str(config_file(tmp_path)), "--kubeconfig", kc)
    assert_one_error_line(r, daemon.EXIT_UNREACHABLE, "cannot reach the API server at http://")


class _Rbac(http.server.ThreadingHTTPServer):
    """A proxy in front of the embedded API server that answers 403 to lists of one resource,
    as a cluster whose RBAC does not grant it would."""

    def __init__(self, upstream: str, forbidden_path: str, code: int = 403) -> None:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?")[0]
                if path == owner.forbidden_path:
                    status = {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "status": "Failure",
                        "reason": "Forbidden" if code == 403 else "Unauthorized",
                        "code": code,
                        "message": 'secrets is forbidden: User "system:serviceaccount:ops:op" '
                        'cannot list resource "secrets" in API group "" at the cluster scope',
                    }
                    self._send(code, json.dumps(status).encode())
                    return
                req = urllib.request.Request(upstream + self.path, headers=dict(self.headers))
                try:
                    with urllib.request.urlopen(req, timeout=10) as resp:
                        self._send(resp.status, resp.read())
                except urllib.error.HTTPError as e:
                    self._send(e.code, e.read())

            def _send(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                return

        self.forbidden_path = forbidden_path
        super().__init__(("127.0.0.1", 0), Handler)


def run_behind(api, tmp_path, path: str, code: int) -> subprocess.CompletedProcess:
    proxy = _Rbac(api.url, path, code)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        kc = write_kubeconfig(
            str(tmp_path / "kubeconfig"), f"http://127.0.0.1:{proxy.server_address[1]}"
        )
        return run("--config", str(config_file(tmp_path)), "--kubeconfig", kc)
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_forbidden_by_rbac(api, tmp_path):
    r = run_behind(api, tmp_path, "/api/v1/secrets", 403)
    assert_one_error_line(
        r, daemon.EXIT_FORBIDDEN, "forbidden by RBAC", "may not list secrets", "Role"
    )


def test_credentials_rejected(api, tmp_path):
    r = run_behind(api, tmp_path, "/version", 401)
    assert_one_error_line(r, daemon.EXIT_FORBIDDEN, "rejected operatord's credentials (401")
