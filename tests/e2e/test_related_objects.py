"""Related objects end to end: parents react to the Secrets, ConfigMaps and Namespaces their
handler selects, through `operatord run` against the embedded API server (resyncSeconds 0, so
every sync seen here was caused by an event)."""

from __future__ import annotations

import base64
import urllib.request
import uuid

import pytest
from conftest import wait_for
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from related_handlers import digest
from widgets import create_widget, get_widget, patch_spec

SECRET_VALUE = "hunter2-do-not-log-me"


def related_operator(operator, ns=None, related=None, **overrides):
    config = {
        "handler": "related_handlers:Selecting",
        "children": [],
        "related": related
        or [
            {"apiVersion": "v1", "kind": "Secret"},
            {"apiVersion": "v1", "kind": "ConfigMap"},
            {"apiVersion": "v1", "kind": "Namespace", "labelSelector": "team"},
        ],
        **overrides,
    }
    if ns is not None:
        config["namespace"] = ns
    return operator(**config)


def status(kube, ns, name) -> dict:
    return (get_widget(kube, ns, name) or {}).get("status") or {}


def encoded(data: dict) -> dict:
    return {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}


def put_secret(kube, ns, name, data: dict) -> None:
    core = client.CoreV1Api(kube)
    body = {"metadata": {"name": name}, "data": encoded(data), "type": "Opaque"}
    try:
        core.replace_namespaced_secret(name, ns, body)
    except ApiException as exc:
        if exc.status != 404:
            raise
        core.create_namespaced_secret(ns, body)


def put_configmap(kube, ns, name, data: dict) -> None:
    core = client.CoreV1Api(kube)
    body = {"metadata": {"name": name}, "data": data}
    try:
        core.replace_namespaced_config_map(name, ns, body)
    except ApiException as exc:
        if exc.status != 404:
            raise
        core.create_namespaced_config_map(ns, body)


def test_status_follows_its_secret_through_change_deletion_and_recreation(operator, kube, ns):
    op = related_operator(operator, ns, logging={"format": "json", "level": "debug"})
    put_secret(kube, ns, "creds", {"password": SECRET_VALUE})
    create_widget(kube, ns, "w", secret="creds")
    first = encoded({"password": SECRET_VALUE})
    wait_for(lambda: status(kube, ns, "w").get("secret") == digest(first), 30, message="first")

    put_secret(kube, ns, "creds", {"password": "rotated"})
    rotated = encoded({"password": "rotated"})
    wait_for(lambda: status(kube, ns, "w").get("secret") == digest(rotated), 30, message="rotated")

    client.CoreV1Api(kube).delete_namespaced_secret("creds", ns)
    wait_for(lambda: status(kube, ns, "w").get("secret", "") is None, 30, message="deleted")

    put_secret(kube, ns, "creds", {"password": "again"})
    again = encoded({"password": "again"})
    wait_for(lambda: status(kube, ns, "w").get("secret") == digest(again), 30, message="recreated")

    # Secret data reaches the handler (it hashed it) but no log line and no Event.
    out = op.output()
    assert SECRET_VALUE not in out and first["password"] not in out
    events = client.CoreV1Api(kube).list_namespaced_event(ns).items
    assert not [e for e in events if SECRET_VALUE in (e.message or "")]
    assert op.metric("operatord_syncs_total", result="error") == 0
    wait_for(
        lambda: op.metric("operatord_cached_objects", resource="secrets") == 1,
        10,
        message="the Secret counted in operatord_cached_objects",
    )


def test_a_repointed_parent_stops_reacting_to_the_old_secret(operator, kube, ns):
    op = related_operator(operator, ns)
    put_secret(kube, ns, "old", {"v": "old-1"})
    put_secret(kube, ns, "new", {"v": "new-1"})
    create_widget(kube, ns, "w", secret="old")
    create_widget(kube, ns, "probe", secret="old")  # keeps selecting "old"
    old1 = digest(encoded({"v": "old-1"}))
    for name in ("w", "probe"):
        wait_for(lambda name=name: status(kube, ns, name).get("secret") == old1, 30, message=name)

    patch_spec(kube, ns, "w", secret="new")
    new1 = digest(encoded({"v": "new-1"}))
    wait_for(lambda: status(kube, ns, "w").get("secret") == new1, 30, message="w re-pointed")
    syncs = len(op.calls("w"))

    put_secret(kube, ns, "old", {"v": "old-2"})
    old2 = digest(encoded({"v": "old-2"}))
    wait_for(lambda: status(kube, ns, "probe").get("secret") == old2, 30, message="probe synced")
    put_secret(kube, ns, "new", {"v": "new-2"})
    new2 = digest(encoded({"v": "new-2"}))
    wait_for(lambda: status(kube, ns, "w").get("secret") == new2, 30, message="w follows new")
    assert len(op.calls("w")) == syncs + 1  # the change of "new" only, not the one of "old"


def test_namespaces_selected_by_label(operator, kube):
    team = f"t{uuid.uuid4().hex[:6]}"
    home = f"home-{team}"
    core = client.CoreV1Api(kube)
    core.create_namespace({"metadata": {"name": home}})
    op = related_operator(operator, None)
    create_widget(kube, home, "tenant", team=team)
    wait_for(lambda: status(kube, home, "tenant").get("namespaces") == [], 30, message="none yet")

    core.create_namespace({"metadata": {"name": f"{team}-a", "labels": {"team": team}}})
    core.create_namespace({"metadata": {"name": f"{team}-b", "labels": {"team": "other"}}})
    wait_for(
        lambda: status(kube, home, "tenant").get("namespaces") == [f"{team}-a"], 30, message="a"
    )
    core.patch_namespace(f"{team}-b", {"metadata": {"labels": {"team": team}}})
    wait_for(
        lambda: status(kube, home, "tenant").get("namespaces") == [f"{team}-a", f"{team}-b"],
        30,
        message="b relabelled into the team",
    )
    core.patch_namespace(f"{team}-a", {"metadata": {"labels": {"team": "gone"}}})
    wait_for(
        lambda: status(kube, home, "tenant").get("namespaces") == [f"{team}-b"],
        30,
        message="a relabelled out of the team",
    )
    # Only namespaces with a team label are cached (labelSelector: team).
    labelled = [n for n in core.list_namespace().items if "team" in (n.metadata.labels or {})]
    wait_for(
        lambda: op.metric("operatord_cached_objects", resource="namespaces") == len(labelled),
        10,
        message="cached namespaces",
    )
    assert len(labelled) < len(core.list_namespace().items)


def test_200_parents_sharing_a_configmap_resync_once_each(operator, kube, ns):
    op = related_operator(operator, ns, workers=2, inFlightPerWorker=16)
    put_configmap(kube, ns, "shared", {"setting": "one"})
    names = [f"p{i:03d}" for i in range(200)]
    for name in names:
        create_widget(kube, ns, name, configMap="shared")
    for name in names:
        wait_for(lambda n=name: status(kube, ns, n).get("setting") == "one", 60, message=name)
    before = {name: len(op.calls(name)) for name in names}

    put_configmap(kube, ns, "shared", {"setting": "two"})
    for name in names:
        wait_for(lambda n=name: status(kube, ns, n).get("setting") == "two", 60, message=name)
    after = {name: len(op.calls(name)) for name in names}
    assert {name: after[name] - before[name] for name in names} == {name: 1 for name in names}
    assert op.metric("operatord_syncs_total", result="error") == 0


def test_an_undeclared_related_type_fails_only_that_parent(operator, kube, ns):
    op = related_operator(operator, ns)
    put_secret(kube, ns, "s", {"v": "1"})
    create_widget(kube, ns, "bad", secret="s", undeclared=True)
    create_widget(kube, ns, "good", secret="s")
    wait_for(lambda: status(kube, ns, "good").get("secret"), 30, message="good synced")

    def failed_event():
        events = client.CoreV1Api(kube).list_namespaced_event(ns).items
        return [e for e in events if e.involved_object.name == "bad" and e.reason == "SyncFailed"]

    (event,) = wait_for(failed_event, 30, message="SyncFailed event on bad")
    assert "v1/Service, which is not a configured related type" in event.message
    failed = status(kube, ns, "bad")  # no handler status: only the failure's conditions
    assert set(failed) <= {"conditions", "observedGeneration"}
    assert {c["reason"] for c in failed.get("conditions", [])} <= {"InvalidResponse"}
    assert not [
        e
        for e in client.CoreV1Api(kube).list_namespaced_event(ns).items
        if e.involved_object.name == "good"
    ]
    assert op.metric("operatord_syncs_total", result="invalid") >= 1


MARKER = "zebra-marker-7f3a9"  # 18 characters: its base64 is whole (24 characters, no "=")
B64_MARKER = base64.b64encode(MARKER.encode()).decode()


def process_memory_contains(pid: int, needle: bytes) -> bool:
    """Whether any readable writable mapping of process ``pid`` holds ``needle`` (live or
    freed heap alike: this is what a memory dump of the process would show)."""
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            fields = line.split()
            if len(fields) < 2 or not fields[1].startswith("rw"):
                continue
            if len(fields) >= 6 and fields[5] in ("[vvar]", "[vsyscall]"):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            try:
                mem.seek(start)
                chunk = mem.read(end - start)
            except (OSError, ValueError, OverflowError):
                continue
            if needle in chunk:
                return True
    return False


@pytest.mark.parametrize("mode", ["full", "metadata", "none"])
def test_secret_data_reaches_the_leader_only_when_cached_in_full(operator, kube, ns, mode):
    # full is the control: the same scan finds the marker when the leader does hold the data.
    op = related_operator(
        operator,
        ns,
        related=[{"apiVersion": "v1", "kind": "Secret", "cache": mode}],
        logging={"format": "json", "level": "debug"},
        resyncSeconds=1 if mode == "none" else 0,
    )
    for i in range(20):  # unrelated Secrets, cached (or not) like the selected one
        put_secret(kube, ns, f"other-{i}", {"password": MARKER})
    put_secret(kube, ns, "creds", {"password": MARKER})
    create_widget(kube, ns, "w", secret="creds")
    first = digest(encoded({"password": MARKER}))
    wait_for(lambda: status(kube, ns, "w").get("secret") == first, 30, message="first")

    # A data change reaches the handler: at once under full and metadata (the leader's
    # watch still sees it), at the next resync under none.
    put_secret(kube, ns, "creds", {"password": MARKER + "-2"})
    second = digest(encoded({"password": MARKER + "-2"}))
    wait_for(lambda: status(kube, ns, "w").get("secret") == second, 30, message="rotated")

    needles = (MARKER.encode(), B64_MARKER.encode())
    held = any(process_memory_contains(op.proc.pid, n) for n in needles)
    with urllib.request.urlopen(f"http://127.0.0.1:{op.metrics_port}/metrics", timeout=5) as r:
        metrics = r.read().decode()
    out = op.output()
    assert ("secrets" in metrics) is (mode != "none")  # the informer's series, or none
    assert all(n.decode() not in metrics for n in needles)
    assert all(n.decode() not in out for n in needles)  # leader and workers, debug level
    assert held is (mode == "full")
    cached = op.metric("operatord_cached_objects", resource="secrets")
    assert cached == (0 if mode == "none" else 21)
