"""Uninstall: parents blocked on the finalizer of an operator that is gone, the gauge the
stuck-deletion alert reads, and `operatord finalizers` listing and releasing them."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

from conftest import REPO, wait_for
from kubernetes import client
from widgets import GROUP, PLURAL, VERSION, create_widget, get_widget

FINALIZER = "operatord.io/e2e"


def delete_widget(kube, ns, name) -> None:
    client.CustomObjectsApi(kube).delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)


def finalizers(kube, ns, name) -> list[str] | None:
    obj = get_widget(kube, ns, name)
    return None if obj is None else obj["metadata"].get("finalizers") or []


def cli(op, *args: str, config: bool = True) -> subprocess.CompletedProcess:
    """`operatord finalizers ARGS` (with ``--config`` of ``op`` unless ``config`` is False)."""
    head = ["--config", str(op.config_path)] if config else []
    return subprocess.run(
        [sys.executable, "-m", "operatord", "finalizers", *head, *args],
        env={**os.environ, "OPERATORD_KUBECONFIG": op.api.kubeconfig},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_gauge_shows_a_deletion_that_waits_on_finalize(operator, kube, ns):
    op = operator(namespace=ns)
    create_widget(kube, ns, "held", size=1, holdFinalizer=True, finalizeRetryAfter=60)
    wait_for(lambda: finalizers(kube, ns, "held") == [FINALIZER], 30, message="finalizer added")
    assert op.metric("operatord_parents_deleting") == 0
    assert op.metric("operatord_parent_deletion_max_age_seconds") == 0
    delete_widget(kube, ns, "held")
    wait_for(lambda: op.metric("operatord_parents_deleting") == 1, 30, message="deleting: 1")
    wait_for(
        lambda: op.metric("operatord_parent_deletion_max_age_seconds") >= 1.0,
        30,
        message="the deletion ages",
    )


def test_finalizers_lists_then_removes_only_the_blocked_parents_of_a_gone_operator(
    operator, kube, ns
):
    op = operator(namespace=ns)
    for name in ("early", "late", "live"):
        create_widget(kube, ns, name, size=1, holdFinalizer=True, finalizeRetryAfter=60)
    for name in ("early", "late", "live"):
        wait_for(lambda n=name: finalizers(kube, ns, n) == [FINALIZER], 30, message=name)
    delete_widget(kube, ns, "early")  # finalize keeps it (finalized=False)
    wait_for(lambda: op.calls("early", "finalize"), 30, message="finalize ran")
    assert op.stop() == 0  # the operator is uninstalled
    # another controller's finalizer on "late" must survive the release
    client.CustomObjectsApi(kube).patch_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, "late", {"metadata": {"finalizers": [FINALIZER, "x.io/other"]}}
    )
    delete_widget(kube, ns, "late")  # nobody is left to finalize it

    listed = cli(op)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0] == f"2 Widget (example.com/v1) being deleted and blocked on {FINALIZER}"
    assert {ln.split()[0] for ln in lines[1:3]} == {f"{ns}/early", f"{ns}/late"}
    assert all("deleted at" in ln for ln in lines[1:3])
    assert "--remove" in lines[3] and "NOT run" in lines[3]
    assert finalizers(kube, ns, "early") == [FINALIZER]  # listing writes nothing

    everything = cli(op, "--all")
    assert everything.stdout.splitlines()[0].startswith("3 Widget (example.com/v1) carrying")
    assert f"{ns}/live  live" in everything.stdout

    removed = cli(op, "--remove")
    assert removed.returncode == 0, removed.stderr
    assert f"removed {FINALIZER} from Widget {ns}/early: its finalize did not run" in removed.stdout
    assert f"removed {FINALIZER} from Widget {ns}/late: its finalize did not run" in removed.stdout
    wait_for(lambda: get_widget(kube, ns, "early") is None, 10, message="early is gone")
    assert finalizers(kube, ns, "late") == ["x.io/other"]  # only ours was removed
    assert finalizers(kube, ns, "live") == [FINALIZER]  # not being deleted: untouched
    assert cli(op).stdout.splitlines()[0].startswith("0 Widget")


def test_finalizers_reports_a_missing_config_file(tmp_path, api):
    missing = subprocess.run(
        [sys.executable, "-m", "operatord", "finalizers", "--config", str(tmp_path / "nope")],
        env={**os.environ, "OPERATORD_KUBECONFIG": api.kubeconfig},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2 and missing.stderr.startswith("error:")


def deploy_md_commands() -> list[list[str]]:
    """The `operatord finalizers` lines of the Uninstall block of docs/deploy.md."""
    text = (REPO / "docs" / "deploy.md").read_text()
    section = text.split("## 7. Uninstall", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [
        shlex.split(line.split("#", 1)[0])
        for line in block.splitlines()
        if line.startswith("operatord finalizers")
    ]


def test_the_uninstall_commands_of_deploy_md_do_what_it_says(operator, kube, ns):
    commands = deploy_md_commands()
    assert [c[-1] for c in commands] == ["config.yaml", "--all", "--remove"]
    op = operator(namespace=ns)
    create_widget(kube, ns, "orphan", size=1)
    create_widget(kube, ns, "kept", size=1)
    for name in ("orphan", "kept"):
        wait_for(lambda n=name: finalizers(kube, ns, n) == [FINALIZER], 30, message=name)
    assert op.stop() == 0
    delete_widget(kube, ns, "orphan")
    outputs = []
    for argv in commands:
        argv = [str(op.config_path) if a == "config.yaml" else a for a in argv]
        assert argv[:2] == ["operatord", "finalizers"]
        done = cli(op, *argv[2:], config=False)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    assert f"{ns}/orphan" in outputs[0] and f"{ns}/kept" not in outputs[0]
    assert f"{ns}/orphan" in outputs[1] and f"{ns}/kept  live" in outputs[1]
    assert "its finalize did not run" in outputs[2]
    wait_for(lambda: get_widget(kube, ns, "orphan") is None, 10, message="orphan is gone")
    assert finalizers(kube, ns, "kept") == [FINALIZER]
