"""Benchmark: periodic resync of unchanged parents, with and without skipUnchanged.

N converged Widgets (the example Widget operator, examples/widgets.py) on a fresh embedded API
server; operatord runs with ``resyncSeconds`` R. Per mode (``skipUnchanged`` on, then off, on
the same converged Widgets, each by a freshly started daemon):

- skip on: the daemon converges the N Widgets it created; then, over a window of W seconds,
  every parent is resynced about W/R times; the table shows the handler calls
  (``operatord_handler_calls_total``), the skipped syncs (``operatord_syncs_skipped_total``),
  the syncs (``operatord_syncs_total``), the API writes (audit log) and the CPU of operatord's
  process tree (leader + workers) over the window, in seconds and in cores;
- skip off: a fresh daemon first syncs every parent once (its start), then the same window:
  today's behaviour, every resync calls the handler; ``expected calls`` is N*W/R.

    python bench/resync.py [--parents 10000] [--resync 5] [--window 60] [--workers 2]
                           [--modes on off] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    Http,
    Operatord,
    ProcTree,
    WidgetWatch,
    audit,
    create_widgets,
    load_average,
    machine,
    machine_line,
    new_api,
    wait,
    writes,
)

COLUMNS = [
    ("mode", "skipUnchanged"),
    ("window_s", "window (s)"),
    ("expected", "resyncs due"),
    ("calls", "handler calls"),
    ("skipped", "syncs skipped"),
    ("syncs", "syncs"),
    ("writes", "API writes"),
    ("cpu_s", "CPU (s)"),
    ("cores", "CPU (cores)"),
]


def counters(system: Operatord) -> dict[str, float]:
    op = system.op
    return {
        "calls": op.metric("operatord_handler_calls_total", method="sync"),
        "skipped": op.metric("operatord_syncs_skipped_total"),
        "syncs": op.metric("operatord_syncs_total"),
    }


def measure(api, system: Operatord, tree: ProcTree, window: float) -> dict[str, Any]:
    """Counters, writes and CPU of ``system`` over ``window`` seconds from now."""
    audit(api)
    c0, cpu0, t0 = counters(system), tree.cpu(), time.monotonic()
    time.sleep(window)  # a fixed measurement window, not a wait for a condition
    c1, cpu1, t1 = counters(system), tree.cpu(), time.monotonic()
    row: dict[str, Any] = {k: int(c1[k] - c0[k]) for k in c0}
    row["writes"] = writes(audit(api))
    row["window_s"] = t1 - t0
    row["cpu_s"] = cpu1 - cpu0
    row["cores"] = row["cpu_s"] / row["window_s"]
    return row


def run(args: argparse.Namespace) -> list[dict]:
    api = new_api(args.parents)
    http_ = Http(api.port, 32)
    watch = WidgetWatch(api.port).start()
    rows = []
    try:
        for n, mode in enumerate(args.modes):
            system = Operatord(
                api,
                workers=args.workers,
                skip_unchanged=mode == "on",
                resync_seconds=args.resync,
            )
            tree = ProcTree(system.start())
            try:
                system.wait_ready(300)
                if n == 0:  # converge the Widgets once
                    watch.expect(1, args.parents)
                    t0 = time.monotonic()
                    create_widgets(http_, args.parents)
                    wait(lambda: watch.done_at is not None, args.timeout, "converge", 0.1)
                    print(f"  converged {args.parents} in {watch.done_at - t0:.1f} s", flush=True)
                else:  # a fresh daemon: its start handles every parent once first
                    wait(lambda s=system: s.handled() >= args.parents, args.timeout, "start", 0.1)
                row = measure(api, system, tree, args.window)
            finally:
                system.stop()
                tree.stop()
            row["mode"] = mode
            row["expected"] = round(args.parents * row["window_s"] / args.resync)
            rows.append(row)
            print(table_row(row), flush=True)
    finally:
        watch.stop()
        http_.close()
        api.stop()
    return rows


def _cell(key: str, value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}" if key == "cores" else f"{value:.1f}"
    return str(value)


def table_row(row: dict) -> str:
    return "| " + " | ".join(_cell(k, row.get(k)) for k, _ in COLUMNS) + " |"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parents", type=int, default=10_000)
    ap.add_argument("--resync", type=float, default=5.0, help="resyncSeconds")
    ap.add_argument("--window", type=float, default=60.0, help="measured seconds per mode")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--modes", nargs="+", choices=["on", "off"], default=["on", "off"])
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--json", help="also write the rows as JSON to this file")
    args = ap.parse_args()
    load_start = load_average()
    print(
        f"# resync of {args.parents} unchanged parents, resyncSeconds {args.resync:g}, "
        f"{args.workers} workers — {machine_line()}\n"
    )
    print("| " + " | ".join(t for _, t in COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS), flush=True)
    rows = run(args)
    load_end = load_average()
    print(f"\nload average at the end: {load_end}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "machine": machine(),
                    "parents": args.parents,
                    "resync": args.resync,
                    "load_start": load_start,
                    "load_end": load_end,
                    "rows": rows,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
