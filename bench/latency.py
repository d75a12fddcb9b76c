"""Benchmark: latency from a spec change to the matching status, at a steady rate of changes.

For each system (operatord running the example Widget operator; its kopf twin,
bench/kopf_widgets.py) on a fresh embedded API server with no added latency: create
``--parents`` Widgets and wait until they converged; then change one Widget's spec every
1/``--rate`` seconds for ``--seconds`` seconds (round robin over the Widgets, so no Widget
changes twice in a run of 5,000 parents at 50/s for 30 s), and measure per change:

- status: from the change request's answer (which carries the new generation) until a watch
  on the Widgets sees status.observedGeneration reach that generation;
- ready: until it sees status.ready with that observedGeneration (both systems write the
  status once per change, after the ConfigMap update, so the two usually agree).

kopf runs its synchronous handlers on its default thread pool (min(32, CPUs + 4) threads)
unless ``--kopf-threads`` is given; the size it ran with is printed after the table.

Reports p50, p99 and max of each, the rate actually achieved, and changes whose status never
came (missing, after ``--timeout`` seconds).

    python bench/latency.py [--parents 5000] [--rate 50] [--seconds 30]
                            [--systems operatord kopf] [--workers 2] [--in-flight 16]
                            [--kopf-threads N]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    Http,
    Kopf,
    Operatord,
    ProcTree,
    WidgetWatch,
    change_spec,
    create_widgets,
    kopf_pool_line,
    load_average,
    machine,
    machine_line,
    new_api,
    wait,
    wait_idle,
    widget_name,
)


class Recorder:
    """When each (Widget, generation) was changed, and when its status was first seen."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sent: dict[tuple[str, int], float] = {}
        self.status_seen: dict[tuple[str, int], float] = {}
        self.ready_seen: dict[tuple[str, int], float] = {}

    def event(self, name: str, generation: int, observed: int | None, ready: bool, t: float):
        if observed is None:
            return
        key = (name, observed)
        with self._lock:
            self.status_seen.setdefault(key, t)
            if ready and observed == generation:
                self.ready_seen.setdefault(key, t)

    def changed(self, name: str, generation: int, t: float) -> None:
        with self._lock:
            self.sent[(name, generation)] = t

    def complete(self) -> bool:
        with self._lock:
            return all(k in self.ready_seen for k in self.sent)

    def latencies(self, seen: dict) -> tuple[list[float], int]:
        with self._lock:
            out = sorted(seen[k] - t for k, t in self.sent.items() if k in seen)
            return out, len(self.sent) - len(out)


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not sorted_values:
        return None
    return sorted_values[max(0, math.ceil(p / 100 * len(sorted_values)) - 1)]


def run(make, args: argparse.Namespace) -> dict[str, Any]:
    api = new_api(args.parents)
    http_ = Http(api.port, args.client_threads)
    rec = Recorder()
    watch = WidgetWatch(api.port, on_event=rec.event).start()
    system = make(api)
    row: dict[str, Any] = {"system": system.label, "parents": args.parents}
    try:
        api.clear_requests()
        tree = ProcTree(system.start())
        system.wait_ready()
        if getattr(system, "pool_size", None):
            row["kopf_threads"] = system.pool_size
        watch.expect(1, args.parents)
        create_widgets(http_, args.parents)
        wait(lambda: watch.done_at is not None, args.timeout, "converge", 0.05)
        wait_idle(tree, args.timeout)  # steady state: converge's leftovers are done
        tree.stop()

        changes = int(args.rate * args.seconds)
        t0 = t_last = time.monotonic()
        for k in range(changes):
            due = t0 + k / args.rate
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)  # pacing the steady rate
            i = k % args.parents
            t_last = time.monotonic()
            w = change_spec(http_, i, 100 + k)
            rec.changed(widget_name(i), w["metadata"]["generation"], time.monotonic())
        try:
            wait(rec.complete, args.timeout, "every change's status", 0.05)
        except AssertionError as exc:
            print(f"  {system.label}: {exc}", file=sys.stderr)
        row["changes"] = changes
        row["rate"] = (changes - 1) / (t_last - t0) if t_last > t0 else None
        for what, seen in (("status", rec.status_seen), ("ready", rec.ready_seen)):
            values, missing = rec.latencies(seen)
            row[f"{what}_p50_ms"] = _ms(percentile(values, 50))
            row[f"{what}_p99_ms"] = _ms(percentile(values, 99))
            row[f"{what}_max_ms"] = _ms(values[-1] if values else None)
            row[f"{what}_missing"] = missing
        row["missing"] = row["ready_missing"]
    except BaseException:
        print(system.output()[-3000:], file=sys.stderr)
        raise
    finally:
        system.stop()
        watch.stop()
        http_.close()
        api.stop()
    return row


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


COLUMNS = [
    ("system", "system"),
    ("parents", "parents"),
    ("changes", "changes"),
    ("rate", "rate (/s)"),
    ("status_p50_ms", "status p50 (ms)"),
    ("status_p99_ms", "status p99 (ms)"),
    ("status_max_ms", "status max (ms)"),
    ("ready_p50_ms", "ready p50 (ms)"),
    ("ready_p99_ms", "ready p99 (ms)"),
    ("ready_max_ms", "ready max (ms)"),
    ("missing", "missing"),
]


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "—"
    if key == "rate":
        return f"{value:.1f}"
    if isinstance(value, float):
        return f"{value:.0f}"
    return str(value)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parents", type=int, default=5000)
    ap.add_argument("--rate", type=float, default=50.0, help="spec changes per second")
    ap.add_argument("--seconds", type=float, default=30.0, help="how long changes are made")
    ap.add_argument(
        "--systems", nargs="+", choices=["operatord", "kopf"], default=["operatord", "kopf"]
    )
    ap.add_argument("--workers", type=int, default=2, help="operatord worker processes")
    ap.add_argument(
        "--in-flight",
        type=int,
        default=None,
        help="operatord's inFlightPerWorker (passed only when given)",
    )
    ap.add_argument(
        "--kopf-threads",
        type=int,
        default=None,
        help="kopf's thread pool for sync handlers (default: kopf's, min(32, CPUs + 4))",
    )
    ap.add_argument("--client-threads", type=int, default=32, help="benchmark's HTTP threads")
    ap.add_argument("--timeout", type=float, default=600, help="deadline per phase (s)")
    ap.add_argument("--json", help="also write the rows as JSON to this file")
    args = ap.parse_args()

    print(
        f"# change -> status latency: {args.parents} parents, {args.rate:g} changes/s for "
        f"{args.seconds:g} s, no added latency — {machine_line()}\n"
    )
    print("| " + " | ".join(t for _, t in COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS), flush=True)
    makers = {
        "operatord": lambda api: Operatord(api, workers=args.workers, in_flight=args.in_flight),
        "kopf": lambda api: Kopf(api, threads=args.kopf_threads),
    }
    rows = []
    for name in args.systems:
        row = run(makers[name], args)
        rows.append(row)
        print("| " + " | ".join(_cell(k, row.get(k)) for k, _ in COLUMNS) + " |", flush=True)
    pool = kopf_pool_line(rows)
    if pool:
        print(f"\n{pool}")
    print(f"\nload average at the end: {load_average()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))
    return 1 if any(r.get("missing") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
