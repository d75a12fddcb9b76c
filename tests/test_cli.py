"""The console script's own surface: version, help, usage errors, run with a bad config."""

import subprocess
import sys
from pathlib import Path

import pytest

import operatord

REPO = Path(__file__).resolve().parents[1]


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
    for command in ("run", "check-config", "finalizers", "apiserver", "demo"):
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


# ---- overrides: flag > OPERATORD_* variable > config file > default ----------------------------


def _config(tmp_path, **extra):
    import yaml

    cfg = {
        "name": "flags",
        "handler": "examples.widgets:Widgets",
        "pythonPath": [str(REPO)],
        "parent": {"apiVersion": "example.com/v1", "kind": "Widget"},
        "workers": 3,
        **extra,
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def show(*args, env=None):
    import os

    r = subprocess.run(
        [sys.executable, "-m", "operatord", "check-config", "--show", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("OPERATORD_")},
            **(env or {}),
        },
    )
    return r


def test_show_prints_the_effective_config_with_defaults(tmp_path):
    import yaml

    r = show("--config", str(_config(tmp_path)))
    assert r.returncode == 0, r.stderr
    shown = yaml.safe_load(r.stdout)
    assert shown["workers"] == 3  # from the file
    assert shown["resyncSeconds"] == 600.0  # the default
    assert shown["pythonPath"] == [str(REPO)]


def test_precedence_flag_over_env_over_file(tmp_path):
    import yaml

    path = str(_config(tmp_path, logging={"level": "warning"}))
    env = {"OPERATORD_WORKERS": "5", "OPERATORD_LOG_LEVEL": "error", "OPERATORD_CONFIG": path}
    r = show("--workers", "7", env=env)  # --config from OPERATORD_CONFIG
    assert r.returncode == 0, r.stderr
    shown = yaml.safe_load(r.stdout)
    assert shown["workers"] == 7  # flag beats variable and file
    assert shown["logging"]["level"] == "error"  # variable beats file
    assert "# workers: from --workers" in r.stdout
    assert "# logging.level: from OPERATORD_LOG_LEVEL" in r.stdout


def test_every_override_flag_and_variable(tmp_path):
    import yaml

    path = str(_config(tmp_path))
    flags = [
        "--namespace=team-a",
        "--in-flight-per-worker=4",
        "--log-format=console",
        "--metrics-bind-address=127.0.0.1:9100",
        "--health-probe-bind-address=:9101",
        "--leader-elect=false",
        "--controller-runtime-metrics=true",
    ]
    shown = yaml.safe_load(show("--config", path, *flags).stdout)
    assert shown["namespace"] == "team-a"
    assert shown["inFlightPerWorker"] == 4
    assert shown["logging"]["format"] == "console"
    assert shown["metrics"] == {"port": 9100, "address": "127.0.0.1", "controllerRuntime": True}
    assert shown["health"] == {"port": 9101, "address": "", "watchSilenceSeconds": 10.0}
    assert shown["leaderElection"]["enabled"] is False
    env = {
        "OPERATORD_NAMESPACE": "team-b",
        "OPERATORD_METRICS_BIND_ADDRESS": "0",
        "OPERATORD_LEADER_ELECT": "no",
    }
    shown = yaml.safe_load(show("--config", path, env=env).stdout)
    assert shown["namespace"] == "team-b"
    assert shown["metrics"]["port"] == 0
    assert shown["leaderElection"]["enabled"] is False


@pytest.mark.parametrize(
    "args, env, message",
    [
        (["--workers", "many"], {}, "error: --workers: must be an integer, got 'many'"),
        (
            [],
            {"OPERATORD_WORKERS": "0"},
            "error: OPERATORD_WORKERS: workers: must be an integer >= 1",
        ),
        (["--leader-elect", "maybe"], {}, "error: --leader-elect: must be true or false"),
        (["--log-level", "loud"], {}, "error: --log-level: logging.level: must be one of"),
        (
            ["--metrics-bind-address", "x:y"],
            {},
            "error: --metrics-bind-address: must be [HOST]:PORT",
        ),
    ],
)
def test_a_bad_override_names_its_flag_or_variable(tmp_path, args, env, message):
    r = show("--config", str(_config(tmp_path)), *args, env=env)
    assert r.returncode == 1
    assert r.stderr.startswith(message), r.stderr


def test_run_without_a_config_is_a_usage_error():
    r = run("run")
    assert r.returncode == 2
    assert "--config (or OPERATORD_CONFIG) is required" in r.stderr


def test_handler_import_does_not_depend_on_the_current_directory(tmp_path):
    import yaml

    # examples/ is importable from the repository root only because `python -m` puts the
    # current directory on sys.path; operatord must not rely on that.
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "cwd",
                "handler": "examples.widgets:Widgets",
                "parent": {"apiVersion": "example.com/v1", "kind": "Widget"},
            }
        )
    )
    r = subprocess.run(
        [sys.executable, "-m", "operatord", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert r.returncode == 1, r.stdout
    assert "examples" in r.stderr


def test_log_level_and_format_flags_take_any_case(tmp_path):
    import yaml

    path = str(_config(tmp_path))
    r = show("--config", path, "--log-level", "DEBUG", env={"OPERATORD_LOG_FORMAT": "Json"})
    assert r.returncode == 0, r.stderr
    shown = yaml.safe_load(r.stdout)
    assert shown["logging"] == {"format": "json", "level": "debug"}
    bad = show("--config", path, "--log-level", "LOUD")
    assert bad.returncode == 1 and "--log-level: logging.level: must be one of" in bad.stderr
