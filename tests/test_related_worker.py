"""A worker in-process with related objects: it re-selects before syncing, never syncs with
objects chosen by an outdated selection, and fails a parent that selects an undeclared type."""

from pathlib import Path

import pytest
from kubernetes import client

from operatord import protocol
from operatord.config import Config
from operatord.kube import ClientSettings
from operatord.protocol import SyncTask
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


def make_worker(api, related=({"apiVersion": "v1", "kind": "Secret"},)) -> Worker:
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
