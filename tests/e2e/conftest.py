"""Fixtures for end-to-end tests: an embedded API server and `operatord run` subprocesses."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from operatord.testing import ApiServer, wait_for

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def widget_crd(group="example.com", kind="Widget", plural="widgets", scope="Namespaced"):
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "names": {
                "kind": kind,
                "plural": plural,
                "singular": kind.lower(),
                "listKind": f"{kind}List",
            },
            "scope": scope,
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }


def install_crd(api_client, crd: dict) -> None:
    client.ApiextensionsV1Api(api_client).create_custom_resource_definition(crd)
    group = crd["spec"]["group"]
    plural = crd["spec"]["names"]["plural"]

    def served():
        doc = api_client.call_api(
            *api_client.param_serialize("GET", f"/apis/{group}/v1", auth_settings=["BearerToken"])
        )
        doc.read()
        return doc.status == 200 and plural.encode() in doc.data

    wait_for(served, 10, message=f"CRD {plural}.{group} served")


@pytest.fixture(scope="module")
def api():
    with ApiServer() as server:
        yield server


@pytest.fixture(scope="module")
def kube(api):
    api_client = api.client()
    install_crd(api_client, widget_crd())
    install_crd(api_client, widget_crd(kind="Gadget", plural="gadgets", scope="Cluster"))
    yield api_client
    api_client.close()


class Operator:
    """One `operatord run` subprocess with its own config, logs and handler call log."""

    def __init__(self, api, tmp_path: Path, **overrides):
        self.api = api
        self.dir = tmp_path
        self.log_dir = tmp_path / "calls"
        self.log_dir.mkdir(exist_ok=True)
        self.metrics_port = free_port()
        self.health_port = free_port()
        config = {
            "name": "e2e",
            "handler": "handlers:Driven",
            "pythonPath": [str(HERE)],
            "parent": {"apiVersion": "example.com/v1", "kind": "Widget"},
            "children": [
                {"apiVersion": "v1", "kind": "ConfigMap", "updateStrategy": "Replace"},
                {"apiVersion": "v1", "kind": "Secret", "updateStrategy": "Replace"},
            ],
            "workers": 2,
            "resyncSeconds": 0,
            "handlerTimeoutSeconds": 10,
            "backoff": {"initialSeconds": 0.2, "maxSeconds": 5, "multiplier": 2.0, "jitter": 0.0},
            "leaderElection": {"enabled": False},
            "metrics": {"port": self.metrics_port},
            "health": {"port": self.health_port},
            "logging": {"format": "json", "level": "info"},
        }
        for key, value in overrides.items():
            config[key] = value
        self.config = config
        self.config_path = tmp_path / f"config-{id(self)}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.out_path = tmp_path / f"operatord-{id(self)}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Operator:
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
            env={**os.environ, "E2E_LOG_DIR": str(self.log_dir), "PYTHONUNBUFFERED": "1"},
        )
        return self

    def calls(self, name: str, op: str = "sync") -> list[float]:
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return []
        return [
            float(t) for o, t in (line.split() for line in path.read_text().splitlines()) if o == op
        ]

    def output(self) -> str:
        return self.out_path.read_text() if self.out_path.exists() else ""

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
        return self.proc.returncode


@pytest.fixture
def operator(api, kube, tmp_path):
    """A factory: ``operator(**config_overrides)`` starts one; all are stopped at teardown."""
    started: list[Operator] = []

    def start(**overrides) -> Operator:
        op = Operator(api, tmp_path, **overrides).start()
        started.append(op)
        return op

    yield start
    for op in started:
        code = op.stop()
        if code not in (0, -9, 1):
            print(op.output()[-5000:])
