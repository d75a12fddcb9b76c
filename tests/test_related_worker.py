"""A worker in-process with related objects: it re-selects before syncing, never syncs with
objects chosen by an outdated selection, fails a parent that selects an undeclared type, and
reads the objects of ``metadata`` and ``none`` related types from the API server itself."""

import hashlib
import json
from pathlib import Path

import pytest
from kubernetes import client

from operatord import protocol
from operatord.config import Config
from operatord.kube import ClientSettings
from operatord.protocol import SyncTask
from operatord.related import trim_metadata
from operatord.testing import ApiServer
from operatord.worker import Worker

E2E = Path(__file__).resolve().parent / "e2e"
REPO = Path(__file__).resolve().parents[1]
SECRET_SELECTION = (("v1", "Secret", ("tls",), None, None),)


@pytest.fixture(scope="module")
def api():
    with ApiServer() as server:
        # no schema: the test handler reads spec fields the example CRD's schema would prune
        server.apply_crd("example.com", "v1", "Widget")
        yield server


def make_worker(api, related=({"apiVersion": "v1", "kind": "Secret", "cache": "full"},)) -> Worker:
    config = Config.from_dict(
        {
            "name": "unit",
            "conditions": False,  # a failed sync writes nothing at all then
            "handler": "related_handlers:Selecting",
            "pythonPath": [str(E2E)],
            "parent": {"apiVersion": "example.com/v1", "kind": "Widget"},
            "related": list(related),
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


SECRET = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {"name": "tls", "namespace": "default"},
    "data": {"k": "dg=="},
}


def test_a_new_selection_asks_for_its_objects_before_anything_is_written(api):
    worker = make_worker(api)
    parent = widget(api, "first", secret="tls")
    result = worker.handle(SyncTask(parent["metadata"]["uid"], parent, []))
    assert (result.outcome, result.reselect, result.selection) == ("ok", True, SECRET_SELECTION)
    assert result.written == () and result.handler_calls == 0
    assert protocol.next_step(result) == protocol.Step(again=True)

    # Dispatched again with the objects of that selection: the sync runs with them.
    task = SyncTask(
        parent["metadata"]["uid"], parent, [], related=[SECRET], selection=SECRET_SELECTION
    )
    result = worker.handle(task)
    assert (result.outcome, result.reselect, result.handler_calls) == ("ok", False, 1)
    assert result.selection == SECRET_SELECTION
    status = [w["object"].get("status") for w in result.written if w["object"].get("status")]
    assert status[-1]["secret"]  # the digest of the related Secret's data


def test_a_repointed_parent_is_not_synced_with_the_old_objects(api):
    worker = make_worker(api)
    parent = widget(api, "repointed", secret="other")
    task = SyncTask(
        parent["metadata"]["uid"], parent, [], related=[SECRET], selection=SECRET_SELECTION
    )
    result = worker.handle(task)
    assert result.reselect and result.handler_calls == 0 and result.written == ()
    assert result.selection == (("v1", "Secret", ("other",), None, None),)


def test_a_parent_selecting_nothing_syncs_at_once(api):
    worker = make_worker(api)
    parent = widget(api, "plain")
    result = worker.handle(SyncTask(parent["metadata"]["uid"], parent, []))
    assert (result.outcome, result.reselect, result.selection) == ("ok", False, ())
    assert result.handler_calls == 1


def test_an_undeclared_type_fails_the_parent_without_writes(api):
    worker = make_worker(api)
    parent = widget(api, "undeclared", secret="tls", undeclared=True)
    result = worker.handle(SyncTask(parent["metadata"]["uid"], parent, []))
    assert (result.outcome, result.error_kind, result.selection) == ("error", "invalid", None)
    assert "v1/Service, which is not a configured related type" in result.error
    assert result.written == ()


def digest(data: dict) -> str:  # as related_handlers.digest
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def sync_with(worker, parent, selection, related=()):
    task = SyncTask(
        parent["metadata"]["uid"], parent, [], related=list(related), selection=selection
    )
    result = worker.handle(task)
    assert (result.outcome, result.reselect, result.handler_calls) == ("ok", False, 1), result
    return [w["object"]["status"] for w in result.written if w["object"].get("status")][-1]


def test_metadata_types_reach_the_handler_as_read_by_the_worker(api):
    core = client.CoreV1Api(api.client())
    core.create_namespaced_secret(
        "default", {"metadata": {"name": "db", "labels": {"a": "b"}}, "data": {"pw": "c2VjcmV0"}}
    )
    worker = make_worker(api, related=({"apiVersion": "v1", "kind": "Secret"},))
    assert worker.units["unit"].config.related[0].cache == "metadata"  # the Secret default
    parent = widget(api, "meta", secret="db")
    live = api.client().sanitize_for_serialization(core.read_namespaced_secret("db", "default"))
    stub = trim_metadata(live).to_object()  # what the leader keeps and sends
    assert "data" not in stub and stub["metadata"]["labels"] == {"a": "b"}
    selection = (("v1", "Secret", ("db",), None, None),)
    status = sync_with(worker, parent, selection, [stub])
    assert status["secret"] == digest({"pw": "c2VjcmV0"})  # the data came from the server

    # Gone since the leader saw it: absent, as a selected object that does not exist is.
    core.delete_namespaced_secret("db", "default")
    assert sync_with(worker, parent, selection, [stub])["secret"] is None


def test_none_types_are_read_by_name_and_by_label_selector_at_each_sync(api):
    core = client.CoreV1Api(api.client())
    core.create_namespaced_config_map(
        "default", {"metadata": {"name": "settings"}, "data": {"setting": "fast"}}
    )
    for name, team in (("ns-red-1", "red"), ("ns-red-2", "red"), ("ns-blue", "blue")):
        core.create_namespace({"metadata": {"name": name, "labels": {"team": team}}})
    worker = make_worker(
        api,
        related=(
            {"apiVersion": "v1", "kind": "ConfigMap", "cache": "none"},
            {"apiVersion": "v1", "kind": "Namespace", "cache": "none", "labelSelector": "team"},
        ),
    )
    parent = widget(api, "uncached", configMap="settings", team="red")
    selection = (
        ("v1", "ConfigMap", ("settings",), None, None),
        ("v1", "Namespace", (), None, "team=red"),
    )
    status = sync_with(worker, parent, selection)  # nothing comes from the leader
    assert (status["setting"], status["namespaces"]) == ("fast", ["ns-red-1", "ns-red-2"])

    core.patch_namespaced_config_map("settings", "default", {"data": {"setting": "slow"}})
    core.patch_namespace("ns-blue", {"metadata": {"labels": {"team": "red"}}})
    status = sync_with(worker, parent, selection)  # read again: the next sync sees changes
    assert status["setting"] == "slow"
    assert status["namespaces"] == ["ns-blue", "ns-red-1", "ns-red-2"]
