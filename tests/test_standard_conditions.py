"""The standard conditions operatord maintains: the state table, the merge rule, transitions
only, and the kstatus verdicts (cli-utils' generic rules) they lead to."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client

from operatord import conditions as C
from operatord.config import Config
from operatord.kube import ClientSettings
from operatord.protocol import SyncTask
from operatord.testing import ApiServer
from operatord.worker import Worker, with_conditions

E2E = Path(__file__).resolve().parent / "e2e"


def make_worker(api, **settings) -> Worker:
    config = Config.from_dict(
        {
            **settings,
            "name": "unit",
            "handler": "handlers:Driven",
            "pythonPath": [str(E2E)],
            "parent": {"apiVersion": "example.com/v1", "kind": "Widget"},
            "children": [{"apiVersion": "v1", "kind": "ConfigMap"}],
            "leaderElection": {"enabled": False},
        }
    )
    return Worker(0, config, ClientSettings(kubeconfig=api.kubeconfig))


def widget(api, name, **spec):
    return client.CustomObjectsApi(api.client()).create_namespaced_custom_object(
        "example.com",
        "v1",
        "default",
        "widgets",
        {
            "apiVersion": "example.com/v1",
            "kind": "Widget",
            "metadata": {"name": name},
            "spec": spec,
        },
    )


def kstatus(obj: dict) -> str:
    """cli-utils kstatus for a resource without type-specific rules: Terminating while being
    deleted; InProgress while status.observedGeneration lags metadata.generation or
    Reconciling is True; Failed while Stalled is True; Current otherwise."""
    meta = obj.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return "Terminating"
    status = obj.get("status") or {}
    observed, generation = status.get("observedGeneration"), meta.get("generation")
    if observed is not None and generation is not None and observed != generation:
        return "InProgress"
    conds = {c["type"]: c["status"] for c in status.get("conditions") or []}
    if conds.get("Reconciling") == "True":
        return "InProgress"
    if conds.get("Stalled") == "True":
        return "Failed"
    return "Current"


def by_type(conds: list[dict]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c.get("reason")) for c in conds}


def test_the_state_table():
    assert by_type(C.maintain(None, C.CONVERGED, now="T")) == {
        "Ready": ("True", "Synced"),
        "Reconciling": ("False", "Synced"),
        "Stalled": ("False", "Synced"),
    }
    assert by_type(C.maintain(None, C.PROGRESSING, now="T")) == {
        "Ready": ("Unknown", "Progressing"),
        "Reconciling": ("True", "Progressing"),
        "Stalled": ("False", "Progressing"),
    }
    failing = C.maintain(None, C.FAILING, reason="HandlerError", message="boom", now="T")
    assert by_type(failing) == {
        "Ready": ("False", "HandlerError"),
        "Reconciling": ("True", "HandlerError"),
        "Stalled": ("False", "HandlerError"),
    }
    assert {c["message"] for c in failing} == {"boom"}
    assert by_type(C.maintain(None, C.STALLED_STATE, reason="ApiError", now="T")) == {
        "Ready": ("False", "ApiError"),
        "Reconciling": ("False", "ApiError"),
        "Stalled": ("True", "ApiError"),
    }
    assert by_type(C.maintain(None, C.FINALIZING, now="T"))["Ready"] == ("False", "Finalizing")
    assert C.failure_state(1) == C.FAILING
    assert C.failure_state(C.STALLED_AFTER) == C.STALLED_STATE


def test_transition_times_move_only_on_a_status_change():
    first = C.maintain(None, C.CONVERGED, generation=1, now="T1")
    again = C.maintain(first, C.CONVERGED, generation=1, now="T2")
    assert again == first  # same state: nothing differs, so nothing is written
    failing = C.maintain(again, C.FAILING, reason="HandlerError", generation=1, now="T3")
    times = {c["type"]: c["lastTransitionTime"] for c in failing}
    assert times == {"Ready": "T3", "Reconciling": "T3", "Stalled": "T1"}


def test_a_handler_that_sets_ready_owns_it():
    own = C.set_condition([], "Ready", False, "WaitingForDNS", "no record yet", now="H")
    live = C.maintain(None, C.CONVERGED, now="T1")
    out = C.maintain(live, C.CONVERGED, handler=own + [{"type": "Custom", "status": "True"}])
    assert out[0] == own[0]  # exactly as the handler set it
    assert [c["type"] for c in out] == ["Ready", "Custom", "Reconciling", "Stalled"]
    assert out[2]["lastTransitionTime"] == "T1"  # carried from the live conditions
    # A failure later (no handler status) leaves the handler's Ready alone: its reason is not
    # one operatord writes.
    failed = C.maintain(out, C.FAILING, reason="HandlerError", message="x", now="T2")
    assert failed[0] == own[0] and failed[1] == out[1]
    assert by_type(failed)["Reconciling"] == ("True", "HandlerError")


def test_a_changed_message_is_no_transition():
    a = C.maintain(None, C.FAILING, reason="HandlerError", message="at 10:00", now="T")
    b = C.maintain(a, C.FAILING, reason="HandlerError", message="at 10:01", now="T2")
    assert C.transition_key(a) == C.transition_key(b)
    c = C.maintain(b, C.STALLED_STATE, reason="HandlerError", message="at 10:02", now="T3")
    assert C.transition_key(c) != C.transition_key(b)


def _parent(generation: int, status: dict | None = None) -> dict:
    return {"metadata": {"name": "x", "generation": generation}, "status": status or {}}


def test_kstatus_over_the_states():
    """Walk a parent's life through the states and check the verdict kstatus reads from the
    statuses operatord writes (`with_conditions` is what the worker writes)."""

    def step(parent: dict, status: dict | None, state: str, **kw: str) -> dict:
        out = with_conditions(parent, status, state, **kw)
        assert out is not None
        out["observedGeneration"] = parent["metadata"]["generation"]  # as write_status adds
        return {**parent, "status": out}

    p = step(_parent(1), {"ready": True}, C.CONVERGED)
    assert kstatus(p) == "Current"
    p["metadata"]["generation"] = 2  # a spec change, not synced yet
    assert kstatus(p) == "InProgress"
    p = step(p, {"ready": False}, C.PROGRESSING)  # synced, children still changing
    assert kstatus(p) == "InProgress"
    p = step(p, None, C.FAILING, reason="HandlerError", message="boom")
    assert kstatus(p) == "InProgress"  # failing, retries left
    assert p["status"]["ready"] is False  # the live status is kept
    p = step(p, None, C.STALLED_STATE, reason="HandlerError", message="boom")
    assert kstatus(p) == "Failed"
    p = step(p, {"ready": True}, C.CONVERGED)
    assert kstatus(p) == "Current"
    p = step(p, {"ready": True}, C.FINALIZING)
    p["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert kstatus(p) == "Terminating"


# ---- in a worker, against the embedded API server ----------------------------------------


@pytest.fixture(scope="module")
def api():
    with ApiServer() as server:
        server.apply_crd("example.com", "v1", "Widget")
        yield server


def _read(api, name: str) -> dict:
    return client.CustomObjectsApi(api.client()).get_namespaced_custom_object(
        "example.com", "v1", "default", "widgets", name
    )


def _patch_spec(api, name: str, spec: dict) -> dict:
    return client.CustomObjectsApi(api.client()).patch_namespaced_custom_object(
        "example.com", "v1", "default", "widgets", name, {"spec": spec}
    )


def test_a_good_sync_carries_the_conditions_in_its_one_status_write(api):
    worker = make_worker(api)
    parent = widget(api, "good", size=2)
    result = worker.handle(SyncTask(parent["metadata"]["uid"], parent, []))
    assert result.outcome == "ok"
    status_writes = [w for w in result.written if "status" in w["object"]]
    assert len(status_writes) == 1
    now = _read(api, "good")
    assert by_type(now["status"]["conditions"])["Ready"] == ("True", "Synced")
    assert now["status"]["ready"] is True and now["status"]["observedGeneration"] == 1
    # A resync with nothing changed writes nothing (the transition times are kept).
    again = worker.handle(SyncTask(now["metadata"]["uid"], now, _children(api, "good")))
    assert again.outcome == "ok" and again.written == ()


def _children(api, name: str) -> list[dict]:
    cm = client.CoreV1Api(api.client()).read_namespaced_config_map(name, "default")
    obj = api.client().sanitize_for_serialization(cm)
    obj.update(apiVersion="v1", kind="ConfigMap")
    return [obj]


def test_failures_flip_the_conditions_once_per_transition(api):
    worker = make_worker(api)
    parent = widget(api, "flaky", size=1)
    uid = parent["metadata"]["uid"]
    ok = worker.handle(SyncTask(uid, parent, []))
    assert ok.outcome == "ok"
    converged = _read(api, "flaky")["status"]["conditions"]
    parent = _patch_spec(api, "flaky", {"fail": True})

    first = worker.handle(SyncTask(uid, parent, _children(api, "flaky"), retry=0))
    assert first.outcome == "error" and len(first.written) == 1  # the failure's one write
    live = _read(api, "flaky")
    conds = by_type(live["status"]["conditions"])
    assert conds == {
        "Ready": ("False", "HandlerError"),
        "Reconciling": ("True", "HandlerError"),
        "Stalled": ("False", "HandlerError"),
    }
    ready = next(c for c in live["status"]["conditions"] if c["type"] == "Ready")
    assert "asked to fail (flaky)" in ready["message"]
    assert live["status"]["ready"] is True  # the handler's last status is kept
    assert live["status"]["observedGeneration"] == 2

    second = worker.handle(SyncTask(uid, live, _children(api, "flaky"), retry=1))
    assert second.outcome == "error" and second.written == ()  # no transition: no write

    live = _read(api, "flaky")
    third = worker.handle(SyncTask(uid, live, _children(api, "flaky"), retry=2))
    assert third.outcome == "error" and len(third.written) == 1
    live = _read(api, "flaky")
    conds = by_type(live["status"]["conditions"])
    assert conds["Stalled"] == ("True", "HandlerError")
    assert conds["Reconciling"] == ("False", "HandlerError")
    stalled = next(c for c in live["status"]["conditions"] if c["type"] == "Stalled")
    assert stalled["message"].startswith("3 consecutive failed syncs")
    assert kstatus(live) == "Failed"

    fourth = worker.handle(SyncTask(uid, live, _children(api, "flaky"), retry=3))
    assert fourth.written == ()  # still stalled: rate-limited to transitions

    fixed = _patch_spec(api, "flaky", {"fail": None})
    back = worker.handle(SyncTask(uid, fixed, _children(api, "flaky"), retry=4))
    assert back.outcome == "ok"
    live = _read(api, "flaky")
    assert by_type(live["status"]["conditions"]) == by_type(converged)
    assert kstatus(live) == "Current"


def test_the_key_turns_it_off(api):
    worker = make_worker(api, conditions=False)
    parent = widget(api, "plain", size=1)
    assert worker.handle(SyncTask(parent["metadata"]["uid"], parent, [])).outcome == "ok"
    assert "conditions" not in _read(api, "plain")["status"]


def test_a_schema_that_drops_conditions_turns_them_off_instead_of_rewriting(api):
    """A CRD whose status schema does not declare conditions prunes them: maintaining them
    anyway would rewrite the status on every sync; the worker stops after the first write."""
    api.apply_crd(
        "pruned.example.com",
        "v1",
        "Widget",
        schema={
            "type": "object",
            "properties": {
                "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "status": {
                    "type": "object",
                    "properties": {
                        "ready": {"type": "boolean"},
                        "children": {"type": "integer"},
                        "observedGeneration": {"type": "integer"},
                    },
                },
            },
        },
    )
    config = Config.from_dict(
        {
            "name": "unit",
            "handler": "handlers:Driven",
            "pythonPath": [str(E2E)],
            "parent": {"apiVersion": "pruned.example.com/v1", "kind": "Widget"},
            "children": [{"apiVersion": "v1", "kind": "ConfigMap"}],
            "leaderElection": {"enabled": False},
        }
    )
    worker = Worker(0, config, ClientSettings(kubeconfig=api.kubeconfig))
    custom = client.CustomObjectsApi(api.client())
    parent = custom.create_namespaced_custom_object(
        "pruned.example.com",
        "v1",
        "default",
        "widgets",
        {"apiVersion": "pruned.example.com/v1", "kind": "Widget", "metadata": {"name": "p"}},
    )
    first = worker.handle(SyncTask(parent["metadata"]["uid"], parent, []))
    assert first.outcome == "ok" and next(iter(worker.units.values())).conditions_dropped
    now = custom.get_namespaced_custom_object("pruned.example.com", "v1", "default", "widgets", "p")
    assert now["status"] == {"ready": True, "children": 1, "observedGeneration": 1}  # pruned
    cm = client.CoreV1Api(api.client()).read_namespaced_config_map("p", "default")
    child = api.client().sanitize_for_serialization(cm)
    child.update(apiVersion="v1", kind="ConfigMap")
    again = worker.handle(SyncTask(now["metadata"]["uid"], now, [child]))
    assert again.outcome == "ok" and again.written == ()  # no status rewrite per sync
