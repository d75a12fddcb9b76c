"""operatord diff's pieces without processes: folding one task's dry-run writes into one change
per object, and a dry-run connection that adds dryRun=All to every write."""

from __future__ import annotations

import dataclasses

from operatord.diff import Change, Report, changes_of
from operatord.kube import ClientSettings, Connection, Kube
from operatord.testing import ApiServer

PARENT = {
    "apiVersion": "example.com/v1",
    "kind": "Widget",
    "metadata": {"name": "w", "namespace": "ns", "uid": "u", "resourceVersion": "5"},
    "status": {"ready": True},
}


def write(op: str, kind: str, name: str, live: dict | None, answer: dict | None) -> dict:
    api = "example.com/v1" if kind == "Widget" else "v1"
    return {
        "operation": op,
        "apiVersion": api,
        "kind": kind,
        "namespace": "ns",
        "name": name,
        "live": live,
        "answer": answer,
    }


def cm(name: str, data: dict, rv: str = "1", uid: str = "c") -> dict:
    meta = {"name": name, "namespace": "ns", "resourceVersion": rv, "uid": uid}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def test_status_and_finalizer_writes_fold_into_one_change_of_the_parent():
    with_fin = {**PARENT, "metadata": {**PARENT["metadata"], "finalizers": ["operatord.io/x"]}}
    with_status = {**PARENT, "status": {"ready": False}}
    (change,) = changes_of(
        PARENT,
        [
            write("finalizer", "Widget", "w", PARENT, with_fin),
            write("status", "Widget", "w", with_fin, with_status),  # answered without it
        ],
    )
    assert change.operations == ["finalizer", "status"]
    assert change.desired["metadata"]["finalizers"] == ["operatord.io/x"]
    assert change.desired["status"] == {"ready": False}
    assert "resourceVersion" not in change.desired["metadata"]  # server noise removed
    assert change.path == "example.com.v1.Widget.ns.w" and change.parent == "ns/w"
    text = change.text()
    assert text.startswith("--- live/example.com.v1.Widget.ns.w\n+++ desired/")
    assert "-  ready: true\n+  ready: false\n" in text


def test_create_update_delete_and_no_ops():
    created = cm("new", {"k": "v"}, rv="", uid="fresh")
    old, new = cm("a", {"k": "1"}), cm("a", {"k": "2"})
    gone = cm("b", {"k": "b"})
    changes = changes_of(
        PARENT,
        [
            write("create", "ConfigMap", "new", None, created),
            write("update", "ConfigMap", "a", old, new),
            write("delete", "ConfigMap", "b", gone, None),
            write("create", "ConfigMap", "tmp", None, cm("tmp", {})),  # created and deleted
            write("delete", "ConfigMap", "tmp", cm("tmp", {}), None),
            write("update", "ConfigMap", "same", cm("same", {"k": "1"}), cm("same", {"k": "1"})),
        ],
    )
    by_name = {c.name: c for c in changes}
    assert set(by_name) == {"new", "a", "b"}
    assert by_name["new"].live is None and by_name["new"].desired["data"] == {"k": "v"}
    assert by_name["b"].desired is None
    assert "+  k: '2'" in by_name["a"].text() and "-  k: '1'" in by_name["a"].text()
    assert all(line[0] in "-@" for line in by_name["b"].text().splitlines()[2:])


def test_exit_codes():
    assert Report().exit_code == 0
    change = Change("ns/w", "v1", "ConfigMap", "ns", "a", ["update"], {}, {"data": {}})
    assert Report(changes=[change]).exit_code == 1
    assert Report(changes=[change], errors=[("ns/w", "boom")]).exit_code == 2


def test_a_dry_run_connection_writes_nothing():
    with ApiServer() as api:
        real = Kube(ClientSettings(kubeconfig=api.kubeconfig))
        dry = Kube(dataclasses.replace(real.connection(), dry_run=True))
        res = real.resource("v1", "ConfigMap")
        answer = dry.create(res, {"metadata": {"name": "x"}, "data": {"k": "v"}}, "default")
        assert answer["metadata"]["name"] == "x"
        real.create(res, {"metadata": {"name": "y"}, "data": {"k": "1"}}, "default")
        dry.patch(res, "y", {"data": {"k": "2"}}, "default")
        dry.delete(res, "y", "default")
        items, _ = real.list(res, "default")
        assert [(i["metadata"]["name"], i["data"]) for i in items] == [("y", {"k": "1"})]
        writes = [r for r in api.requests() if r["verb"] in ("create", "patch", "delete")]
        assert [r["dryRun"] for r in writes] == [True, False, True, True]
        assert Connection.from_dict(dry.connection().to_dict()).dry_run
