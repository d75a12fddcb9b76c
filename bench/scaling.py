"""Benchmark: does operatord's cost per parent stay flat as parents grow? Medians of repeated runs.

For each parent count (``--parents``, default 1,000 and 10,000), ``--runs`` runs (default 3)
of exactly what bench/vs_kopf.py does for operatord in its ``none`` scenario (a fresh
embedded API server; converge N new Widgets, update wave, restart): the median converge time,
CPU seconds of the process tree per parent (converge and update wave), peak RSS and PSS of
the tree, and the no-op restart over the N converged Widgets (time until every one has been
synced once, and the writes it made: 0 expected). The last lines compare each count's median
CPU per parent and peak PSS with the first count's: within 10% means linear. One shared machine is noisy by tens of percent from run to run;
medians of several runs are what a 10% threshold can be judged on.

    python bench/scaling.py --parents 1000 10000 --runs 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Operatord, load_average, machine_line  # noqa: E402
from vs_kopf import SCENARIOS, run_system  # noqa: E402


def measure(parents: int, runs: int, workers: int, timeout: float) -> dict:
    rows = [
        run_system(
            lambda api: Operatord(api, workers=workers), SCENARIOS["none"], parents, 32, timeout
        )
        for _ in range(runs)
    ]
    missing = sum(r.get("missing", 0) for r in rows)
    return {
        "parents": parents,
        "runs": runs,
        "converge_s": statistics.median(r["converge_s"] for r in rows),
        "cpu_ms_per_parent": statistics.median(1000 * r["cpu_s"] / parents for r in rows),
        "cpu_all": [round(1000 * r["cpu_s"] / parents, 2) for r in rows],
        "rss_mb": statistics.median(r["rss_mb"] for r in rows),
        "pss_mb": statistics.median(r["pss_mb"] for r in rows),
        "restart_s": statistics.median(r["restart_s"] or float("inf") for r in rows),
        "restart_writes": max(r["restart_writes"] for r in rows),
        "missing": missing,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parents", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=600, help="deadline per phase (s)")
    args = ap.parse_args()
    print(f"# operatord scaling, {args.workers} workers, no added latency — {machine_line()}")
    print(
        "| parents | runs | converge (s, median) | CPU per parent (ms, median) | "
        "CPU per parent (ms, each run) | peak RSS (MB, median) | peak PSS (MB, median) | "
        "no-op restart (s, median) | restart writes (most) | missing |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    results = []
    for n in args.parents:
        r = measure(n, args.runs, args.workers, args.timeout)
        results.append(r)
        print(
            f"| {n} | {r['runs']} | {r['converge_s']:.1f} | {r['cpu_ms_per_parent']:.2f} | "
            f"{' / '.join(str(x) for x in r['cpu_all'])} | {r['rss_mb']:.0f} | "
            f"{r['pss_mb']:.0f} | {r['restart_s']:.1f} | {r['restart_writes']} | {r['missing']} |",
            flush=True,
        )
    base = results[0]
    for r in results[1:]:
        change = r["cpu_ms_per_parent"] / base["cpu_ms_per_parent"] - 1
        print(
            f"- CPU per parent at {r['parents']} parents: {change:+.0%} against "
            f"{base['parents']} (medians)"
        )
        print(
            f"- peak PSS at {r['parents']} parents: {r['pss_mb'] / base['pss_mb']:.2f}x "
            f"{base['parents']}'s for {r['parents'] / base['parents']:g}x the parents (medians)"
        )
    print(f"\nload average at the end: {load_average()}")
    return 1 if any(r["missing"] or r["restart_writes"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
