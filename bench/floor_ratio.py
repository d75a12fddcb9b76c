"""Benchmark: operatord's time against the raw-write floor, repeated, with the spread.

One run of bench/vs_kopf.py gives one ratio, and on a shared machine a ratio moves by 10-20%
from run to run. This runs exactly vs_kopf's raw-write floor and its operatord system,
alternately, ``--runs`` times (default 7) in one scenario (default ``none``), each on a fresh
embedded API server, and prints every run's converge and update-wave ratio, then the medians
and the range.

    python bench/floor_ratio.py --runs 7 --scenario none --parents 1000
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Operatord, load_average, machine_line  # noqa: E402
from vs_kopf import SCENARIOS, run_floor, run_system  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--scenario", choices=sorted(SCENARIOS), default="none")
    ap.add_argument("--parents", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--in-flight", type=int, default=None, help="operatord's inFlightPerWorker")
    ap.add_argument("--client-threads", type=int, default=32)
    ap.add_argument("--timeout", type=float, default=600, help="deadline per phase (s)")
    args = ap.parse_args()
    sc = SCENARIOS[args.scenario]
    threads = 64 if sc["latency"] else 8
    print(
        f"# operatord / raw-write floor, {args.parents} parents, {args.scenario} "
        f"({sc['title']}), {args.workers} workers — {machine_line()}"
    )
    print("| run | floor converge (s) | operatord converge (s) | converge ratio | "
          "floor update (s) | operatord update (s) | update ratio | missing |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    converge, update, missing = [], [], 0

    def make(api):
        return Operatord(api, workers=args.workers, in_flight=args.in_flight, burn=sc["burn"] > 0)

    for i in range(1, args.runs + 1):
        floor = run_floor(sc, args.parents, 2, threads)
        op = run_system(make, sc, args.parents, args.client_threads, args.timeout)
        missing += op.get("missing", 0)
        c = op["converge_s"] / floor["converge_s"]
        u = op["update_s"] / floor["update_s"]
        converge.append(c)
        update.append(u)
        print(
            f"| {i} | {floor['converge_s']:.2f} | {op['converge_s']:.2f} | {c:.2f}x | "
            f"{floor['update_s']:.2f} | {op['update_s']:.2f} | {u:.2f}x | "
            f"{op.get('missing', 0)} |",
            flush=True,
        )
    print(
        f"\n- converge: median {statistics.median(converge):.2f}x of the floor "
        f"(range {min(converge):.2f}-{max(converge):.2f}x over {args.runs} runs)"
    )
    print(
        f"- update wave: median {statistics.median(update):.2f}x of the floor "
        f"(range {min(update):.2f}-{max(update):.2f}x)"
    )
    print(f"\nload average at the end: {load_average()}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
