"""`OperatorProcess`: your operator, run by `operatord run` against an `ApiServer`, in a test.

Guarantees:
- The operator runs as it does in production: a separate `operatord run` process (leader plus
  worker processes) talking HTTP to the API server through a kubeconfig.
- A config given as a dict is written to a file; `metrics.port` and `health.port` get free
  ports unless set, and `leaderElection` is off unless set (one replica in a test).
- `stop()` sends SIGTERM and waits (killing after a timeout), so the operator drains as it would
  in a pod; the context manager always stops it.
- Everything the operator logged stays readable through `output()` and `log_records()`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import IO, TYPE_CHECKING

import yaml

from operatord.testing.waiting import wait_for

if TYPE_CHECKING:
    from operatord.apiserver import ApiServer


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OperatorProcess:
    """An `operatord run` subprocess for one config, pointed at ``api`` (an `ApiServer`)."""

    def __init__(
        self,
        api: ApiServer,
        config: dict | str | os.PathLike,
        *,
        workdir: str | os.PathLike | None = None,
        env: dict[str, str] | None = None,
    ):
        self.api = api
        self.dir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="operatord-test-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        if isinstance(config, dict):
            config = dict(config)
            config.setdefault("leaderElection", {"enabled": False})
            config.setdefault("logging", {"format": "json", "level": "info"})
            config.setdefault("metrics", {"port": free_port()})
            config.setdefault("health", {"port": free_port()})
            self.config = config
            self.config_path = self.dir / f"config-{id(self)}.yaml"
            self.config_path.write_text(yaml.safe_dump(config))
        else:
            self.config_path = Path(config)
            self.config = yaml.safe_load(self.config_path.read_text())
        self.metrics_port = int((self.config.get("metrics") or {}).get("port", 8080))
        self.health_port = int((self.config.get("health") or {}).get("port", 8081))
        self.env = env or {}
        self.out_path = self.dir / f"operatord-{id(self)}.log"
        self.proc: subprocess.Popen | None = None
        self._out: IO[str] | None = None

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self) -> OperatorProcess:
        self._out = open(self.out_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "operatord",
                "run",
                "--config",
                str(self.config_path),
                "--kubeconfig",
                self.api.kubeconfig,
            ],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"},
        )
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until /readyz answers 200 (leader elected, caches synced, workers up)."""

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"operatord exited with {self.proc.returncode}:\n{self.output()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(self._url(self.health_port, "/readyz"), timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_for(ready, timeout, 0.1, "operatord ready")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait up to ``timeout`` (then SIGKILL); returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._out is not None:
            self._out.close()
            self._out = None
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL, as a node failure would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> OperatorProcess:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- observation --------------------------------------------------------------------

    def output(self) -> str:
        """Everything the operator wrote to stdout and stderr so far."""
        return self.out_path.read_text() if self.out_path.exists() else ""

    def log_records(self) -> list[dict]:
        """The JSON log lines so far, parsed (other lines are skipped)."""
        records = []
        for line in self.output().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                records.append(rec)
        return records

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` (full name, e.g. ``operatord_syncs_total``) whose
        labels include ``labels``, from a fresh scrape of /metrics."""
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(self._url(self.metrics_port, "/metrics"), timeout=5) as r:
            body = r.read().decode()
        total = 0.0
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    total += sample.value
        return total

    @staticmethod
    def _url(port: int, path: str) -> str:
        return f"http://127.0.0.1:{port}{path}"

    def __repr__(self) -> str:
        pid = self.proc.pid if self.proc else None
        return f"OperatorProcess(config={self.config_path}, pid={pid})"
