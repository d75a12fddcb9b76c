"""`operatord demo`: the embedded API server, the example Widget operator and sample parents.

It starts everything on 127.0.0.1, creates widgets, shows them converging, deletes a third of
them and shows them finalized, prints a few metrics, then stops by itself. Exit status 0 means
every step converged within its deadline. With ``keep``, the API server and the operator stay
up after the tour (the ``export KUBECONFIG=...`` line and kubectl commands to try are printed)
until SIGINT or SIGTERM, then stop as without it.

It needs nothing but an installed operatord: the example handler and CRD ship in the package
(`operatord.examples`), and the operator runs through `operatord.testing.OperatorProcess`,
exactly as users run theirs in end-to-end tests.
"""

from __future__ import annotations

import json
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from collections.abc import Callable

    from operatord.testing import OperatorProcess

NAMESPACE = "demo"
HANDLER = "operatord.examples.widgets:Widgets"


def _bar(done: int, total: int, width: int = 30) -> str:
    filled = int(width * done / total) if total else width
    return "[" + "#" * filled + "." * (width - filled) + f"] {done}/{total}"


def _say(msg: str) -> None:
    print(msg, flush=True)


def _progress(label: str, done: int, total: int, final: bool = False) -> None:
    end = "\n" if final or not sys.stdout.isatty() else "\r"
    if sys.stdout.isatty() or final:
        print(f"  {label:<11} {_bar(done, total)}", end=end, flush=True)


def _scrape(port: int) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(body):
        for s in fam.samples:
            if s.name.endswith(("_bucket", "_created")):
                continue
            key = s.name + (
                "{" + ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())) + "}"
                if s.labels
                else ""
            )
            out[key] = s.value
    return out


def main(parents: int = 30, workers: int = 2, timeout: float = 120.0, keep: bool = False) -> int:
    from kubernetes import client

    from operatord.testing import ApiServer, OperatorProcess

    crd = yaml.safe_load(
        resources.files("operatord.examples").joinpath("widget-crd.yaml").read_text()
    )
    work = Path(tempfile.mkdtemp(prefix="operatord-demo-"))
    with ApiServer() as api:
        _say(f"1. embedded Kubernetes API server at {api.url} (kubeconfig: {api.kubeconfig})")
        api_client = api.client()
        client.ApiextensionsV1Api(api_client).create_custom_resource_definition(crd)
        core = client.CoreV1Api(api_client)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE)))
        _say("2. installed the Widget CRD (example.com/v1) and namespace 'demo'")

        config = {
            "name": "widget-operator",
            "handler": HANDLER,
            "parent": {"apiVersion": "example.com/v1", "kind": "Widget"},
            "children": [{"apiVersion": "v1", "kind": "ConfigMap", "updateStrategy": "Replace"}],
            "workers": workers,
            "leaderElection": {"enabled": True, "leaseNamespace": "default"},
            "logging": {"format": "json", "level": "info"},
        }
        op = OperatorProcess(api, config, workdir=work).start()
        assert op.proc is not None  # started
        _say(
            f"3. started `operatord run` with {workers} workers "
            f"(pid {op.proc.pid}, logs: {op.out_path})"
        )
        custom = client.CustomObjectsApi(api_client)
        try:
            t0 = time.monotonic()
            if not _wait_ready(op, timeout):
                return _fail(op, "operatord did not become ready")
            _say(f"   leader elected, caches synced, workers up in {time.monotonic() - t0:.1f}s")
            t0 = time.monotonic()
            for i in range(parents):
                custom.create_namespaced_custom_object(
                    "example.com",
                    "v1",
                    NAMESPACE,
                    "widgets",
                    {
                        "apiVersion": "example.com/v1",
                        "kind": "Widget",
                        "metadata": {"name": f"widget-{i:03d}"},
                        "spec": {"size": i % 5 + 1, "message": f"hello {i}"},
                    },
                )
            _say(f"4. created {parents} widgets; waiting for them to converge")
            ok = _wait(
                "converged",
                parents,
                lambda: sum(1 for w in _widgets(custom) if _converged(w)),
                timeout,
                op,
            )
            if not ok:
                return _fail(op, "widgets did not converge")
            cms = core.list_namespaced_config_map(
                NAMESPACE, label_selector="app.kubernetes.io/managed-by=widget-operator"
            ).items
            _say(
                f"   {parents} widgets ready in {time.monotonic() - t0:.1f}s; "
                f"{len(cms)} ConfigMaps owned by them"
            )
            sample = cms[0]
            assert sample.metadata is not None
            _say(f"   e.g. ConfigMap {sample.metadata.name}: data={json.dumps(sample.data)}")

            doomed = [f"widget-{i:03d}" for i in range(0, parents, 3)]
            for name in doomed:
                custom.delete_namespaced_custom_object(
                    "example.com", "v1", NAMESPACE, "widgets", name
                )
            _say(f"5. deleted {len(doomed)} widgets; waiting for finalize + garbage collection")
            ok = _wait(
                "finalized",
                len(doomed),
                lambda: (
                    len(doomed)
                    - len({w["metadata"]["name"] for w in _widgets(custom)} & set(doomed))
                ),
                timeout,
                op,
            )
            if not ok:
                return _fail(op, "widgets were not finalized")
            m = _scrape(op.metrics_port)
            _say(f"6. a few metrics from :{op.metrics_port}/metrics")
            for key in sorted(m):
                if (
                    key.startswith(
                        (
                            "operatord_syncs_total",
                            "operatord_finalizes_total",
                            "operatord_child_writes_total",
                            "operatord_workers_alive",
                            "operatord_leader{",
                            "operatord_leader ",
                        )
                    )
                    or key == "operatord_leader"
                ):
                    if m[key]:
                        _say(f"   {key} = {m[key]:g}")
            if keep:
                _keep(api.kubeconfig, op)
        finally:
            code = op.stop()
        _say(f"7. operatord drained and exited with status {code}; demo complete")
        return 0 if code == 0 else 1


def _keep(kubeconfig: str, op: OperatorProcess) -> None:
    """Print how to explore the running demo, then wait for SIGINT or SIGTERM."""
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda _s, _f: done.set())
    assert op.proc is not None  # started
    _say(
        "   --keep: the API server and the operator keep running. In another shell:\n"
        f"   export KUBECONFIG={kubeconfig}\n"
        f"   kubectl get widgets -n {NAMESPACE}\n"
        f"   kubectl describe widget widget-001 -n {NAMESPACE}\n"
        f"   kubectl get configmaps -n {NAMESPACE} -l app.kubernetes.io/managed-by=widget-operator\n"
        f"   kubectl patch widget widget-001 -n {NAMESPACE} --type merge -p "
        '\'{"spec":{"size":9}}\'\n'
        f"   curl -s 127.0.0.1:{op.metrics_port}/metrics | grep operatord_syncs_total\n"
        f"   operator log: {op.out_path}\n"
        "   Ctrl-C stops the operator and the API server."
    )
    while not done.wait(0.5):
        if op.proc.poll() is not None:
            _say(f"   operatord exited with status {op.proc.returncode}")
            return


def _wait_ready(op: OperatorProcess, timeout: float) -> bool:
    try:
        op.wait_ready(timeout)
    except (AssertionError, TimeoutError):
        return False
    return True


def _widgets(custom: Any) -> list[dict]:
    return custom.list_namespaced_custom_object("example.com", "v1", NAMESPACE, "widgets")["items"]


def _converged(w: dict) -> bool:
    status = w.get("status") or {}
    return bool(status.get("ready")) and status.get("observedGeneration") == w["metadata"].get(
        "generation"
    )


def _wait(
    label: str, total: int, count: Callable[[], int], timeout: float, op: OperatorProcess
) -> bool:
    deadline = time.monotonic() + timeout
    done = 0
    while time.monotonic() < deadline:
        assert op.proc is not None  # started
        if op.proc.poll() is not None:
            _say(f"\n   operatord exited early with status {op.proc.returncode}")
            return False
        done = count()
        _progress(label, done, total)
        if done >= total:
            _progress(label, done, total, final=True)
            return True
        time.sleep(0.25)
    _progress(label, done, total, final=True)
    return False


def _fail(op: OperatorProcess, what: str) -> int:
    _say(f"error: {what}; last log lines:")
    lines = op.output().splitlines()[-15:]
    for line in lines:
        _say("   " + line)
    return 1
