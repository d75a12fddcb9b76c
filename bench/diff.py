"""Benchmark: `operatord diff` over N converged parents against `operatord run` converging them.

Per repetition, on a fresh embedded API server holding N new Widgets: `operatord run` (the
example Widget operator, ``--workers`` worker processes) is launched and converges them, timed
from its launch until a watch saw every Widget ready with observedGeneration = generation; the
daemon is stopped; then `operatord diff` runs over the N converged Widgets, timed the same way,
from its launch to its exit (process start, handler import, listing, worker start-up, every
sync in dry run, rendering): once with the same handler (nothing changes, exit 0) and once with
a handler whose ConfigMap gets one more key (every parent changes, N dry-run updates, exit 1).
Both commands do the same kind of work: start, list, run every parent's sync once in worker
processes (run: twice, its follow-up run after creating the ConfigMap) and send its writes.

    python bench/diff.py [--parents 1000] [--workers 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    BENCH,
    REPO,
    Http,
    Operatord,
    WidgetWatch,
    audit,
    create_widgets,
    machine_line,
    new_api,
    wait,
)


def run_diff(api, config: dict, handler: str, workdir: Path) -> tuple[float, int, str]:
    cfg = dict(config, handler=handler)
    path = workdir / f"diff-{handler.replace(':', '-')}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    t0 = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "operatord", "diff", "--config", str(path)]
        + ["--kubeconfig", api.kubeconfig],
        capture_output=True,
        text=True,
        timeout=600,
    )
    return time.monotonic() - t0, done.returncode, done.stderr.strip().splitlines()[-1]


def one(parents: int, workers: int) -> dict:
    api = new_api(parents)
    workdir = Path(tempfile.mkdtemp(prefix="bench-diff-"))
    try:
        http_ = Http(api.port, 32)
        watch = WidgetWatch(api.port).start()
        create_widgets(http_, parents)  # N parents wait; then `run` is launched over them
        system = Operatord(api, workers=workers, workdir=workdir)
        watch.expect(1, parents)
        t0 = time.monotonic()
        system.start()
        wait(lambda: watch.done_at is not None, 600, "converge", 0.01)
        converge = watch.done_at - t0
        system.stop()
        watch.stop()
        audit(api)
        same_s, same_code, same_line = run_diff(
            api, system.config, system.config["handler"], workdir
        )
        change_s, change_code, change_line = run_diff(
            api, system.config, "diff_widgets:Widgets", workdir
        )
        reqs = audit(api)
        writes = [r for r in reqs if r["verb"] not in ("get", "list", "watch")]
        return {
            "converge": converge,
            "same": same_s,
            "same_code": same_code,
            "same_line": same_line,
            "change": change_s,
            "change_code": change_code,
            "change_line": change_line,
            "writes": len(writes),
            "dry": sum(1 for r in writes if r.get("dryRun")),
        }
    finally:
        api.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parents", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    assert BENCH and REPO
    rows = []
    for i in range(args.repeat):
        row = one(args.parents, args.workers)
        rows.append(row)
        print(
            f"  run {i + 1}: converge {row['converge']:.2f}s, diff (same) {row['same']:.2f}s "
            f"exit {row['same_code']}, diff (all change) {row['change']:.2f}s exit "
            f"{row['change_code']}; writes {row['writes']} ({row['dry']} dry run)",
            file=sys.stderr,
        )

    def cell(key: str) -> str:
        values = [r[key] for r in rows]
        return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"

    def ratio(key: str) -> str:
        values = [r[key] / r["converge"] for r in rows]
        return f"{statistics.median(values):.2f}x ({min(values):.2f}-{max(values):.2f})"

    print(f"# operatord diff: {args.parents} parents, workers={args.workers}, {args.repeat} runs")
    print(f"# {machine_line()}")
    print()
    print("| | seconds, median (range) | / run's converge |")
    print("|---|---|---|")
    print(
        f"| `operatord run` launched over N new parents, until converged | {cell('converge')} | 1x |"
    )
    print(f"| `operatord diff`, nothing changes (exit 0) | {cell('same')} | {ratio('same')} |")
    print(
        f"| `operatord diff`, every parent changes (exit 1) | {cell('change')} | {ratio('change')} |"
    )
    print()
    print(f"- diff summary (nothing changes): `{rows[-1]['same_line']}`")
    print(f"- diff summary (every parent changes): `{rows[-1]['change_line']}`")
    total = sum(r["writes"] for r in rows)
    dry = sum(r["dry"] for r in rows)
    print(f"- write requests by diff over all runs: {total}, with dryRun=All: {dry}")
    ok = all(r["same_code"] == 0 and r["change_code"] == 1 for r in rows)
    return 0 if ok and total == dry else 1


if __name__ == "__main__":
    sys.exit(main())
