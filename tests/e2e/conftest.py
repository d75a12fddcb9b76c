"""Fixtures for end-to-end tests: an embedded API server and `operatord run` subprocesses."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from kubernetes import client

from operatord.testing import ApiServer, OperatorProcess, wait_for

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


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


def descendants(pid: int) -> list[int]:
    """``pid``'s child processes, recursively (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


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


class Operator(OperatorProcess):
    """`operatord run` with the e2e test handler, and the handler's call log."""

    def __init__(self, api, tmp_path: Path, **overrides):
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
            "logging": {"format": "json", "level": "info"},
            **overrides,
        }
        self.log_dir = tmp_path / "calls"
        self.log_dir.mkdir(exist_ok=True)
        super().__init__(api, config, workdir=tmp_path, env={"E2E_LOG_DIR": str(self.log_dir)})

    def calls(self, name: str, op: str = "sync") -> list[float]:
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return []
        return [
            float(t) for o, t in (line.split() for line in path.read_text().splitlines()) if o == op
        ]


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


@pytest.fixture
def ns(kube):
    """A fresh namespace for one test."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(kube).create_namespace({"metadata": {"name": name}})
    return name
