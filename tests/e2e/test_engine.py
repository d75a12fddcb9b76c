"""End to end: `operatord run` against the embedded API server, through the official client."""

from __future__ import annotations

import json
import os
import signal

import pytest
from conftest import wait_for
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from widgets import (
    GROUP,
    PLURAL,
    VERSION,
    configmap,
    create_widget,
    custom,
    delete_widget,
    get_widget,
    patch_spec,
    ready,
)

from operatord.controller import MAX_WRITE_STREAK
from operatord.worker import MAX_RUNS


def test_parent_gets_children_status_finalizer_labels_and_owner(operator, kube, ns):
    operator(namespace=ns)
    create_widget(kube, ns, "w1", size=3)
    wait_for(lambda: ready(kube, ns, "w1"), 30, message="w1 ready")
    w = get_widget(kube, ns, "w1")
    assert w["metadata"]["finalizers"] == ["operatord.io/e2e"]
    assert w["status"]["children"] == 1
    cm = configmap(kube, ns, "w1")
    assert cm.data == {"size": "3"}
    assert cm.metadata.labels["operatord.io/parent-uid"] == w["metadata"]["uid"]
    assert cm.metadata.labels["app.kubernetes.io/managed-by"] == "e2e"
    (ref,) = cm.metadata.owner_references
    assert (ref.kind, ref.name, ref.uid, ref.controller) == (
        "Widget",
        "w1",
        w["metadata"]["uid"],
        True,
    )


def test_spec_change_updates_child_and_removed_child_is_deleted(operator, kube, ns):
    operator(namespace=ns)
    create_widget(kube, ns, "w2", size=1, secret=True)
    wait_for(
        lambda: ready(kube, ns, "w2") and get_widget(kube, ns, "w2")["status"]["children"] == 2, 30
    )
    secret = client.CoreV1Api(kube).read_namespaced_secret("w2-secret", ns)
    assert secret.metadata.labels["operatord.io/parent-uid"]
    patch_spec(kube, ns, "w2", size=7, secret=False)
    wait_for(
        lambda: configmap(kube, ns, "w2").data == {"size": "7"}, 30, message="configmap updated"
    )

    def secret_gone():
        try:
            client.CoreV1Api(kube).read_namespaced_secret("w2-secret", ns)
            return False
        except ApiException as exc:
            return exc.status == 404

    wait_for(secret_gone, 30, message="undesired secret deleted")
    wait_for(lambda: ready(kube, ns, "w2"), 30)


def test_deleted_child_is_recreated(operator, kube, ns):
    operator(namespace=ns)
    create_widget(kube, ns, "w3", size=2)
    wait_for(lambda: configmap(kube, ns, "w3"), 30)
    old_uid = configmap(kube, ns, "w3").metadata.uid
    client.CoreV1Api(kube).delete_namespaced_config_map("w3", ns)
    wait_for(
        lambda: (cm := configmap(kube, ns, "w3")) is not None and cm.metadata.uid != old_uid,
        30,
        message="configmap recreated",
    )


def test_failing_parent_backs_off_while_others_converge(operator, kube, ns, api):
    op = operator(namespace=ns)
    create_widget(kube, ns, "bad", fail=True)
    for i in range(5):
        create_widget(kube, ns, f"good-{i}", size=i)
    for i in range(5):
        wait_for(lambda i=i: ready(kube, ns, f"good-{i}"), 30)
    calls = wait_for(lambda: (c := op.calls("bad")) and len(c) >= 5 and c, 30, message="5 attempts")
    gaps = [b - a for a, b in zip(calls, calls[1:], strict=False)][:4]
    # backoff 0.2 * 2^n, no jitter: every gap grows (allowing scheduling noise).
    assert all(later > earlier * 1.4 for earlier, later in zip(gaps, gaps[1:], strict=False)), gaps
    assert gaps[0] >= 0.15, gaps
    assert configmap(kube, ns, "bad") is None
    # No handler status; only the failure's conditions (written once per transition).
    status = get_widget(kube, ns, "bad")["status"]
    assert set(status) == {"conditions", "observedGeneration"}
    assert ("Ready", "False", "HandlerError") in {
        (c["type"], c["status"], c["reason"]) for c in status["conditions"]
    }
    events = client.CoreV1Api(kube).list_namespaced_event(ns).items
    bad_events = [e for e in events if e.involved_object.name == "bad"]
    assert bad_events and bad_events[0].reason == "SyncFailed" and bad_events[0].type == "Warning"
    assert "asked to fail" in bad_events[0].message
    # Rate-limited: far fewer events than attempts.
    assert len(bad_events) < len(op.calls("bad"))
    # Fixing the spec lets it converge.
    patch_spec(kube, ns, "bad", fail=False, size=1)
    wait_for(lambda: ready(kube, ns, "bad"), 30)


def test_invalid_responses_mark_only_that_parent(operator, kube, ns):
    op = operator(namespace=ns)
    create_widget(kube, ns, "garbage", garbage=True)
    create_widget(kube, ns, "undeclared", badChild=True)
    create_widget(kube, ns, "elsewhere", otherNamespace="default")
    create_widget(kube, ns, "fine", size=1)
    wait_for(lambda: ready(kube, ns, "fine"), 30)
    wait_for(lambda: all(len(op.calls(n)) >= 2 for n in ("garbage", "undeclared", "elsewhere")), 30)
    assert configmap(kube, "default", "elsewhere") is None
    # Nothing written for the invalid ones: not even the valid ConfigMap of "undeclared".
    assert configmap(kube, ns, "garbage") is None
    assert configmap(kube, ns, "undeclared") is None
    status = get_widget(kube, ns, "undeclared").get("status") or {}
    assert set(status) <= {"conditions", "observedGeneration"}  # the failure's conditions only
    assert all(c["reason"] == "InvalidResponse" for c in status.get("conditions", []))
    out = op.output()
    assert "invalid handler response" in out and "not a configured child type" in out
    assert "differs from the parent's" in out


def test_finalize_retries_with_backoff_then_removes_finalizer(operator, kube, ns):
    op = operator(namespace=ns)
    create_widget(kube, ns, "fin", size=1, holdFinalizer=True)
    wait_for(lambda: ready(kube, ns, "fin"), 30)
    delete_widget(kube, ns, "fin")
    wait_for(lambda: len(op.calls("fin", "finalize")) >= 4, 30, message="finalize retried")
    calls = op.calls("fin", "finalize")
    gaps = [b - a for a, b in zip(calls, calls[1:], strict=False)]
    assert gaps[2] > gaps[0] * 2, gaps
    w = get_widget(kube, ns, "fin")
    assert w["metadata"].get("deletionTimestamp")
    assert w["status"]["finalizeAttempts"] >= 3
    patch_spec(kube, ns, "fin", holdFinalizer=False)
    wait_for(lambda: get_widget(kube, ns, "fin") is None, 30, message="widget deleted")
    # The owned ConfigMap is garbage-collected.
    wait_for(lambda: configmap(kube, ns, "fin") is None, 30, message="configmap collected")


def test_finalize_retry_after_is_honoured(operator, kube, ns):
    op = operator(namespace=ns)
    create_widget(kube, ns, "fin2", holdFinalizer=True, finalizeRetryAfter=0.3)
    wait_for(lambda: ready(kube, ns, "fin2"), 30)
    delete_widget(kube, ns, "fin2")
    wait_for(lambda: len(op.calls("fin2", "finalize")) >= 4, 30)
    calls = op.calls("fin2", "finalize")
    gaps = [b - a for a, b in zip(calls, calls[1:], strict=False)]
    assert all(0.25 < g < 1.5 for g in gaps[1:3]), gaps  # steady, not growing
    patch_spec(kube, ns, "fin2", holdFinalizer=False)
    wait_for(lambda: get_widget(kube, ns, "fin2") is None, 30)


def test_resync_after_triggers_more_syncs(operator, kube, ns):
    op = operator(namespace=ns)
    create_widget(kube, ns, "rs", size=1, resyncAfter=0.3)
    wait_for(lambda: len(op.calls("rs")) >= 6, 30, message="repeated syncs")
    other = create_widget(kube, ns, "quiet", size=1)
    wait_for(lambda: ready(kube, ns, "quiet"), 30)
    n = len(op.calls("quiet"))
    wait_for(lambda: len(op.calls("rs")) >= 10, 30)
    assert len(op.calls("quiet")) == n, "a parent without resync_after is not resynced"
    assert other


@pytest.mark.parametrize(
    "strategy",
    ["OnDelete", "Recreate", "Apply"],
)
def test_update_strategies(operator, kube, ns, strategy):
    operator(
        namespace=ns,
        children=[{"apiVersion": "v1", "kind": "ConfigMap", "updateStrategy": strategy}],
    )
    create_widget(kube, ns, "s", size=1)
    wait_for(lambda: ready(kube, ns, "s"), 30)
    before = configmap(kube, ns, "s")
    patch_spec(kube, ns, "s", size=2)
    if strategy == "OnDelete":
        # The handler sees the mismatch (ready False) but the child is never updated.
        wait_for(lambda: get_widget(kube, ns, "s")["status"]["observedGeneration"] == 2, 30)
        wait_for(lambda: get_widget(kube, ns, "s")["status"]["ready"] is False, 30)
        assert configmap(kube, ns, "s").data == {"size": "1"}
        # Deleting it lets it be created anew, with the new data.
        client.CoreV1Api(kube).delete_namespaced_config_map("s", ns)
        wait_for(lambda: (c := configmap(kube, ns, "s")) and c.data == {"size": "2"}, 30)
        return
    wait_for(lambda: (c := configmap(kube, ns, "s")) and c.data == {"size": "2"}, 30)
    after = configmap(kube, ns, "s")
    if strategy == "Recreate":
        assert after.metadata.uid != before.metadata.uid
    else:
        assert after.metadata.uid == before.metadata.uid
        managers = {m.manager for m in after.metadata.managed_fields or []}
        assert "operatord-e2e" in managers


def test_cluster_scoped_parent_with_function_handler(operator, kube, ns):
    operator(
        namespace=ns,
        handler="handlers:cluster_sync",
        parent={"apiVersion": "example.com/v1", "kind": "Gadget"},
        children=[{"apiVersion": "v1", "kind": "ConfigMap"}],
    )
    name = f"g-{ns}"
    custom(kube).create_cluster_custom_object(
        GROUP,
        VERSION,
        "gadgets",
        {
            "apiVersion": "example.com/v1",
            "kind": "Gadget",
            "metadata": {"name": name},
            "spec": {"namespace": ns},
        },
    )
    wait_for(lambda: configmap(kube, ns, name), 30, message="child of cluster-scoped parent")
    g = wait_for(
        lambda: (
            (o := custom(kube).get_cluster_custom_object(GROUP, VERSION, "gadgets", name))
            .get("status", {})
            .get("conditions")
            and o
        ),
        30,
    )
    conditions = g["status"].pop("conditions")
    assert g["status"].pop("observedInputs")["fingerprint"]  # skipUnchanged's record
    assert g["status"] == {"ok": True, "observedGeneration": 1}
    assert [(c["type"], c["status"]) for c in conditions][0] == ("Ready", "True")
    assert configmap(kube, ns, name).metadata.owner_references[0].uid == g["metadata"]["uid"]
    custom(kube).delete_cluster_custom_object(GROUP, VERSION, "gadgets", name)
    wait_for(lambda: configmap(kube, ns, name) is None, 30, message="child collected")


def test_unchanged_response_writes_nothing(operator, kube, ns, api):
    op = operator(namespace=ns)
    # The Secret's stringData is stored as base64 data: still recognised as unchanged.
    create_widget(kube, ns, "idle", size=1, secret=True)
    wait_for(
        lambda: ready(kube, ns, "idle") and get_widget(kube, ns, "idle")["status"]["children"] == 2,
        30,
    )
    n = len(op.calls("idle"))
    api.clear_requests()
    # A label change on the parent is an event: it causes one sync, which must write nothing.
    for i in range(2):
        custom(kube).patch_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, "idle", {"metadata": {"labels": {"touched": str(i)}}}
        )
        wait_for(
            lambda i=i: len(op.calls("idle")) >= n + i + 1, 30, message="sync after label change"
        )
    writes = [
        (r["verb"], r["resource"])
        for r in api.requests()
        if r["verb"] in ("create", "update", "patch", "delete") and r["namespace"] == ns
    ]
    assert writes == [("patch", "widgets"), ("patch", "widgets")]  # the test's own
    assert len(op.calls("idle")) == n + 2, "no sync loop"


def worker_pids(op) -> list[int]:
    pids = []
    for line in op.output().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("event") == "worker started":
            pids.append(int(rec["pid"]))
    return pids


def test_worker_killed_mid_run_is_replaced_and_all_converge(operator, kube, ns):
    op = operator(namespace=ns)
    create_widget(kube, ns, "k0", size=1)
    wait_for(lambda: ready(kube, ns, "k0"), 30)
    first = wait_for(lambda: len(worker_pids(op)) >= 2 and worker_pids(op), 10)
    for i in range(20):
        create_widget(kube, ns, f"k{i + 1}", size=i)
    os.kill(first[0], signal.SIGKILL)
    for i in range(21):
        wait_for(lambda i=i: ready(kube, ns, f"k{i}"), 60, message=f"k{i} ready after worker kill")
    # Replaced only if it was busy when killed; an idle one is replaced on its next task.
    create_widget(kube, ns, "after", size=1)
    wait_for(lambda: ready(kube, ns, "after"), 30)
    for i in range(5):
        create_widget(kube, ns, f"more-{i}", size=1)
    for i in range(5):
        wait_for(lambda i=i: ready(kube, ns, f"more-{i}"), 30)
    pids = worker_pids(op)
    assert len(pids) >= 3 and first[0] not in pids[2:], pids
    assert "restarting it" in op.output()


def test_handler_timeout_replaces_worker_and_others_converge(operator, kube, ns):
    op = operator(namespace=ns, handlerTimeoutSeconds=1)
    create_widget(kube, ns, "slow", size=1, sleep=30)
    for i in range(4):
        create_widget(kube, ns, f"fast-{i}", size=1)
    for i in range(4):
        wait_for(lambda i=i: ready(kube, ns, f"fast-{i}"), 60)
    wait_for(lambda: len(op.calls("slow")) >= 2, 30, message="slow retried after timeout")
    out = op.output()
    assert "did not return within 1s" in out
    assert "worker exited after a handler timeout; restarting it" in out
    assert "worker lost" not in out, "no other parent was charged for the stuck worker"


def test_sigterm_drains_and_exits_zero(operator, kube, ns):
    op = operator(namespace=ns)
    create_widget(kube, ns, "t", size=1)
    wait_for(lambda: ready(kube, ns, "t"), 30)
    assert op.stop() == 0


def test_handler_mutating_its_request_in_place_still_gets_its_status_written(operator, kube, ns):
    operator(namespace=ns, handler="handlers:mutating")
    create_widget(kube, ns, "m", size=1)
    wait_for(lambda: (get_widget(kube, ns, "m").get("status") or {}).get("observedGeneration"), 30)
    # A label change keeps the generation: only the status content differs.
    custom(kube).patch_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, "m", {"metadata": {"labels": {"tier": "gold"}}}
    )
    wait_for(lambda: get_widget(kube, ns, "m")["status"].get("tier") == "gold", 30, message="tier")


def test_a_handler_that_never_converges_is_slowed_down_not_hot_looped(operator, kube, ns):
    op = operator(namespace=ns)
    create_widget(kube, ns, "spin", size=1, unstable=True)
    # Each task runs the handler MAX_RUNS times (every run changes the ConfigMap); after
    # MAX_WRITE_STREAK such tasks in a row the next ones wait for the parent's backoff.
    tasks = MAX_WRITE_STREAK + 4
    calls = wait_for(
        lambda: (c := op.calls("spin")) and len(c) >= tasks * MAX_RUNS and c, 60, message="syncs"
    )
    gaps = [b - a for a, b in zip(calls, calls[1:], strict=False)]
    between_tasks = gaps[MAX_RUNS - 1 :: MAX_RUNS]
    # The first tasks follow each other at once; then backoff (0.2 s doubling, no jitter).
    assert max(between_tasks[:MAX_WRITE_STREAK]) < 0.5, between_tasks
    slow = between_tasks[MAX_WRITE_STREAK:]
    assert slow[0] > 0.15 and slow[2] > slow[0] * 2.5, between_tasks
    warnings = [
        r
        for r in op.log_records()
        if r.get("event", "").endswith("the handler does not converge, slowing down")
    ]
    # The first warning comes with the (MAX_WRITE_STREAK + 1)th such task, as the README says,
    # and names the child and the field that keeps changing.
    assert warnings[0]["consecutive_writing_syncs"] == MAX_WRITE_STREAK + 1
    assert warnings[0]["handler_runs"] == (MAX_WRITE_STREAK + 1) * MAX_RUNS
    assert warnings[0]["changing"] == f"ConfigMap {ns}/spin: data.at"
    events = wait_for(
        lambda: [
            e
            for e in client.CoreV1Api(kube).list_namespaced_event(ns).items
            if e.involved_object.name == "spin" and e.reason == "ChildrenNotConverging"
        ],
        10,
        message="ChildrenNotConverging event",
    )
    assert len(events) == 1 and events[0].type == "Warning"  # one Event, rate-limited
    assert f"(ConfigMap {ns}/spin: data.at)" in events[0].message
