"""Ready/Reconciling/Stalled maintained by `operatord run`: kubectl wait, a failing handler
that stalls and recovers, Reconciling while children still change, a handler owning Ready."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

from kubernetes import client, watch

from operatord.testing import wait_for

KUBECTL = shutil.which("kubectl")


def widgets(kube):
    return client.CustomObjectsApi(kube)


def create(kube, ns: str, name: str, spec: dict) -> dict:
    return widgets(kube).create_namespaced_custom_object(
        "example.com",
        "v1",
        ns,
        "widgets",
        {
            "apiVersion": "example.com/v1",
            "kind": "Widget",
            "metadata": {"name": name},
            "spec": spec,
        },
    )


def get(kube, ns: str, name: str) -> dict:
    return widgets(kube).get_namespaced_custom_object("example.com", "v1", ns, "widgets", name)


def patch_spec(kube, ns: str, name: str, spec: dict) -> dict:
    return widgets(kube).patch_namespaced_custom_object(
        "example.com", "v1", ns, "widgets", name, {"spec": spec}
    )


def cond(obj: dict, type_: str) -> dict:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return c
    return {}


def test_kubectl_wait_for_ready_on_a_new_parent(api, kube, operator, ns):
    operator(namespace=ns)
    create(kube, ns, "x", {"size": 2})
    if KUBECTL is not None:
        env = dict(os.environ, KUBECONFIG=api.kubeconfig)
        done = subprocess.run(
            [KUBECTL, "wait", "--for=condition=Ready", "widget/x", "-n", ns, "--timeout=60s"],
            capture_output=True,
            text=True,
            env=env,
            timeout=90,
        )
        assert done.returncode == 0, done.stderr
        assert "condition met" in done.stdout
    wait_for(lambda: cond(get(kube, ns, "x"), "Ready").get("status") == "True", 30)
    x = get(kube, ns, "x")
    assert x["status"]["ready"] is True  # the handler's status, with the conditions merged in
    assert x["status"]["observedGeneration"] == x["metadata"]["generation"]
    assert {c["type"]: c["status"] for c in x["status"]["conditions"]} == {
        "Ready": "True",
        "Reconciling": "False",
        "Stalled": "False",
    }


def test_a_raising_handler_fails_then_stalls_then_recovers(kube, operator, ns):
    operator(namespace=ns)
    create(kube, ns, "bad", {"fail": True})
    wait_for(lambda: cond(get(kube, ns, "bad"), "Ready").get("status") == "False", 30)
    stalled = wait_for(
        lambda: (c := cond(get(kube, ns, "bad"), "Stalled")).get("status") == "True" and c, 30
    )
    assert stalled["reason"] == "HandlerError"
    assert "asked to fail (bad)" in stalled["message"]
    bad = get(kube, ns, "bad")
    assert cond(bad, "Ready")["reason"] == "HandlerError"
    assert cond(bad, "Reconciling")["status"] == "False"  # kstatus: Failed, not InProgress
    patch_spec(kube, ns, "bad", {"fail": None})
    wait_for(lambda: cond(get(kube, ns, "bad"), "Ready").get("status") == "True", 30)
    ok = get(kube, ns, "bad")
    assert cond(ok, "Stalled")["status"] == "False"
    assert ok["status"]["observedGeneration"] == ok["metadata"]["generation"] == 2


def test_a_spec_change_shows_reconciling_until_converged(kube, operator, ns):
    operator(namespace=ns, handler="condition_handlers:Steps")
    create(kube, ns, "s", {"steps": 2})
    wait_for(lambda: get(kube, ns, "s").get("status", {}).get("step") == 2, 30)
    wait_for(lambda: cond(get(kube, ns, "s"), "Ready").get("status") == "True", 30)
    seen: list[dict] = []
    w = watch.Watch()
    changed = patch_spec(kube, ns, "s", {"steps": 8})

    def read() -> None:
        try:
            for e in w.stream(
                widgets(kube).list_namespaced_custom_object,
                "example.com",
                "v1",
                ns,
                "widgets",
                resource_version=changed["metadata"]["resourceVersion"],
                timeout_seconds=30,
            ):
                seen.append(e["object"])
                if cond(e["object"], "Ready").get("status") == "True":
                    w.stop()
        except Exception:  # noqa: BLE001 - the stream closing under the reader
            pass

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(40)
    statuses = [
        (o["status"].get("step"), cond(o, "Reconciling").get("status"), cond(o, "Ready")["status"])
        for o in seen
        if (o.get("status") or {}).get("observedGeneration") == 2
    ]
    assert statuses, seen
    assert statuses[-1] == (8, "False", "True")  # converged
    progress = statuses[:-1]
    assert progress and all(r == "True" and ready == "Unknown" for _, r, ready in progress)
    assert [s for s, _, _ in progress] == sorted(s for s, _, _ in progress)


def test_a_handler_that_sets_ready_owns_it(kube, operator, ns):
    operator(namespace=ns, handler="condition_handlers:OwnReady")
    create(kube, ns, "own", {"ready": False})
    got = wait_for(lambda: (c := cond(get(kube, ns, "own"), "Reconciling")) and c, 30)
    assert got["status"] == "False"  # operatord's, next to the handler's own Ready
    ready = cond(get(kube, ns, "own"), "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "WaitingForDNS")
    patch_spec(kube, ns, "own", {"ready": True})
    wait_for(lambda: cond(get(kube, ns, "own"), "Ready").get("reason") == "Checked", 30)


def test_the_config_key_turns_it_off(kube, operator, ns):
    operator(namespace=ns, conditions=False)
    create(kube, ns, "off", {"size": 1})
    wait_for(lambda: (get(kube, ns, "off").get("status") or {}).get("ready") is True, 30)
    assert "conditions" not in get(kube, ns, "off")["status"]


def _writes_per_parent(api, kube, operator, ns: str, conditions: bool) -> tuple[float, float]:
    """API writes per parent made by `run` with the example Widget handler (bench/vs_kopf's
    job): (converge, update wave)."""
    n = 5
    op = operator(
        namespace=ns,
        handler="examples.widgets:Widgets",
        pythonPath=[str(Path(__file__).resolve().parents[2])],
        conditions=conditions,
    )
    op.wait_ready()

    def writes() -> int:
        verbs = ("create", "update", "patch", "delete")
        return len([r for r in api.requests() if r["namespace"] == ns and r["verb"] in verbs])

    def all_ready(generation: int) -> bool:
        items = widgets(kube).list_namespaced_custom_object("example.com", "v1", ns, "widgets")
        return len(items["items"]) == n and all(
            (w.get("status") or {}).get("ready") is True
            and w["status"].get("observedGeneration") == generation
            for w in items["items"]
        )

    api.clear_requests()
    for i in range(n):
        create(kube, ns, f"p{i}", {"size": 1})
    wait_for(lambda: all_ready(1), 30)
    converge = writes() - n  # not the test's own creates
    api.clear_requests()
    for i in range(n):
        patch_spec(kube, ns, f"p{i}", {"size": 2})
    wait_for(lambda: all_ready(2), 30)
    update = writes() - n  # not the test's own spec patches
    op.stop()
    return converge / n, update / n


def test_conditions_cost_no_extra_write_per_parent(api, kube, operator, ns):
    """The vs_kopf job's writes per parent do not move: the conditions ride in the status
    write the handler's status needs anyway."""
    on = _writes_per_parent(api, kube, operator, ns, conditions=True)
    other = f"{ns}-off"
    client.CoreV1Api(kube).create_namespace({"metadata": {"name": other}})
    off = _writes_per_parent(api, kube, operator, other, conditions=False)
    assert on == off == (3.0, 2.0)  # finalizer, ConfigMap create, status; ConfigMap, status
