"""Benchmark: related objects. What unrelated changes cost, and how fast a shared object's
change reaches every parent that selects it.

Runs `operatord run` (bench/related_handler.py) against the embedded API server with P parents:
P - S select a Secret of their own by name, S select one shared ConfigMap; N further Secrets
are selected by nobody. Then it measures:
- unrelated churn: the N unrelated Secrets are updated at R per second; once the leader has
  received every one of those watch events, the number of syncs they caused (expected: 0);
- shared change: one update of the shared ConfigMap; the time from the update until all S
  selecting parents have synced, and the number of syncs it caused (expected: exactly S).

    python bench/related.py --parents 5000 --shared 1000 --unrelated 5000 --rate 100
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

NS = "bench"


def wait(pred, timeout: float, what: str, interval: float = 0.05) -> None:
    try:
        wait_for(pred, timeout, interval, what)
    except AssertionError as exc:
        raise SystemExit(str(exc)) from None


def syncs(op: OperatorProcess) -> float:
    return op.metric("operatord_syncs_total")


def idle(op: OperatorProcess) -> bool:
    return op.metric("operatord_in_flight") == 0 and op.metric("operatord_queue_depth") == 0


def run(parents: int, shared: int, unrelated: int, rate: float, workers: int) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="operatord-bench-related-"))
    with ApiServer() as api:
        kube = api.client()
        crd = yaml.safe_load((REPO / "examples" / "widget-crd.yaml").read_text())
        client.ApiextensionsV1Api(kube).create_custom_resource_definition(crd)
        core = client.CoreV1Api(kube)
        custom = client.CustomObjectsApi(kube)
        core.create_namespace({"metadata": {"name": NS}})
        wait(lambda: _served(custom), 10, "CRD served")

        own = parents - shared
        core.create_namespaced_config_map(
            NS, {"metadata": {"name": "shared"}, "data": {"setting": "one"}}
        )
        for i in range(own):
            core.create_namespaced_secret(NS, {"metadata": {"name": f"own-{i}"}, "data": {}})
        for i in range(unrelated):
            body = {"metadata": {"name": f"noise-{i}"}, "data": {"n": "MA=="}}
            core.create_namespaced_secret(NS, body)
        for i in range(parents):
            spec = {"secret": f"own-{i}"} if i < own else {"configMap": "shared"}
            body = {
                "apiVersion": "example.com/v1",
                "kind": "Widget",
                "metadata": {"name": f"w-{i:05d}"},
                "spec": spec,
            }
            custom.create_namespaced_custom_object("example.com", "v1", NS, "widgets", body)

        config = {
            "name": "bench-related",
            "handler": "related_handler:Selecting",
            "pythonPath": [str(REPO / "bench")],
            "parent": {"apiVersion": "example.com/v1", "kind": "Widget"},
            "related": [
                {"apiVersion": "v1", "kind": "Secret"},
                {"apiVersion": "v1", "kind": "ConfigMap"},
            ],
            "namespace": NS,
            "workers": workers,
            "resyncSeconds": 0,
            "logging": {"format": "json", "level": "warning"},
        }
        op = OperatorProcess(api, config, workdir=workdir).start()
        op.wait_ready(120)
        t0 = time.monotonic()
        wait(lambda: syncs(op) >= parents, 900, "first syncs", 0.5)
        wait(lambda: idle(op), 120, "idle after the first syncs", 0.5)
        t_first = time.monotonic() - t0
        cached = op.metric("operatord_cached_objects", resource="secrets")

        # Unrelated churn: N updates at R/s; wait until the leader has every watch event.
        base_events = op.metric("operatord_watch_events_total", resource="secrets", type="MODIFIED")
        before = syncs(op)
        t1 = time.monotonic()
        for i in range(unrelated):
            due = t1 + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            core.patch_namespaced_secret(f"noise-{i}", NS, {"data": {"n": "MQ=="}})
        churn_s = time.monotonic() - t1
        wait(
            lambda: (
                op.metric("operatord_watch_events_total", resource="secrets", type="MODIFIED")
                >= base_events + unrelated
            ),
            60,
            "every unrelated event received",
        )
        wait(lambda: idle(op), 60, "idle after the churn", 0.2)
        churn_syncs = syncs(op) - before

        # One change of the shared ConfigMap.
        before = syncs(op)
        t2 = time.monotonic()
        core.patch_namespaced_config_map("shared", NS, {"data": {"setting": "two"}})
        wait(lambda: syncs(op) >= before + shared, 120, "shared change synced", 0.01)
        shared_s = time.monotonic() - t2
        wait(lambda: idle(op), 60, "idle after the shared change", 0.2)
        shared_syncs = syncs(op) - before
        items = custom.list_namespaced_custom_object("example.com", "v1", NS, "widgets")["items"]
        updated = sum(1 for w in items if (w.get("status") or {}).get("setting") == "two")
        errors = op.metric("operatord_syncs_total", result="error")
        op.stop()
    return {
        "parents": parents,
        "shared": shared,
        "unrelated": unrelated,
        "workers": workers,
        "first_s": t_first,
        "cached_secrets": cached,
        "rate": unrelated / churn_s,
        "churn_syncs": churn_syncs,
        "shared_s": shared_s,
        "shared_syncs": shared_syncs,
        "updated": updated,
        "errors": errors,
    }


def _served(custom) -> bool:
    try:
        custom.list_namespaced_custom_object("example.com", "v1", NS, "widgets")
        return True
    except Exception:  # noqa: BLE001
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parents", type=int, default=5000)
    ap.add_argument("--shared", type=int, default=1000)
    ap.add_argument("--unrelated", type=int, default=5000)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    r = run(args.parents, args.shared, args.unrelated, args.rate, args.workers)
    print(
        f"# operatord related-objects benchmark — {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, {r['workers']} workers"
    )
    print(
        "| parents | first syncs (s) | cached Secrets | unrelated Secret updates | rate (/s) "
        "| syncs they caused | parents sharing the ConfigMap | its change synced all in (s) "
        "| syncs it caused | statuses updated |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {r['parents']} | {r['first_s']:.1f} | {r['cached_secrets']:.0f} | {r['unrelated']} "
        f"| {r['rate']:.0f} | {r['churn_syncs']:.0f} | {r['shared']} | {r['shared_s']:.2f} "
        f"| {r['shared_syncs']:.0f} | {r['updated']} |"
    )
    if r["errors"]:
        print(f"sync errors: {r['errors']:.0f}")


if __name__ == "__main__":
    main()
