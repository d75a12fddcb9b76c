"""`operatord demo` (what `make demo` runs) completes on its own and shows each step."""

import subprocess
import sys


def test_demo_runs_to_completion():
    proc = subprocess.run(
        [sys.executable, "-m", "operatord", "demo", "--parents", "8", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "8 widgets ready" in out
    assert "8 ConfigMaps owned by them" in out
    assert "finalized   [##############################] 3/3" in out
    assert "operatord_syncs_total{controller=widget-operator,result=ok}" in out
    assert "operatord_workers_alive{controller=widget-operator} = 2" in out
    assert "exited with status 0; demo complete" in out
