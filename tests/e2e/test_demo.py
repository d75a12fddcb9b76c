"""`operatord demo` (what `make demo` runs) completes on its own and shows each step, from an
installed package: no checkout on the path, the example handler and CRD come from the package."""

import configparser
import fnmatch
import os
import shutil
import subprocess
import sys
from pathlib import Path

import operatord

PACKAGE = Path(operatord.__file__).resolve().parent
ROOT = PACKAGE.parent


def test_demo_runs_to_completion_from_an_installed_package(tmp_path):
    # An install is a plain copy of the package (symbolic links resolved, as a wheel has them)
    # on sys.path; the working directory holds no checkout.
    site = tmp_path / "site"
    shutil.copytree(PACKAGE, site / "operatord", ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run(
        [sys.executable, "-P", "-c", "import operatord.examples.widgets as m; print(m.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        check=True,
    )
    assert where.stdout.startswith(str(site)), where.stdout
    proc = subprocess.run(
        [sys.executable, "-P", "-m", "operatord", "demo", "--parents", "8", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
        env=env,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "8 widgets ready" in out
    assert "8 ConfigMaps owned by them" in out
    assert "finalized   [##############################] 3/3" in out
    assert "operatord_syncs_total{controller=widget-operator,result=ok}" in out
    assert "operatord_workers_alive{controller=widget-operator} = 2" in out
    assert "exited with status 0; demo complete" in out


def test_every_data_file_of_the_package_is_declared_package_data():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    patterns = [p.strip() for p in cfg["options.package_data"]["operatord"].split(",")]
    for path in PACKAGE.rglob("*"):
        rel = path.relative_to(PACKAGE).as_posix()
        if path.is_dir() or "__pycache__" in rel or rel.endswith(".py"):
            continue
        assert any(fnmatch.fnmatch(rel, p) for p in patterns), rel


def test_demo_keep_leaves_the_api_server_and_operator_running_until_ctrl_c(tmp_path):
    import json
    import queue
    import signal
    import threading

    proc = subprocess.Popen(
        [sys.executable, "-m", "operatord", "demo", "--parents", "4", "--keep"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    printed: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(
        target=lambda: [printed.put(ln.rstrip("\n")) for ln in iter(proc.stdout.readline, "")],
        daemon=True,
    )
    reader.start()
    try:
        while not any(ln.startswith("   Ctrl-C stops") for ln in lines):
            try:
                lines.append(printed.get(timeout=180))
            except queue.Empty:
                raise AssertionError("no --keep instructions:\n" + "\n".join(lines)) from None
        text = "\n".join(lines)
        (export,) = [ln.strip() for ln in lines if ln.strip().startswith("export KUBECONFIG=")]
        kubeconfig = export.partition("=")[2]
        assert "kubectl get widgets -n demo" in text
        # the API server answers, with the operator's work in it, after the tour
        kubectl = shutil.which("kubectl")
        if kubectl:
            got = subprocess.run(
                [
                    kubectl,
                    "--cache-dir",
                    str(tmp_path / "kc"),
                    "get",
                    "widgets",
                    "-n",
                    "demo",
                    "-o",
                    "json",
                ],
                env={**os.environ, "KUBECONFIG": kubeconfig},
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert got.returncode == 0, got.stderr
            items = json.loads(got.stdout)["items"]
        else:
            from kubernetes import client, config

            api = client.CustomObjectsApi(config.new_client_from_config(kubeconfig))
            items = api.list_namespaced_custom_object("example.com", "v1", "demo", "widgets")[
                "items"
            ]
        assert len(items) == 2 and all(w["status"]["ready"] for w in items)
        assert proc.poll() is None  # still running
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
        reader.join(10)
        rest = "\n".join(printed.get() for _ in range(printed.qsize()))
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, rest
    assert "exited with status 0; demo complete" in rest
