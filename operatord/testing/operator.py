"""`OperatorProcess`: your operator, run by `operatord run` against an `ApiServer`, in a test.

Guarantees:
- The operator runs as it does in production: a separate `operatord run` process (leader plus
  worker processes) talking HTTP to the API server through a kubeconfig.
- A config given as a dict is written to a file; `metrics.port` and `health.port` get free
  ports unless set, and `leaderElection` is off unless set (one replica in a test). A port
  picked here can be taken by another socket before the daemon binds it; then (the daemon
  exits 3, "already in use") `wait_ready()` picks new ports and starts it again, up to
  `PORT_RETRIES` times, and `metrics_port`/`health_port` follow. Relative
  `pythonPath` entries of a dict resolve against ``base_dir`` (default: the current directory
  when the `OperatorProcess` is created), as `Config.from_dict` does; those of a config file
  resolve against the file's directory, as `operatord run` does.
- ``args`` are extra `operatord run` flags (e.g. ``["--workers", "2"]``) and ``env`` extra
  environment variables (e.g. ``{"OPERATORD_LOG_LEVEL": "debug"}``), as in a pod.
- `wait_ready()` fails at once, with the daemon's last log lines, when the daemon has exited.
- `metric()` raises `KeyError` for a metric name the daemon does not export, so a typo cannot
  pass as a zero.
- `stop()` sends SIGTERM and waits (killing after a timeout), so the operator drains as it would
  in a pod; the context manager always stops it. `start()` while the daemon runs (e.g. inside
  ``with``) does nothing: one `OperatorProcess` runs at most one daemon.
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
import time
import urllib.request
from pathlib import Path
from typing import IO, TYPE_CHECKING

import yaml

READY_POLL_SECONDS = 0.1
#: How often `wait_ready()` restarts a daemon whose picked port was taken meanwhile.
PORT_RETRIES = 3
#: `operatord run`'s exit code when the metrics or health address cannot be bound.
_EXIT_ADDRESS = 3

if TYPE_CHECKING:
    from operatord.apiserver import ApiServer


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sample_names(family: str, kind: str) -> tuple[str, ...]:
    """Every sample name a family can expose, whether or not it has samples yet."""
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_count", "_sum"),
        "summary": ("", "_count", "_sum"),
        "info": ("_info",),
    }.get(kind, ("",))
    return tuple(family + s for s in suffixes)


class OperatorProcess:
    """An `operatord run` subprocess for one config, pointed at ``api`` (an `ApiServer`)."""

    def __init__(
        self,
        api: ApiServer,
        config: dict | str | os.PathLike,
        *,
        workdir: str | os.PathLike | None = None,
        env: dict[str, str] | None = None,
        base_dir: str | os.PathLike | None = None,
        args: list[str] | None = None,
    ):
        self.api = api
        self.dir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="operatord-test-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self._picked: list[str] = []  # the config keys whose port was picked here
        self._port_retries = 0
        if isinstance(config, dict):
            config = dict(config)
            base = Path(base_dir) if base_dir is not None else Path.cwd()
            if config.get("pythonPath"):
                config["pythonPath"] = [
                    str((base / p).resolve()) if not os.path.isabs(p) else p
                    for p in config["pythonPath"]
                ]
            config.setdefault("leaderElection", {"enabled": False})
            config.setdefault("logging", {"format": "json", "level": "info"})
            for key in ("metrics", "health"):
                if key not in config:
                    config[key] = {"port": free_port()}
                    self._picked.append(key)
            self.config = config
            self.config_path = self.dir / f"config-{id(self)}.yaml"
            self.config_path.write_text(yaml.safe_dump(config))
        else:
            self.config_path = Path(config)
            self.config = yaml.safe_load(self.config_path.read_text())
        self._read_ports()
        self.env = env or {}
        self.args = list(args or [])
        self.out_path = self.dir / f"operatord-{id(self)}.log"
        self.proc: subprocess.Popen | None = None
        self._out: IO[str] | None = None

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self) -> OperatorProcess:
        """Start the daemon; a no-op while it runs (``with`` starts it, so ``start()`` inside
        the block does not start a second one). After `stop` it starts it again."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        # After a restart on a taken port the first attempt's lines stay readable.
        mode = "a" if self._port_retries else "w"
        self._out = open(self.out_path, mode)  # noqa: SIM115 - closed in stop()
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
                *self.args,
            ],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"},
        )
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until /readyz answers 200 (leader elected, caches synced, workers up).

        Raises AssertionError with the daemon's last log lines as soon as it has exited, and
        at the deadline otherwise.
        """
        deadline = time.monotonic() + timeout
        while True:
            if self._restart_if_port_taken():
                continue
            self._fail_if_exited()
            try:
                with urllib.request.urlopen(self._url(self.health_port, "/readyz"), timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() >= deadline:
                self._fail_if_exited()
                raise AssertionError(
                    f"operatord not ready after {timeout:g}s; last log lines:\n{self._tail()}"
                )
            time.sleep(READY_POLL_SECONDS)

    def _restart_if_port_taken(self) -> bool:
        """Start again on new ports if the daemon exited because a port picked here was
        taken by the time it bound it; True if it was restarted."""
        if (
            self.proc is None
            or self.proc.poll() != _EXIT_ADDRESS
            or not self._picked
            or self._port_retries >= PORT_RETRIES
            or "already in use" not in self._tail(5)
        ):
            return False
        self._port_retries += 1
        self.stop()
        for key in self._picked:
            self.config[key] = {**self.config[key], "port": free_port()}
        self.config_path.write_text(yaml.safe_dump(self.config))
        self._read_ports()
        self.start()
        return True

    def _read_ports(self) -> None:
        self.metrics_port = int((self.config.get("metrics") or {}).get("port", 8080))
        self.health_port = int((self.config.get("health") or {}).get("port", 8081))

    def _fail_if_exited(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(
                f"operatord exited with {self.proc.returncode} before it was ready; "
                f"last log lines:\n{self._tail()}"
            )

    def _tail(self, lines: int = 20) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

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

    def metric(self, name: str, /, **labels: str) -> float:
        """Sum of the samples of ``name`` (full name, e.g. ``operatord_syncs_total``) whose
        labels include ``labels``, from a fresh scrape of /metrics.

        ``KeyError`` if the scrape has no sample called ``name`` at all (a typo, or a metric
        the daemon does not export); 0.0 if it has some but none match ``labels``."""
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(self._url(self.metrics_port, "/metrics"), timeout=5) as r:
            body = r.read().decode()
        total = 0.0
        known = False
        for family in text_string_to_metric_families(body):
            known = known or name in _sample_names(family.name, family.type)
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    total += sample.value
        if not known:
            raise KeyError(f"/metrics has no metric named {name!r}")
        return total

    @staticmethod
    def _url(port: int, path: str) -> str:
        return f"http://127.0.0.1:{port}{path}"

    def __repr__(self) -> str:
        pid = self.proc.pid if self.proc else None
        return f"OperatorProcess(config={self.config_path}, pid={pid})"
