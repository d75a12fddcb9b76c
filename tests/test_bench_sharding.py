"""Smoke test of bench/sharding.py: a tiny run with 1 and 2 replicas, end to end. It checks that
the benchmark works and that the replicas split the parents, not how fast anything is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(150)
def test_sharding_bench_splits_the_parents_between_replicas(tmp_path):
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [
            sys.executable,
            "bench/sharding.py",
            "--parents",
            "40",
            "--replicas",
            "1,2",
            "--shards",
            "4",
            "--json",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=140,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [r["replicas"] for r in rows] == [1, 2]
    one, two = rows
    assert one["per_replica"][0]["cached_parents"] == 40
    assert sorted(len(r["shards"]) for r in two["per_replica"]) == [2, 2]
    assert sum(r["cached_parents"] for r in two["per_replica"]) == 40
    for row in rows:
        assert row["wall_s"] > 0
        assert all(r["cpu_s"] > 0 and r["peak_rss_mb"] > 0 for r in row["per_replica"])
    assert "| 2 |" in proc.stdout
