"""Medians and ranges of repeated bench/vs_kopf.py runs, from the files of their ``--json``.

One run of vs_kopf.py on a shared machine moves by 10-20% (more when someone else's test suite
runs meanwhile), so published figures are the median of several runs with their range:

    for i in 1 2 3; do python bench/vs_kopf.py --json run$i.json; done
    python bench/repeats.py run1.json run2.json run3.json

Prints, per scenario and system, every measured column as ``median (min-max)`` over the runs,
then per operatord row its ratios to kopf and to the raw-write floor: each run's ratio first,
then their median and range (the ratio of one run's numbers, never a ratio of medians), and
the load average each run started and ended with, when the file has it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

COLUMNS = [
    ("converge_s", "converge (s)", 1),
    ("update_s", "update wave (s)", 1),
    ("restart_s", "restart (s)", 1),
    ("restart_cpu_s", "restart CPU (s)", 2),
    ("cpu_s", "CPU (s)", 1),
    ("rss_mb", "peak RSS (MB)", 0),
    ("pss_mb", "peak PSS (MB)", 0),
    ("writes", "API writes", 0),
    ("conflicts", "409s", 0),
    ("restart_writes", "restart writes", 0),
    ("restart_calls", "restart handler calls", 0),
    ("calls", "handler calls", 0),
    ("missing", "missing", 0),
]
RATIOS = [
    ("converge_s", "converge"),
    ("update_s", "update wave"),
    ("restart_s", "restart"),
    ("restart_cpu_s", "restart CPU"),
    ("cpu_s", "CPU"),
    ("pss_mb", "peak PSS"),
]


def spread(values: list[float], digits: int) -> str:
    """``median (min-max)`` of the values, or the one value when they all agree."""
    if not values:
        return "—"
    lo, mid, hi = min(values), statistics.median(values), max(values)
    if round(lo, digits) == round(hi, digits):
        return f"{mid:.{digits}f}"
    return f"{mid:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


def _values(rows: list[dict], key: str) -> list[float]:
    return [r[key] for r in rows if r.get(key) is not None]


def summarize(runs: list[dict]) -> list[str]:
    """The summary's Markdown lines for the loaded JSON results of repeated runs."""
    out = []
    machine = runs[0].get("machine", {})
    out.append(
        f"# {len(runs)} runs of bench/vs_kopf.py, {runs[0].get('parents')} parents — "
        f"{machine.get('cpus')} CPUs ({machine.get('model')}), Python {machine.get('python')}, "
        f"kopf {machine.get('kopf')}"
    )
    loads = [
        f"{r['load_start']} -> {r['load_end']}"
        for r in runs
        if r.get("load_start") is not None and r.get("load_end") is not None
    ]
    if loads:
        out.append(f"load average (1 min) at start -> end of each run: {', '.join(loads)}")
    out.append("")
    out.append("| scenario | system | " + " | ".join(t for _, t, _ in COLUMNS) + " |")
    out.append("|" + "---|" * (len(COLUMNS) + 2))
    keys = dict.fromkeys((r["scenario"], r["system"]) for run in runs for r in run["rows"])
    by_key = {
        k: [r for run in runs for r in run["rows"] if (r["scenario"], r["system"]) == k]
        for k in keys
    }
    for (scenario, system), rows in by_key.items():
        cells = [spread(_values(rows, key), digits) for key, _, digits in COLUMNS]
        out.append(f"| {scenario} | {system} | " + " | ".join(cells) + " |")
    out.append("")
    out.extend(ratio_lines(runs))
    pools = sorted(
        {r["kopf_threads"] for run in runs for r in run["rows"] if r.get("kopf_threads")}
    )
    if pools:
        out.append("")
        out.append(
            f"kopf ran its synchronous handlers on a thread pool of "
            f"{' / '.join(map(str, pools))} threads (settings.execution.max_workers)"
        )
    return out


def ratio_lines(runs: list[dict]) -> list[str]:
    """Per scenario and operatord row: each run's ratio to kopf (and to the floor), then the
    median and range of those ratios."""
    lines = []
    keys = dict.fromkeys(
        (r["scenario"], r["system"])
        for run in runs
        for r in run["rows"]
        if r["system"].startswith("operatord")
    )
    for scenario, system in keys:
        parts = []
        for key, title in RATIOS:
            ratios = _run_ratios(runs, scenario, system, "kopf", key)
            if ratios:
                parts.append(f"{title} {_ratio_text(ratios)}")
        floor = [
            _run_ratios(runs, scenario, system, "raw-write floor", key)
            for key in ("converge_s", "update_s")
        ]
        text = f"- {scenario}: {system}/kopf: " + ", ".join(parts)
        of_floor = [
            f"{title} {_ratio_text(ratios)}"
            for title, ratios in zip(("converge", "update wave"), floor, strict=True)
            if ratios
        ]
        if of_floor:
            text += "; " + " and ".join(of_floor) + " of the raw-write floor"
        lines.append(text)
    return lines


def _run_ratios(runs: list[dict], scenario: str, system: str, other: str, key: str) -> list:
    out = []
    for run in runs:
        rows = [r for r in run["rows"] if r["scenario"] == scenario]
        mine = next((r for r in rows if r["system"] == system), None)
        theirs = next((r for r in rows if r["system"].startswith(other)), None)
        if mine and theirs and mine.get(key) and theirs.get(key):
            out.append(mine[key] / theirs[key])
    return out


def _ratio_text(ratios: list[float]) -> str:
    """``0.40x (0.25-0.75x) [0.25 / 0.75 / 0.40]``: median, range, then each run's ratio."""
    each = " / ".join(f"{r:.2f}" for r in ratios)
    lo, mid, hi = min(ratios), statistics.median(ratios), max(ratios)
    if f"{lo:.2f}" == f"{hi:.2f}":
        return f"{mid:.2f}x [{each}]"
    return f"{mid:.2f}x ({lo:.2f}-{hi:.2f}x) [{each}]"


def load(paths: list[str]) -> list[dict[str, Any]]:
    return [json.loads(Path(p).read_text()) for p in paths]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", help="--json files of bench/vs_kopf.py runs")
    args = ap.parse_args()
    for line in summarize(load(args.files)):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
