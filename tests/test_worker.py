"""A worker in-process against the embedded API server: results, events, no writes on failure."""

import concurrent.futures
import threading
import time
from pathlib import Path

import pytest
from kubernetes import client

from operatord import protocol
from operatord.config import Config
from operatord.kube import ClientSettings
from operatord.protocol import SyncTask
from operatord.testing import ApiServer, wait_for
from operatord.worker import MAX_RUNS, Worker

E2E = Path(__file__).resolve().parent / "e2e"


@pytest.fixture(scope="module")
def api():
    with ApiServer() as server:
        # no schema: the driven handler reads spec fields (fail, ...) the example CRD's schema
        # would prune
        server.apply_crd("example.com", "v1", "Widget")
        yield server


def make_worker(api, handler="handlers:Driven", board=None, **settings) -> Worker:
    config = Config.from_dict(
        {
            **settings,
            "name": "unit",
            "handler": handler,
            "pythonPath": [str(E2E)],
            "parent": {"apiVersion": "example.com/v1", "kind": "Widget"},
            "children": [{"apiVersion": "v1", "kind": "ConfigMap"}],
            "leaderElection": {"enabled": False},
        }
    )
    return Worker(0, config, ClientSettings(kubeconfig=api.kubeconfig), board=board)


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


def test_a_failed_sync_writes_nothing_but_the_finalizer(api):
    worker = make_worker(api, conditions=False)
    parent = widget(api, "nothing", fail=True)
    result = worker.handle(SyncTask(parent["metadata"]["uid"], parent, []))
    written = [(w["action"], w["object"]["kind"]) for w in result.written]
    assert written == [("upsert", "Widget")]  # the finalizer, added before the first sync
    assert result.written[0]["object"]["metadata"]["finalizers"] == ["operatord.io/unit"]
    assert (
        client.CoreV1Api(api.client())
        .list_namespaced_config_map("default", field_selector="metadata.name=nothing")
        .items
        == []
    )


def test_a_good_sync_reports_what_it_wrote(api):
    worker = make_worker(api)
    parent = widget(api, "good", size=4)
    result = worker.handle(SyncTask(parent["metadata"]["uid"], parent, []))
    assert result.outcome == "ok"
    kinds = [(w["action"], w["object"]["kind"]) for w in result.written]
    assert kinds == [("upsert", "Widget"), ("upsert", "ConfigMap"), ("upsert", "Widget")]
    cm = result.written[1]["object"]
    assert cm["data"] == {"size": "4"}
    assert cm["metadata"]["resourceVersion"]  # as the API server returned it


def test_a_sync_that_wrote_children_runs_again_and_writes_status_once(api):
    worker = make_worker(api)
    parent = widget(api, "twice", size=2)
    result = worker.handle(SyncTask(parent["metadata"]["uid"], parent, []))
    assert result.outcome == "ok" and result.handler_calls == 2
    assert not result.children_changed
    status = [w["object"].get("status") for w in result.written if w["object"]["kind"] == "Widget"]
    # the finalizer write carries no status; the one status write comes from the second run,
    # which observed the ConfigMap the first run created
    assert status[-1]["ready"] is True and status[-1]["children"] == 1
    assert sum(1 for s in status if s) == 1


def test_the_events_of_the_creating_run_are_reported_with_those_of_the_follow_up(api):
    worker = make_worker(api)
    parent = widget(api, "creating", size=1, creatingEvent=True, announce="hi")
    result = worker.handle(SyncTask(parent["metadata"]["uid"], parent, []))
    assert result.outcome == "ok" and result.handler_calls == 2
    # run 1 returned Announced + Creating, run 2 (ConfigMap observed) Announced only: once
    assert result.events == (
        ("Normal", "Announced", "hi"),
        ("Normal", "Creating", "creating the ConfigMap creating"),
    )


def test_the_events_of_a_run_that_wrote_are_reported_when_a_later_run_fails(api):
    worker = make_worker(api, handler="handlers:FailingFollowUp")
    parent = widget(api, "second-fails", size=1, creatingEvent=True)
    result = worker.handle(SyncTask(parent["metadata"]["uid"], parent, []))
    assert result.outcome == "error" and result.handler_calls == 2
    assert result.events == (("Normal", "Creating", "creating the ConfigMap second-fails"),)


def test_a_handler_that_keeps_changing_children_is_reported_after_max_runs(api):
    worker = make_worker(api)
    parent = widget(api, "restless", unstable=True)
    result = worker.handle(SyncTask(parent["metadata"]["uid"], parent, []))
    assert result.outcome == "ok" and result.handler_calls == MAX_RUNS
    assert result.children_changed


def run_concurrently(worker, parents):
    with concurrent.futures.ThreadPoolExecutor(len(parents)) as pool:
        futures = [
            pool.submit(worker.handle, SyncTask(p["metadata"]["uid"], p, [])) for p in parents
        ]
        return [f.result(60) for f in futures]


def test_async_handler_calls_run_concurrently(api):
    worker = make_worker(api, handler="handlers:gathering")
    parents = [widget(api, f"gather-{i}", gather=6) for i in range(6)]
    results = run_concurrently(worker, parents)
    assert [r.outcome for r in results] == ["ok"] * 6
    assert worker.handler.target.most == 6


def test_sync_handler_calls_never_overlap_while_api_io_does(api):
    worker = make_worker(api, handler="handlers:counting")
    parents = [widget(api, f"serial-{i}", size=i) for i in range(8)]
    results = run_concurrently(worker, parents)
    assert [r.outcome for r in results] == ["ok"] * 8
    assert worker.handler.target.most == 1


def test_a_timed_out_call_fails_its_parent_and_gives_back_the_waiting_ones(api):
    worker = make_worker(api, handlerTimeoutSeconds=0.5)
    stuck = widget(api, "stuck", sleep=5)
    waiting = [widget(api, f"behind-{i}", size=1) for i in range(3)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        first = pool.submit(worker.handle, SyncTask(stuck["metadata"]["uid"], stuck, []))
        wait_for(lambda: worker.runner.running, 10)
        rest = [pool.submit(worker.handle, SyncTask(p["metadata"]["uid"], p, [])) for p in waiting]
        result = first.result(30)
        others = [f.result(30) for f in rest]
    assert result.outcome == "error" and result.error_kind == "timeout"
    assert "did not return within 0.5s" in result.error
    assert worker.wedged
    # Whoever did not get the handler thread before it wedged is given back, uncharged.
    assert {r.outcome for r in others} <= {"ok", "abandoned"}
    assert "abandoned" in {r.outcome for r in others}


def test_a_stuck_call_is_answered_for_while_its_thread_is_still_in_the_handler(api):
    worker = make_worker(api, handlerTimeoutSeconds=0.3)
    answered = []
    worker.on_stuck = lambda task, result: answered.append((task.uid, result))
    stuck = widget(api, "answered-for", sleep=3)
    uid = stuck["metadata"]["uid"]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        late = pool.submit(worker.handle, SyncTask(uid, stuck, []))
        wait_for(lambda: answered, 2, message="the watchdog answers while the call still runs")
        assert not late.done()
        ((got_uid, result),) = answered
        assert got_uid == uid
        assert (result.outcome, result.error_kind) == ("error", "timeout")
        assert "did not return within 0.3s" in result.error
        # What the task wrote before the handler call (its finalizer) is reported with it.
        assert [w["object"]["metadata"]["name"] for w in result.written] == ["answered-for"]
        # When the call finally returns, nothing it computed is used: no ConfigMap, no status.
        assert late.result(30).error_kind == "timeout"
    cms = client.CoreV1Api(api.client()).list_namespaced_config_map("default").items
    assert "answered-for" not in {cm.metadata.name for cm in cms}


def test_handler_runner_serializes_calls_on_the_callers_threads():
    from operatord.worker import HandlerRunner, HandlerTimeout, Wedged

    runner = HandlerRunner(0.2)
    threads = set()

    def fn(request):
        threads.add(threading.get_ident())
        return request * 2

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda i: runner.call(fn, i, False), range(20))) == [
            i * 2 for i in range(20)
        ]
    assert threads and threading.get_ident() not in threads
    overran = []
    runner.on_overrun = overran.append
    release = threading.Event()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(runner.call, lambda _: release.wait(10), None, False)
        wait_for(lambda: runner.running, 5)
        second = pool.submit(runner.call, fn, 1, False)
        wait_for(lambda: overran, 5, message="the watchdog reports the overrun")
        with pytest.raises(Wedged):
            second.result(5)
        release.set()
        with pytest.raises(HandlerTimeout):
            first.result(5)
    assert runner.wedged
    with pytest.raises(Wedged):
        runner.call(fn, 1, False)


def test_handler_runner_serves_waiting_controllers_in_turn():
    """One controller with many calls waiting does not hold another's call behind all of them."""
    from operatord.worker import HandlerRunner

    runner = HandlerRunner(10)
    release = threading.Event()
    order = []

    def fn(name):
        order.append(name)
        return name

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        first = pool.submit(
            runner.call, lambda _: release.wait(10), None, False, "p0", None, "storm"
        )
        wait_for(lambda: runner.running, 5)
        calls = []
        for name, turn in [("s1", "storm"), ("s2", "storm"), ("s3", "storm"), ("c1", "calm")]:
            calls.append(pool.submit(runner.call, fn, name, False, name, None, turn))
            queued = len(calls)
            wait_for(lambda n=queued: sum(runner._call_lock.waiting().values()) == n, 5)
        release.set()
        assert first.result(5) is True
        assert [c.result(5) for c in calls] == ["s1", "s2", "s3", "c1"]
    assert order == ["c1", "s1", "s2", "s3"]


def test_no_write_after_the_lease_fence(api):
    worker = make_worker(api)
    parent = widget(api, "fenced", size=1)
    expired = time.monotonic() - 0.1
    result = worker.handle(SyncTask(parent["metadata"]["uid"], parent, [], expired))
    assert result.outcome == "abandoned" and result.written == ()
    assert "lease" in result.error
    fresh = client.CustomObjectsApi(api.client()).get_namespaced_custom_object(
        "example.com", "v1", "default", "widgets", "fenced"
    )
    assert not fresh["metadata"].get("finalizers")
    # A renewal (LeaseUpdate) moves the fence forward for tasks already in flight.
    worker.update_lease(time.monotonic() + 30)
    assert worker.handle(SyncTask(parent["metadata"]["uid"], parent, [], expired)).outcome == "ok"


def test_shard_tasks_are_fenced_by_their_own_shard_lease(api):
    worker = make_worker(api)
    parent = widget(api, "shard-fenced", size=1)
    uid = parent["metadata"]["uid"]
    expired = time.monotonic() - 0.1
    # The leader fence and another shard's fence do not cover a task of shard 3.
    worker.update_lease(time.monotonic() + 30)
    worker.update_lease(time.monotonic() + 30, shard=1)
    result = worker.handle(SyncTask(uid, parent, [], expired, shard=3))
    assert result.outcome == "abandoned" and result.written == ()
    # A renewal of shard 3 moves its fence forward; a stale renewal never moves it back.
    worker.update_lease(time.monotonic() + 30, shard=3)
    worker.update_lease(expired, shard=3)
    assert worker.handle(SyncTask(uid, parent, [], expired, shard=3)).outcome == "ok"


def test_a_status_computed_from_a_stale_parent_is_not_written(api):
    worker = make_worker(api)
    parent = widget(api, "stale", size=1)
    first = worker.handle(SyncTask(parent["metadata"]["uid"], parent, []))
    assert first.outcome == "ok"
    written = [w["object"] for w in first.written if w["object"]["kind"] == "Widget"][-1]
    # Someone changes the spec; a sync still working from the version it saw must not write.
    custom = client.CustomObjectsApi(api.client())
    custom.patch_namespaced_custom_object(
        "example.com", "v1", "default", "widgets", "stale", {"spec": {"size": 5}}
    )
    children = [w["object"] for w in first.written if w["object"]["kind"] == "ConfigMap"]
    # The version the sync saw differs from what it last wrote (observedGeneration changes), so
    # it tries a status write, against a server that has moved on.
    stale = dict(written, metadata={**written["metadata"], "generation": 7})
    result = worker.handle(SyncTask(parent["metadata"]["uid"], stale, children))
    assert result.outcome == "abandoned" and "status not written" in result.error
    now = custom.get_namespaced_custom_object("example.com", "v1", "default", "widgets", "stale")
    assert now["status"] == written["status"]


def test_a_cluster_scoped_child_listed_under_two_namespaces_is_one_object(api):
    from operatord.apply import Applier
    from operatord.handler import InvalidResponse
    from operatord.kube import Kube

    config = Config.from_dict(
        {
            "name": "unit",
            "handler": "handlers:Driven",
            "pythonPath": [str(E2E)],
            "parent": {"apiVersion": "example.com/v1", "kind": "Widget"},
            "children": [{"apiVersion": "v1", "kind": "Namespace"}],
        }
    )
    applier = Applier(Kube(ClientSettings(kubeconfig=api.kubeconfig)), config)
    parent = {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "p", "uid": "u"},
    }
    twice = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n", "namespace": ns}}
        for ns in ("a", "b")
    ]
    with pytest.raises(InvalidResponse) as info:
        applier.prepare(parent, twice)
    assert str(info.value) == "children[1] duplicates children[0]: Namespace n (v1) is listed twice"


def test_the_call_board_shows_whose_handler_call_is_running(api):
    board = protocol.CallBoard.create(8)
    try:
        worker = make_worker(api, board=board)
        slow = widget(api, "on-the-board", sleep=0.5)
        uid = slow["metadata"]["uid"]
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            done = pool.submit(worker.handle, SyncTask(uid, slow, []))
            wait_for(lambda: board.running() == [uid], 10, 0.01, "the call on the board")
            assert done.result(30).outcome == "ok"
        assert board.running() == []  # cleared when the call returned

        napping = make_worker(api, handler="handlers:napping", board=board)
        parents = [widget(api, f"board-async-{i}", sleep=0.5) for i in range(3)]
        uids = {p["metadata"]["uid"] for p in parents}
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            results = pool.submit(run_concurrently, napping, parents)
            wait_for(lambda: set(board.running()) == uids, 10, 0.01, "the async calls on it")
            assert [r.outcome for r in results.result(60)] == ["ok"] * 3
        assert board.running() == []
    finally:
        board.close()


def test_plain_copy_is_deep_and_equal():
    from decimal import Decimal

    from operatord.worker import plain_copy

    original = {
        "metadata": {"labels": {"a": "b"}, "finalizers": ["x"]},
        "spec": {"items": [{"n": 1}, {"f": 1.5, "ok": True, "none": None}], "pair": ("p", [1])},
        "odd": Decimal("1.5"),  # not JSON-shaped: deep-copied the slow way
    }
    copied = plain_copy(original)
    assert copied == original
    copied["metadata"]["labels"]["a"] = "changed"
    copied["spec"]["items"][0]["n"] = 2
    copied["spec"]["pair"][1].append(2)
    assert original["metadata"]["labels"] == {"a": "b"}
    assert original["spec"]["items"][0] == {"n": 1}
    assert original["spec"]["pair"] == ("p", [1])


def test_the_handler_sees_the_retry_count_of_its_task(api):
    worker = make_worker(api, handler="handlers:Flaky")
    parent = widget(api, "retried", flakySync=True)
    uid = parent["metadata"]["uid"]
    assert worker.handle(SyncTask(uid, parent, [], retry=1)).outcome == "error"
    result = worker.handle(SyncTask(uid, parent, [], retry=2))
    assert result.outcome == "ok"
    status = [w["object"]["status"] for w in result.written if w["object"].get("status")]
    assert status[-1]["succeededAtRetry"] == 2


def test_a_child_name_taken_by_a_stranger_is_a_conflict_that_says_how_to_adopt(api):
    client.CoreV1Api(api.client()).create_namespaced_config_map(
        "default", {"metadata": {"name": "taken"}, "data": {"owner": "someone else"}}
    )
    worker = make_worker(api)
    parent = widget(api, "taken", size=1)
    uid = parent["metadata"]["uid"]
    result = worker.handle(SyncTask(uid, parent, []))
    assert (result.outcome, result.error_kind) == ("error", "conflict")
    assert result.error == (
        "ConfigMap default/taken already exists and is not a child of this parent; to adopt it, "
        f"label it operatord.io/parent-uid={uid} (kubectl label configmap taken -n default "
        f"operatord.io/parent-uid={uid}), or have the handler choose another name"
    )
    cm = client.CoreV1Api(api.client()).read_namespaced_config_map("taken", "default")
    assert cm.data == {"owner": "someone else"}  # the stranger is left alone


def test_a_child_that_never_settles_is_named_with_its_changing_fields(api):
    worker = make_worker(api)
    parent = widget(api, "named-restless", unstable=True)
    result = worker.handle(SyncTask(parent["metadata"]["uid"], parent, []))
    assert result.children_changed
    assert result.changing == (("v1", "ConfigMap", "default", "named-restless", ("data.at",)),)


def test_the_handler_never_sees_managed_fields_not_even_on_the_first_sync(api):
    worker = make_worker(api)
    parent = widget(api, "no-managed", size=1, reportManagedFields=True)
    assert parent["metadata"]["managedFields"]  # as the API server returns it, never slimmed
    result = worker.handle(SyncTask(parent["metadata"]["uid"], parent, []))
    assert result.outcome == "ok" and result.handler_calls == 2
    status = [w["object"]["status"] for w in result.written if w["object"].get("status")][-1]
    # the second run sees the parent after the finalizer write and the ConfigMap as created
    assert status["children"] == 1 and status["managedFields"] == []
