"""Benchmark: how long healthy parents take to converge next to handlers that kill their worker.

Two runs of `operatord run` (tests/e2e/handlers.py:Driven, 1 worker, inFlightPerWorker 16), each
on a fresh embedded API server: N healthy Widgets alone, then the same N healthy Widgets created
together with C Widgets whose handler calls os._exit (spec.crash). Reports both converge times
of the healthy parents, their ratio, and the worker restarts the crashers caused.

    python bench/crashers.py --healthy 100 --crashers 3 --runs 7
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from operatord.testing import ApiServer, OperatorProcess, wait_for  # noqa: E402

E2E = REPO / "tests" / "e2e"
WIDGETS = "/apis/example.com/v1/namespaces/default/widgets"


def run(healthy: int, crashers: int) -> tuple[float, float]:
    """(seconds until every healthy Widget is ready, worker restarts)."""
    with ApiServer() as api:
        api.apply_crd("example.com", "v1", "Widget")  # no schema: the handler reads spec.crash
        config = {
            "name": "crashers",
            "handler": "handlers:Driven",
            "pythonPath": [str(E2E)],
            "parent": {"apiVersion": "example.com/v1", "kind": "Widget"},
            "children": [{"apiVersion": "v1", "kind": "ConfigMap"}],
            "workers": 1,
            "resyncSeconds": 0,
            "backoff": {"initialSeconds": 0.2, "maxSeconds": 5},
            "leaderElection": {"enabled": False},
            "logging": {"format": "json", "level": "warning"},
        }
        with OperatorProcess(api, config, workdir=Path(tempfile.mkdtemp())) as op:
            op.wait_ready(120)
            start = time.monotonic()
            for i in range(crashers):
                body = {
                    "apiVersion": "example.com/v1",
                    "kind": "Widget",
                    "metadata": {"name": f"crash-{i}"},
                    "spec": {"crash": True},
                }
                api._raw("POST", WIDGETS, body)
            for i in range(healthy):
                body = {
                    "apiVersion": "example.com/v1",
                    "kind": "Widget",
                    "metadata": {"name": f"ok-{i:04d}"},
                    "spec": {"size": 1},
                }
                api._raw("POST", WIDGETS, body)

            def done() -> bool:
                items = api._raw("GET", WIDGETS)["items"]
                ready = [w for w in items if (w.get("status") or {}).get("ready")]
                return len(ready) >= healthy

            wait_for(done, 300, 0.1, "healthy parents ready")
            took = time.monotonic() - start
            return took, op.metric("operatord_worker_restarts_total")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--healthy", type=int, default=100)
    ap.add_argument("--crashers", type=int, default=3)
    ap.add_argument("--runs", type=int, default=1, help="pairs of runs; a median row follows")
    args = ap.parse_args()
    print(
        f"# operatord next to crashing handlers — {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )
    print(
        "| healthy | crashers | converge alone (s) | converge with crashers (s) | ratio | worker restarts |"
    )
    print("|---|---|---|---|---|---|")
    rows = []
    for _ in range(args.runs):
        alone, _ = run(args.healthy, 0)
        mixed, restarts = run(args.healthy, args.crashers)
        rows.append((alone, mixed, mixed / alone, restarts))
        print(
            f"| {args.healthy} | {args.crashers} | {alone:.2f} | {mixed:.2f} | "
            f"{mixed / alone:.2f}x | {restarts:.0f} |",
            flush=True,
        )
    if args.runs > 1:
        med = [statistics.median(col) for col in zip(*rows, strict=True)]
        print(f"| median | | {med[0]:.2f} | {med[1]:.2f} | {med[2]:.2f}x | {med[3]:.0f} |")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
