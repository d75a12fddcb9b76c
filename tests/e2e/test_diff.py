"""`operatord diff` end to end: Widgets converged by `run` with handler v1; `diff` with v2
prints exactly v2's changes (exit 1) through dry-run writes only; with v1 it prints nothing
(exit 0); a handler failing for one parent is reported while the others are diffed (exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml
from kubernetes import client

from operatord.testing import wait_for

NAMES = ("w1", "w2", "w3")
WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")


def converge_with_v1(api, kube, operator, ns: str) -> Path:
    """Widgets converged by `operatord run` with handler v1, the daemon stopped; returns its
    config file."""
    custom = client.CustomObjectsApi(kube)
    for name in NAMES:
        custom.create_namespaced_custom_object(
            "example.com",
            "v1",
            ns,
            "widgets",
            {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": name}},
        )
    op = operator(namespace=ns, handler="diff_handlers:V1")

    def converged() -> bool:
        items = custom.list_namespaced_custom_object("example.com", "v1", ns, "widgets")["items"]
        cms = client.CoreV1Api(kube).list_namespaced_config_map(ns).items
        ready = [
            w
            for w in items
            if (w.get("status") or {}).get("version") == "v1"
            and any(
                c["type"] == "Ready" and c["status"] == "True" for c in w["status"]["conditions"]
            )
        ]
        return len(ready) == len(NAMES) and len(cms) >= 2 * len(NAMES)

    wait_for(converged, 60, message="widgets converged by v1")
    assert op.stop() == 0
    return op.config_path


def diff(api, config_path: Path, handler: str, *args: str) -> subprocess.CompletedProcess:
    config = yaml.safe_load(config_path.read_text())
    config["handler"] = handler
    path = config_path.with_name(f"diff-{handler.replace(':', '-')}.yaml")
    path.write_text(yaml.safe_dump(config))
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "operatord",
            "diff",
            "--config",
            str(path),
            "--kubeconfig",
            api.kubeconfig,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def versions(kube, ns: str) -> dict[str, str]:
    custom = client.CustomObjectsApi(kube)
    out = {
        f"Widget/{w['metadata']['name']}": w["metadata"]["resourceVersion"]
        for w in custom.list_namespaced_custom_object("example.com", "v1", ns, "widgets")["items"]
    }
    for cm in client.CoreV1Api(kube).list_namespaced_config_map(ns).items:
        out[f"ConfigMap/{cm.metadata.name}"] = cm.metadata.resource_version
    return out


def per_object(text: str) -> dict[str, list[str]]:
    """desired/<path> -> the changed lines (+/-) of its diff."""
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("+++ "):
            current = line[4:]
            out[current] = []
        elif line.startswith("--- ") or line.startswith("@@") or current is None:
            continue
        elif line[:1] in "+-":
            out[current].append(line)
    return out


def test_diff_shows_exactly_what_v2_would_write_and_writes_nothing(api, kube, operator, ns):
    config_path = converge_with_v1(api, kube, operator, ns)
    before = versions(kube, ns)
    rv_before = api.state()["resourceVersion"]
    api.clear_requests()

    done = diff(api, config_path, "diff_handlers:V2")
    assert done.returncode == 1, done.stderr
    changes = per_object(done.stdout)
    expected = {}
    for n in NAMES:
        expected[f"desired/v1.ConfigMap.{ns}.{n}-a"] = ["+  k2: two"]
        expected[f"desired/example.com.v1.Widget.{ns}.{n}"] = ["-  version: v1", "+  version: v2"]
    assert {k: v for k, v in changes.items() if not k.endswith("-b")} == expected
    for n in NAMES:  # the dropped child: every line removed, nothing added
        dropped = changes[f"desired/v1.ConfigMap.{ns}.{n}-b"]
        assert "-  k: b" in dropped and all(line.startswith("-") for line in dropped)
    assert len(changes) == 3 * len(NAMES)
    assert "9 objects would change in 3 of 3 parents" in done.stderr
    assert "3 delete, 3 status, 3 update" in done.stderr

    writes = [r for r in api.requests() if r["verb"] in WRITE_VERBS]
    assert len(writes) == 9 and all(r["dryRun"] is True for r in writes), writes
    assert versions(kube, ns) == before
    assert api.state()["resourceVersion"] == rv_before

    same = diff(api, config_path, "diff_handlers:V1")
    assert (same.returncode, same.stdout) == (0, ""), same.stderr
    assert "0 objects would change in 0 of 3 parents" in same.stderr

    plan = diff(api, config_path, "diff_handlers:V2", "-o", "json", "--parent", f"{ns}/w2")
    assert plan.returncode == 1, plan.stderr
    doc = json.loads(plan.stdout)
    assert {(c["kind"], c["name"], tuple(c["operations"])) for c in doc["changes"]} == {
        ("ConfigMap", "w2-a", ("update",)),
        ("ConfigMap", "w2-b", ("delete",)),
        ("Widget", "w2", ("status",)),
    }
    status = next(c for c in doc["changes"] if c["kind"] == "Widget")
    assert status["desired"]["status"]["version"] == "v2"
    assert status["live"]["status"]["version"] == "v1"
    assert doc["summary"]["parents"] == 1 and doc["errors"] == []
    assert versions(kube, ns) == before


def test_a_failing_parent_is_reported_and_the_rest_diffed(api, kube, operator, ns):
    config_path = converge_with_v1(api, kube, operator, ns)
    before = versions(kube, ns)
    done = diff(api, config_path, "diff_handlers:V2Broken")
    assert done.returncode == 2, done.stderr
    assert f"error: {ns}/w1: RuntimeError: v2 cannot handle w1" in done.stderr
    changed = {path.rsplit(".", 1)[-1] for path in per_object(done.stdout)}
    assert changed == {"w2-a", "w2-b", "w2", "w3-a", "w3-b", "w3"}
    assert versions(kube, ns) == before  # the failure's conditions were not written either
