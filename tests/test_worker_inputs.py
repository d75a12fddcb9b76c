"""The worker's side of skipUnchanged, in-process against the embedded API server: a converged
sync records the fingerprint of the state it left in its one status write; a sync that did
not converge records none; a schema that prunes the record turns recording off."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog
from kubernetes import client

from operatord import fingerprint
from operatord.config import Config
from operatord.kube import ClientSettings
from operatord.protocol import SyncTask
from operatord.testing import ApiServer
from operatord.worker import Worker

E2E = Path(__file__).resolve().parent / "e2e"


@pytest.fixture(scope="module")
def api():
    with ApiServer() as server:
        server.apply_crd("example.com", "v1", "Widget")
        yield server


def make_worker(api, group: str = "example.com", **settings) -> Worker:
    config = Config.from_dict(
        {
            **settings,
            "name": "unit",
            "handler": "handlers:Driven",
            "pythonPath": [str(E2E)],
            "parent": {"apiVersion": f"{group}/v1", "kind": "Widget"},
            "children": [{"apiVersion": "v1", "kind": "ConfigMap"}],
            "leaderElection": {"enabled": False},
        }
    )
    return Worker(0, config, ClientSettings(kubeconfig=api.kubeconfig))


def custom(api) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api.client())


def widget(api, name: str, group: str = "example.com", **spec) -> dict:
    return custom(api).create_namespaced_custom_object(
        group,
        "v1",
        "default",
        "widgets",
        {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec},
    )


def read(api, name: str, group: str = "example.com") -> dict:
    return custom(api).get_namespaced_custom_object(group, "v1", "default", "widgets", name)


def config_map(api, name: str) -> dict:
    cm = client.CoreV1Api(api.client()).read_namespaced_config_map(name, "default")
    out = api.client().sanitize_for_serialization(cm)
    out.update(apiVersion="v1", kind="ConfigMap")
    return out


def sync(worker: Worker, parent: dict, children: list | None = None):
    return worker.handle(SyncTask(parent["metadata"]["uid"], parent, children or []))


def test_a_converged_sync_records_the_state_it_left_as_a_fresh_leader_sees_it(api):
    worker = make_worker(api)
    result = sync(worker, widget(api, "rec", size=2))
    assert result.outcome == "ok" and result.handler_calls == 2
    now = read(api, "rec")
    recorded = fingerprint.recorded(now)
    assert recorded is not None and recorded.selection is None
    # What a leader computes after a restart, from the parent and children it lists now.
    digest = next(iter(worker.units.values())).digest
    assert fingerprint.of(digest, now, [config_map(api, "rec")]) == recorded.fingerprint
    # In the same status write as the handler's status: one status write per sync.
    status_writes = [w for w in result.written if w["object"].get("status")]
    assert len(status_writes) == 1
    assert (
        status_writes[0]["object"]["status"][fingerprint.FIELD] == now["status"]["observedInputs"]
    )


def test_a_resync_of_a_converged_parent_writes_nothing(api):
    worker = make_worker(api)
    sync(worker, widget(api, "quiet", size=1))
    again = sync(worker, read(api, "quiet"), [config_map(api, "quiet")])
    assert again.outcome == "ok" and again.written == ()


@pytest.mark.parametrize(
    "spec", [{"resyncAfter": 30}, {"unstable": True}], ids=["resync-after", "children-changing"]
)
def test_a_sync_that_did_not_converge_records_nothing(api, spec):
    worker = make_worker(api)
    name = "nc-" + next(iter(spec)).lower()
    assert sync(worker, widget(api, name, **spec)).outcome == "ok"
    assert fingerprint.FIELD not in read(api, name)["status"]


def test_a_failed_sync_removes_the_record_with_its_failure_conditions(api):
    worker = make_worker(api)
    sync(worker, widget(api, "fails", size=1))
    assert fingerprint.FIELD in read(api, "fails")["status"]
    changed = custom(api).patch_namespaced_custom_object(
        "example.com", "v1", "default", "widgets", "fails", {"spec": {"fail": True}}
    )
    assert sync(worker, changed, [config_map(api, "fails")]).outcome == "error"
    status = read(api, "fails")["status"]
    assert fingerprint.FIELD not in status
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "False"


def test_skip_unchanged_false_records_nothing(api):
    worker = make_worker(api, skipUnchanged=False)
    assert sync(worker, widget(api, "off", size=1)).outcome == "ok"
    assert fingerprint.FIELD not in read(api, "off")["status"]


def test_a_schema_that_prunes_the_record_turns_recording_off_with_a_warning(api):
    group = "strict.example.com"
    api.apply_crd(
        group,
        "v1",
        "Widget",
        schema={
            "type": "object",
            "properties": {
                "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "status": {
                    "type": "object",
                    "x-kubernetes-preserve-unknown-fields": False,
                    "properties": {
                        "ready": {"type": "boolean"},
                        "children": {"type": "integer"},
                        "observedGeneration": {"type": "integer"},
                        "conditions": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            },
                        },
                    },
                },
            },
        },
    )
    worker = make_worker(api, group=group)
    with structlog.testing.capture_logs() as logs:
        first = sync(worker, widget(api, "p", group=group, size=1))
    assert first.outcome == "ok"
    assert next(iter(worker.units.values())).inputs_dropped
    assert any("observedInputs" in e["event"] for e in logs if e["log_level"] == "warning")
    now = read(api, "p", group)
    assert fingerprint.FIELD not in now["status"] and now["status"]["ready"] is True
    again = sync(worker, now, [config_map(api, "p")])
    assert again.outcome == "ok" and again.written == ()  # no status rewrite per sync


def test_an_input_change_that_changes_no_status_writes_nothing_and_keeps_the_record(api):
    worker = make_worker(api)
    sync(worker, widget(api, "labelled", size=1))
    before = read(api, "labelled")["status"][fingerprint.FIELD]
    touched = custom(api).patch_namespaced_custom_object(
        "example.com", "v1", "default", "widgets", "labelled", {"metadata": {"labels": {"a": "b"}}}
    )
    again = sync(worker, touched, [config_map(api, "labelled")])
    assert again.outcome == "ok" and again.written == (), "the record alone is no write"
    assert read(api, "labelled")["status"][fingerprint.FIELD] == before
    # The older record does not match the new inputs: the leader syncs the parent.
    digest = next(iter(worker.units.values())).digest
    assert fingerprint.of(digest, touched, [config_map(api, "labelled")]) != before["fingerprint"]


def test_a_sync_that_repaired_a_child_records_the_repaired_state(api):
    worker = make_worker(api)
    sync(worker, widget(api, "repaired", size=1))
    client.CoreV1Api(api.client()).patch_namespaced_config_map(
        "repaired", "default", {"data": {"size": "9"}}
    )
    result = sync(worker, read(api, "repaired"), [config_map(api, "repaired")])
    assert [w["object"]["kind"] for w in result.written] == ["ConfigMap", "Widget"]
    now = read(api, "repaired")
    digest = next(iter(worker.units.values())).digest
    recorded = fingerprint.recorded(now)
    assert recorded is not None
    assert fingerprint.of(digest, now, [config_map(api, "repaired")]) == recorded.fingerprint


def test_a_new_handler_version_rewrites_the_record_once(api):
    sync(make_worker(api, handlerVersion="1"), widget(api, "deployed", size=1))
    old = read(api, "deployed")["status"][fingerprint.FIELD]
    worker = make_worker(api, handlerVersion="2")
    result = sync(worker, read(api, "deployed"), [config_map(api, "deployed")])
    assert [w["object"]["kind"] for w in result.written] == ["Widget"], "the record alone"
    new = read(api, "deployed")["status"][fingerprint.FIELD]
    assert new["version"] == next(iter(worker.units.values())).digest != old["version"]
    again = sync(worker, read(api, "deployed"), [config_map(api, "deployed")])
    assert again.written == ()
