"""Smoke tests of the comparison benchmarks (bench/vs_kopf.py, bench/latency.py): tiny runs,
end to end, both systems. They check that the benchmarks work, not how fast anything is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

pytest.importorskip("kopf")


def _run(args: list[str], tmp_path: Path, timeout: float) -> tuple[str, dict]:
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, *args, "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout, json.loads(out.read_text())


@pytest.mark.timeout(120)
def test_vs_kopf_runs_both_systems_and_the_floor(tmp_path):
    stdout, result = _run(
        ["bench/vs_kopf.py", "--parents", "20", "--scenarios", "none"], tmp_path, 110
    )
    systems = [r["system"] for r in result["rows"]]
    assert systems == ["raw-write floor (2x8 HTTP)", "operatord (workers=2)", "kopf"]
    for row in result["rows"]:
        assert row["missing"] == 0, row
        assert row["converge_s"] > 0 and row["update_s"] > 0, row
        assert row["conflicts"] == 0, row
    floor, operatord, kopf = result["rows"]
    assert floor["writes"] == 20 * 5  # 3 writes per create, 2 per update
    for row in (operatord, kopf):
        assert row["restart_writes"] == 0, row
        assert row["restart_s"] > 0 and row["cpu_s"] > 0 and row["rss_mb"] > 0, row
        assert row["restart_cpu_s"] > 0, row
        assert 0 < row["pss_mb"] <= row["rss_mb"], row
    assert kopf["restart_calls"] == 20  # one resume handler call per Widget
    assert operatord["restart_calls"] == 0  # skipUnchanged: every Widget was unchanged
    assert kopf["calls"] == 40  # one create and one update handler call per Widget
    # a sync that wrote children runs the handler twice: create and update each write one
    assert operatord["calls"] == 80
    # kopf's default pool for sync handlers, stated next to the results
    assert kopf["kopf_threads"] == min(32, (os.cpu_count() or 1) + 4)
    assert f"thread pool of {kopf['kopf_threads']} threads" in stdout
    assert "| none | operatord (workers=2) |" in stdout
    assert "| none | kopf |" in stdout
    assert "- none: operatord (workers=2)/kopf: converge " in stdout
    assert result["machine"]["kopf"] != "not installed"


@pytest.mark.timeout(120)
def test_resync_skips_unchanged_parents_only_with_skip_unchanged_on(tmp_path):
    stdout, result = _run(
        ["bench/resync.py", "--parents", "20", "--resync", "1", "--window", "3"], tmp_path, 110
    )
    on, off = result["rows"]
    assert (on["mode"], off["mode"]) == ("on", "off")
    assert on["calls"] == 0 and on["syncs"] == 0 and on["writes"] == 0, on
    assert on["skipped"] >= 20, on  # about 20 * 3 / 1 resyncs, all skipped
    assert off["skipped"] == 0 and off["calls"] >= 20, off
    assert on["cpu_s"] >= 0 and off["cores"] > 0, off
    assert "| on | " in stdout and "| off | " in stdout


@pytest.mark.timeout(120)
def test_latency_runs_both_systems(tmp_path):
    stdout, result = _run(
        ["bench/latency.py", "--parents", "20", "--rate", "20", "--seconds", "1"], tmp_path, 110
    )
    assert [r["system"] for r in result["rows"]] == ["operatord (workers=2)", "kopf"]
    for row in result["rows"]:
        assert row["changes"] == 20 and row["missing"] == 0, row
        assert 0 < row["status_p50_ms"] <= row["status_p99_ms"] <= row["status_max_ms"], row
        assert row["status_p50_ms"] <= row["ready_p50_ms"], row
    assert "| kopf | 20 | 20 |" in stdout


def test_percentile_is_nearest_rank():
    from latency import percentile

    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None


def test_ratio_lines_compare_each_operatord_row_with_kopf_and_the_floor():
    from vs_kopf import ratio_lines

    rows = [
        {
            "scenario": "none",
            "system": "raw-write floor (2x8 HTTP)",
            "converge_s": 2.0,
            "update_s": 1.0,
        },
        {"scenario": "none", "system": "operatord (workers=1)", "converge_s": 8.0, "update_s": 6.0},
        {"scenario": "none", "system": "operatord (workers=2)", "converge_s": 4.0, "update_s": 3.0},
        {"scenario": "none", "system": "kopf", "converge_s": 8.0, "update_s": 6.0},
    ]
    lines = ratio_lines(rows)
    assert lines[1].startswith(
        "- none: operatord (workers=2)/kopf: converge 0.50x, update wave 0.50x"
    )
    assert lines[1].endswith("converge 2.00x and update wave 3.00x of the raw-write floor")
    assert lines[2] == (
        "- none: operatord (workers=2) converges 2.00x as fast as operatord (workers=1) "
        "(update wave 2.00x)"
    )


@pytest.mark.timeout(120)
def test_floor_ratio_repeats_floor_and_operatord_and_reports_each_ratio_and_the_median():
    proc = subprocess.run(
        [sys.executable, "bench/floor_ratio.py", "--runs", "2", "--parents", "20"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line.split(" | ") for line in proc.stdout.splitlines() if line[:4] in ("| 1 ", "| 2 ")]
    assert len(rows) == 2
    ratios = []
    for cells in rows:
        floor_s, op_s, ratio = float(cells[1]), float(cells[2]), float(cells[3].rstrip("x"))
        assert floor_s > 0 and op_s > 0 and cells[-1].strip(" |") == "0"  # nothing missing
        # the times are rounded to 10 ms, the ratio to 0.01
        assert (op_s - 0.005) / (floor_s + 0.005) - 0.005 <= ratio
        assert ratio <= (op_s + 0.005) / max(floor_s - 0.005, 1e-9) + 0.005
        ratios.append(ratio)
    median = (ratios[0] + ratios[1]) / 2
    line = next(x for x in proc.stdout.splitlines() if x.startswith("- converge: median "))
    assert float(line.split()[3].rstrip("x")) == pytest.approx(median, abs=0.011)
    assert f"range {min(ratios):.2f}-{max(ratios):.2f}x over 2 runs" in line


def test_kopf_readiness_counts_only_kopfs_own_watch():
    from harness import BENCH_AGENT, KOPF_AGENT, watch_opened

    def entry(agent: str, verb: str = "watch", resource: str = "widgets") -> dict:
        return {"verb": verb, "resource": resource, "userAgent": agent}

    assert not watch_opened([entry(BENCH_AGENT)], KOPF_AGENT)
    assert not watch_opened([entry("kopf/1.45.2", verb="list")], KOPF_AGENT)
    assert not watch_opened([entry("kopf/1.45.2", resource="configmaps")], KOPF_AGENT)
    assert watch_opened([entry(BENCH_AGENT), entry("kopf/1.45.2")], KOPF_AGENT)


def test_the_benchmarks_own_late_watch_does_not_make_kopf_ready():
    """Under added latency the benchmark's watch reaches the server after the audit log was
    cleared for the system's start: it is in the log, and still does not count as kopf's."""
    from harness import BENCH_AGENT, KOPF_AGENT, WidgetWatch, new_api, wait, watch_opened

    api = new_api(10, latency=0.2)
    try:
        api.clear_requests()
        watch = WidgetWatch(api.port).start()  # returns once listed; the watch is still on its way
        try:
            wait(lambda: watch_opened(api.requests(), BENCH_AGENT), 10, "the benchmark's watch")
            assert not watch_opened(api.requests(), KOPF_AGENT)
        finally:
            watch.stop()
    finally:
        api.stop()


def test_repeats_reports_medians_ranges_and_each_runs_ratio():
    from repeats import summarize

    def run(op: float, kopf: float, floor: float, load: str) -> dict:
        rows = [
            {"scenario": "none", "system": "raw-write floor (2x8 HTTP)", "converge_s": floor},
            {"scenario": "none", "system": "operatord (workers=2)", "converge_s": op, "calls": 40},
            {"scenario": "none", "system": "kopf", "converge_s": kopf, "kopf_threads": 6},
        ]
        machine = {"cpus": "2", "model": "x", "python": "3.11", "kopf": "1.45.2"}
        return {
            "machine": machine,
            "parents": 20,
            "load_start": load,
            "load_end": load,
            "rows": rows,
        }

    lines = summarize(
        [run(1.0, 4.0, 0.5, "0.5"), run(3.0, 4.0, 1.0, "4.0"), run(2.0, 5.0, 1.0, "1.0")]
    )
    text = "\n".join(lines)
    # medians with the range; a column that never moves is one number
    assert "| none | operatord (workers=2) | 2.0 (1.0-3.0) |" in text
    assert "| 40 |" in text
    # ratios are per run (0.25, 0.75, 0.40), then their median and range: not 2.0 / 4.0
    assert "converge 0.40x (0.25-0.75x) [0.25 / 0.75 / 0.40]" in text
    assert "of the raw-write floor" in text
    assert "0.5 -> 0.5, 4.0 -> 4.0, 1.0 -> 1.0" in text
    assert "thread pool of 6 threads" in text
