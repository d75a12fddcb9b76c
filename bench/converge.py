"""Benchmark: time for N parents to converge, and no-op resync throughput, per worker count.

For each worker count it runs `operatord run` (the example Widget operator) against the
embedded API server and measures:
- converge: from the first create until every Widget reports ready with the current
  observedGeneration (each Widget needs a finalizer write, a ConfigMap create, and two syncs);
- no-op resync: a fresh operator process lists the converged Widgets and syncs each once,
  writing nothing; measured from its caches being synced (readyz) until syncs_total >= N.
  Both operators run with ``skipUnchanged: false``, so the fresh one calls the handler for
  every parent: this measures sync throughput (bench/vs_kopf.py's restart and
  bench/resync.py measure skipping).

    python bench/converge.py --parents 1000 --workers 1 2
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import yaml
from kubernetes import client

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from operatord.testing import ApiServer, OperatorProcess, wait_for  # noqa: E402


def wait(pred, timeout: float, what: str, interval: float = 0.05) -> None:
    try:
        wait_for(pred, timeout, interval, what)
    except AssertionError as exc:
        raise SystemExit(str(exc)) from None


def start_operator(api, workdir: Path, workers: int) -> OperatorProcess:
    config = {
        "name": "bench",
        "handler": "examples.widgets:Widgets",
        "pythonPath": [str(REPO)],
        "parent": {"apiVersion": "example.com/v1", "kind": "Widget"},
        "children": [{"apiVersion": "v1", "kind": "ConfigMap"}],
        "workers": workers,
        "resyncSeconds": 0,
        "skipUnchanged": False,  # the no-op resync measures syncs that call the handler
        "logging": {"format": "json", "level": "warning"},
    }
    op = OperatorProcess(api, config, workdir=workdir).start()
    op.wait_ready(120)
    return op


def run_case(parents: int, workers: int) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="operatord-bench-"))
    with ApiServer() as api:
        kube = api.client()
        crd = yaml.safe_load((REPO / "examples" / "widget-crd.yaml").read_text())
        client.ApiextensionsV1Api(kube).create_custom_resource_definition(crd)
        client.CoreV1Api(kube).create_namespace({"metadata": {"name": "bench"}})
        custom = client.CustomObjectsApi(kube)
        wait(lambda: _served(custom), 10, "CRD served")

        op = start_operator(api, workdir, workers)
        t0 = time.monotonic()
        for i in range(parents):
            custom.create_namespaced_custom_object(
                "example.com",
                "v1",
                "bench",
                "widgets",
                {
                    "apiVersion": "example.com/v1",
                    "kind": "Widget",
                    "metadata": {"name": f"w-{i:05d}"},
                    "spec": {"size": i % 7},
                },
            )
        t_created = time.monotonic() - t0

        def converged() -> bool:
            items = custom.list_namespaced_custom_object("example.com", "v1", "bench", "widgets")[
                "items"
            ]
            return sum(1 for w in items if (w.get("status") or {}).get("ready")) >= parents

        wait(converged, 600, "convergence", interval=0.5)  # listing 1000 objects is not free
        t_converge = time.monotonic() - t0
        writes = op.metric("operatord_child_writes_total")
        conflicts = sum(1 for r in api.requests() if r["code"] == 409)
        op.stop()

        # No-op resync: a fresh operator syncs every converged parent once, writing nothing.
        op = start_operator(api, workdir, workers)
        t1 = time.monotonic()
        wait(lambda: op.metric("operatord_syncs_total") >= parents, 600, "no-op resync", 0.1)
        t_resync = time.monotonic() - t1
        resync_writes = op.metric("operatord_child_writes_total") + op.metric(
            "operatord_status_writes_total"
        )
        op.stop()
    return {
        "workers": workers,
        "parents": parents,
        "create_s": t_created,
        "converge_s": t_converge,
        "converge_per_s": parents / t_converge,
        "child_writes": writes,
        "conflicts_409": conflicts,
        "resync_s": t_resync,
        "resync_per_s": parents / t_resync,
        "resync_writes": resync_writes,
    }


def _served(custom) -> bool:
    try:
        custom.list_namespaced_custom_object("example.com", "v1", "bench", "widgets")
        return True
    except Exception:  # noqa: BLE001
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parents", type=int, default=1000)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    print(f"# operatord converge benchmark — {platform.python_version()}, {os.cpu_count()} CPUs")
    print(
        "| workers | parents | creates done (s) | converge (s) | parents/s | child writes | 409s "
        "| no-op resync (s) | syncs/s | writes during resync |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for w in args.workers:
        r = run_case(args.parents, w)
        print(
            f"| {r['workers']} | {r['parents']} | {r['create_s']:.1f} | {r['converge_s']:.1f} "
            f"| {r['converge_per_s']:.0f} "
            f"| {r['child_writes']:.0f} | {r['conflicts_409']} | {r['resync_s']:.1f} "
            f"| {r['resync_per_s']:.0f} | {r['resync_writes']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
