"""The console script's own surface: version, help, usage errors, run with a bad config."""

import subprocess
import sys

import operatord


def run(*args):
    return subprocess.run(
        [sys.executable, "-m", "operatord", *args], capture_output=True, text=True, timeout=60
    )


def test_version():
    r = run("--version")
    assert r.returncode == 0
    assert r.stdout.strip() == f"operatord {operatord.__version__}"


def test_help_lists_every_command():
    r = run("--help")
    assert r.returncode == 0
    for command in ("run", "check-config", "apiserver", "demo"):
        assert command in r.stdout


def test_missing_command_is_a_usage_error():
    assert run().returncode == 2


def test_run_rejects_a_bad_config_before_touching_the_cluster(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: x\nhandler: m:h\nparent: {apiVersion: v1, kind: ConfigMap}\nworkerz: 1\n")
    r = run("run", "--config", str(cfg), "--kubeconfig", str(tmp_path / "none"))
    assert r.returncode == 1
    assert "workerz: unknown key" in r.stderr


def test_run_names_a_handler_that_cannot_be_imported(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "name: x\nhandler: no_such_module:H\nparent: {apiVersion: v1, kind: ConfigMap}\n"
    )
    r = run("run", "--config", str(cfg))
    assert r.returncode == 1
    assert "no_such_module:H" in r.stderr
