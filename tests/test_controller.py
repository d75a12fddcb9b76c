"""The one-kind Controller against a fake pool and fake informers (callbacks driven directly),
and the pool's fair dispatch over several controllers."""

from __future__ import annotations

import time

import pytest

from operatord import fingerprint, protocol
from operatord.cache import Cache
from operatord.config import Config
from operatord.controller import MAX_WRITE_STREAK, Controller, ParentRecord
from operatord.inflight import InFlightLimit
from operatord.metrics import Metrics
from operatord.pool import InFlight, WorkerPool
from operatord.protocol import SyncResult
from operatord.queue import WorkQueue
from operatord.related import RelatedTypes
from operatord.shardwatch import Fence

CONFIG = Config.from_dict(
    {
        "name": "shop",
        "controllers": [
            {
                "name": "orders",
                "handler": "m:f",
                "parent": {"apiVersion": "shop.example.com/v1", "kind": "Order"},
                "children": [{"apiVersion": "v1", "kind": "ConfigMap"}],
                "backoff": {"initialSeconds": 5, "jitter": 0},
            }
        ],
    }
)


class Events:
    """A stand-in EventRecorder: what was posted, and about whom."""

    def __init__(self) -> None:
        self.posted: list[tuple[str, str, str]] = []
        self.forgotten: list[str] = []

    def post(self, parent: dict, reason: str, message: str, type_: str = "Warning") -> None:
        self.posted.append((parent["metadata"]["name"], reason, type_))

    def forget(self, uid: str) -> None:
        self.forgotten.append(uid)


def parent(name: str, rv: str = "1", uid: str | None = None) -> dict:
    return {
        "apiVersion": "shop.example.com/v1",
        "kind": "Order",
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": uid or f"u-{name}",
            "resourceVersion": rv,
        },
        "spec": {},
    }


def child(owner: str, name: str, rv: str = "1") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": "ns",
            "resourceVersion": rv,
            "labels": {"operatord.io/parent-uid": owner},
        },
    }


@pytest.fixture
def setup():
    cache = Cache()
    events = Events()
    metrics = Metrics(controller="shop")
    fence = Fence()
    ctl = Controller(
        CONFIG.controllers[0],
        cache=cache,
        related=RelatedTypes(CONFIG, lambda uids: None),
        events=events,  # type: ignore[arg-type]
        metrics=metrics,
        fence=fence,
        workers=1,
        capacity=4,
        slot_of=lambda uid: 0,
    )
    return ctl, cache, events, metrics, fence


def take(ctl: Controller) -> str | None:
    item = ctl.queue(0).get(timeout=0)
    return item.key if item else None


def ok(uid: str, **kw) -> SyncResult:
    return SyncResult(uid=uid, outcome=protocol.OK, **kw)


def test_only_cached_parents_are_queued_and_a_task_names_its_controller(setup):
    ctl, cache, *_ = setup
    ctl.enqueue("u-x")
    assert take(ctl) is None  # not cached: nothing to sync
    cache.upsert_parent(parent("x"))
    cache.upsert_child(child("u-x", "x"))
    ctl.enqueue("u-x")
    assert take(ctl) == "u-x"
    task = ctl.task("u-x", 0)
    assert task is not None and task.controller == "orders" and task.retry == 0
    assert [c["metadata"]["name"] for c in task.children] == ["x"]
    assert ctl.in_flight("u-x")


def test_a_change_while_in_flight_resyncs_but_the_echo_of_its_own_write_does_not(setup):
    ctl, cache, *_ = setup
    cache.upsert_parent(parent("x"))
    ctl.enqueue("u-x")
    take(ctl)
    p = ctl.task("u-x", 0).parent
    # The worker wrote a child; its watch event arrives while the parent is in flight.
    written = child("u-x", "x", rv="7")
    cache.upsert_child(dict(written))
    ctl.enqueue("u-x")
    ctl.completed(ok("u-x", written=({"action": "upsert", "object": written},)), p, 0)
    assert not ctl.in_flight("u-x")
    assert take(ctl) is None, "the echo of our own write caused no sync"
    # Someone else changes the child while the parent is in flight: synced again.
    ctl.enqueue("u-x")
    take(ctl)
    p = ctl.task("u-x", 0).parent
    cache.upsert_child(child("u-x", "x", rv="9"))
    ctl.enqueue("u-x")
    ctl.completed(ok("u-x"), p, 0)
    assert take(ctl) == "u-x"


def test_a_failure_backs_off_posts_an_event_and_counts_a_retry(setup):
    ctl, cache, events, metrics, _ = setup
    cache.upsert_parent(parent("x"))
    ctl.enqueue("u-x")
    take(ctl)
    p = ctl.task("u-x", 0).parent
    ctl.completed(SyncResult(uid="u-x", outcome=protocol.ERROR, error="boom"), p, 0)
    assert take(ctl) is None, "not at once: after its backoff"
    assert ctl.queue(0).num_requeues("u-x") == 1
    assert 4.0 < ctl.queue(0).next_due() <= 5.0  # the controller's own initialSeconds: 5
    assert events.posted == [("x", "SyncFailed", "Warning")]
    assert ctl.backing_off() == 1
    text = metrics.render().decode()
    assert 'operatord_retries_total{controller="orders"} 1.0' in text
    # The next task carries the failure count (request.retry).
    ctl.queue(0).add("u-x")
    take(ctl)
    assert ctl.task("u-x", 0).retry == 1


def test_a_crash_charges_the_culprit_and_a_return_requeues_uncharged(setup):
    ctl, cache, events, metrics, _ = setup
    for n in ("a", "b"):
        cache.upsert_parent(parent(n))
        ctl.enqueue(f"u-{n}")
    take(ctl), take(ctl)
    pa, _ = ctl.task("u-a", 0).parent, ctl.task("u-b", 0)
    ctl.crashed("u-a", pa, 0, -9, 1)
    ctl.returned("u-b", 0)
    assert take(ctl) == "u-b", "the innocent one goes again at once"
    assert take(ctl) is None
    assert ctl.queue(0).num_requeues("u-a") == 1 and ctl.queue(0).num_requeues("u-b") == 0
    assert events.posted == [("a", "WorkerKilled", "Warning")]
    text = metrics.render().decode()
    assert 'operatord_syncs_total{controller="orders",result="crash"} 1.0' in text


def test_a_handler_that_never_converges_is_slowed_down(setup):
    ctl, cache, *_ = setup
    cache.upsert_parent(parent("x"))
    ctl.enqueue("u-x")
    for n in range(MAX_WRITE_STREAK + 1):
        assert take(ctl) == "u-x", n
        p = ctl.task("u-x", 0).parent
        ctl.completed(ok("u-x", children_changed=True), p, 0)
    assert take(ctl) is None, "after the streak: its backoff, not at once"
    assert ctl.queue(0).num_requeues("u-x") == 1


def test_the_fence_holds_back_parents_of_shards_not_held(setup):
    ctl, cache, _, _, fence = setup
    fence.shards, fence.sharded = 4, True
    fence.shard_deadline = lambda k: time.monotonic() + 10
    cache.upsert_parent(parent("x"))
    k = fence.shard("u-x")
    ctl.enqueue("u-x")
    take(ctl)
    assert ctl.task("u-x", 0) is None and take(ctl) is None  # not ours: dropped
    fence.owned.add(k)
    fence.draining.add(k)
    ctl.enqueue("u-x")
    take(ctl)
    assert ctl.task("u-x", 0) is None
    assert 0 < ctl.queue(0).next_due() <= 0.5, "held but draining: retried shortly"
    fence.draining.discard(k)
    ctl.queue(0).add("u-x")
    take(ctl)
    task = ctl.task("u-x", 0)
    assert task is not None and task.shard == k


def test_forget_drops_the_queue_state_and_the_record(setup):
    ctl, cache, events, *_ = setup
    cache.upsert_parent(parent("x"))
    ctl.enqueue("u-x")
    ctl.forget("u-x")
    assert take(ctl) is None and "u-x" not in ctl.records and events.forgotten == ["u-x"]


# ---- fair dispatch -------------------------------------------------------------------------


class Feed:
    def __init__(self, name: str, keys: int, limit: int = 100) -> None:
        self.name = name
        self.limit = limit
        self.q: WorkQueue[str] = WorkQueue()
        for i in range(keys):
            self.q.add(f"{name}-{i}")

    def queue(self, slot: int) -> WorkQueue[str]:
        return self.q


def pool_with(*feeds: Feed, capacity: int = 8) -> WorkerPool:
    pool = WorkerPool(
        CONFIG.to_dict(),
        {},
        None,
        workers=1,
        capacity=capacity,
        task_deadline=60,
        metrics=Metrics(),
        fence_ok=lambda: True,
        lease_updates=lambda: [],
        credentials=lambda: {},
    )
    for f in feeds:
        pool.add_feed(f)  # type: ignore[arg-type]
    return pool


def test_a_storm_in_one_controller_does_not_starve_another():
    storm, calm = Feed("storm", 5000), Feed("calm", 2)
    pool = pool_with(storm, calm)
    taken = [f.name for f, _ in pool._take(pool.slots[0])]
    assert taken.count("calm") == 2, taken  # both of its parents in the first batch
    # one turn each per round (the round's first turn rotates)
    assert sorted(taken[:2]) == sorted(taken[2:4]) == ["calm", "storm"], taken
    assert len(taken) == 8


def test_a_free_place_goes_to_the_controller_holding_the_fewest_parents():
    storm, calm = Feed("storm", 5000), Feed("calm", 3)
    pool = pool_with(storm, calm)
    slot = pool.slots[0]
    for i in range(7):  # the storm fills 7 of 8 places; one is free
        slot.inflight[f"held-{i}"] = InFlight(f"held-{i}", storm, {}, False)  # type: ignore[arg-type]
    slot.per_feed["storm"] = 7
    for turn in range(2):  # whichever controller the rotation would have asked first
        slot.turn = turn
        taken = pool._take(slot)
        assert [f.name for f, _ in taken] == ["calm"], taken
        calm.q.done(taken[0][1].key)
        calm.q.add(taken[0][1].key)
    for i in range(2, 7):
        del slot.inflight[f"held-{i}"]
    slot.per_feed.update(storm=2, calm=0)  # 6 free: calm's 3 first, then the storm's
    assert [f.name for f, _ in pool._take(slot)] == [
        "calm",
        "calm",
        "storm",
        "calm",
        "storm",
        "storm",
    ]


def test_a_controller_holding_nothing_takes_one_place_past_the_adaptive_limit():
    storm, calm = Feed("storm", 5000), Feed("calm", 3)
    pool = pool_with(storm, calm)
    slot = pool.slots[0]
    slot.limit = InFlightLimit(8, floor=2)
    slot.limit._limit = 2  # adapted down: the API server queues
    for i in range(2):
        slot.inflight[f"held-{i}"] = InFlight(f"held-{i}", storm, {}, False)  # type: ignore[arg-type]
    slot.per_feed["storm"] = 2
    slot.ready = True  # (no process in this test)
    assert pool._may_dispatch(slot), "below inFlightPerWorker"
    taken = pool._take(slot)
    assert [f.name for f, _ in taken] == ["calm"], "one place, not waiting for the storm"
    slot.inflight["c"] = InFlight("c", calm, {}, False)  # type: ignore[arg-type]
    slot.per_feed["calm"] = 1
    started = time.monotonic()
    assert pool._take(slot) == [], "past the limit only while holding nothing"
    # Ready work without room: it waits for a result (``wake``), it does not spin.
    assert time.monotonic() - started >= 0.4


def test_a_controller_holds_at_most_its_share_of_a_worker():
    greedy = Feed("greedy", 100, limit=3)
    pool = pool_with(greedy)
    pool.slots[0].per_feed["greedy"] = 2
    assert len(pool._take(pool.slots[0])) == 1


# ---- skipUnchanged: the fingerprint its status records -----------------------------------------


def converged(ctl: Controller, p: dict, children: list[dict], related=(), selection=None) -> dict:
    """``p`` with the status a converged sync of these inputs leaves."""
    value = fingerprint.of(ctl.digest, p, children, selection, related)
    return {**p, "status": {"ready": True, fingerprint.FIELD: fingerprint.record(value, selection)}}


def skipped(metrics: Metrics) -> float:
    text = metrics.render().decode()
    for line in text.splitlines():
        if line.startswith('operatord_syncs_skipped_total{controller="orders"}'):
            return float(line.split()[-1])
    return 0.0


def test_a_parent_whose_inputs_match_its_record_is_skipped_and_resynced_later(setup):
    ctl, cache, _, metrics, _ = setup
    c = child("u-x", "x", rv="3")
    cache.upsert_parent(converged(ctl, parent("x"), [c]))
    cache.upsert_child(c)
    ctl.enqueue("u-x")
    assert take(ctl) == "u-x"
    assert ctl.task("u-x", 0) is None, "not sent to a worker"
    assert not ctl.in_flight("u-x") and skipped(metrics) == 1
    # Its periodic resync is scheduled (the default 600 s) and is skipped in turn.
    q = ctl.queue(0)
    assert len(q) == 0 and 500 < q.next_due() <= 660


def test_each_change_to_an_input_makes_the_parent_sync(setup):
    ctl, cache, _, metrics, _ = setup
    c = child("u-x", "x", rv="3")
    record = converged(ctl, parent("x"), [c])
    cache.upsert_parent(record)
    cache.upsert_child(c)
    # A child changed by hand: a new resourceVersion.
    cache.upsert_child(child("u-x", "x", rv="4"))
    ctl.enqueue("u-x")
    take(ctl)
    assert ctl.task("u-x", 0) is not None
    ctl.completed(ok("u-x"), record, 0)
    # A spec change.
    cache.upsert_child(c | {"metadata": {**c["metadata"], "resourceVersion": "5"}})
    p = converged(ctl, parent("x", rv="6"), [cache.snapshot("u-x")[1][0]])
    cache.upsert_parent(p)
    ctl.enqueue("u-x")
    take(ctl)
    assert ctl.task("u-x", 0) is None  # the record matches again
    cache.upsert_parent(
        {**p, "metadata": {**p["metadata"], "resourceVersion": "7"}, "spec": {"a": 1}}
    )
    ctl.enqueue("u-x")
    take(ctl)
    assert ctl.task("u-x", 0) is not None
    assert skipped(metrics) == 1


def test_a_status_only_change_is_skipped(setup):
    ctl, cache, _, metrics, _ = setup
    p = converged(ctl, parent("x"), [])
    cache.upsert_parent(p)
    edited = {**p, "metadata": {**p["metadata"], "resourceVersion": "2"}}
    edited["status"] = {**p["status"], "ready": False}
    cache.upsert_parent(edited)
    ctl.enqueue("u-x")
    take(ctl)
    assert ctl.task("u-x", 0) is None and skipped(metrics) == 1


@pytest.mark.parametrize(
    "result",
    [
        SyncResult(uid="u-x", outcome=protocol.ERROR, error="boom"),
        SyncResult(uid="u-x", outcome=protocol.OK, children_changed=True),
        SyncResult(uid="u-x", outcome=protocol.OK, resync_after=1.0),
        SyncResult(uid="u-x", outcome=protocol.OK, reselect=True),
    ],
    ids=["error", "children-changed", "resync-after", "reselect"],
)
def test_a_parent_whose_last_sync_did_not_converge_is_never_skipped(setup, result):
    ctl, cache, *_ = setup
    p = converged(ctl, parent("x"), [])
    cache.upsert_parent(p)
    ctl.queue(0).add("u-x")
    take(ctl)
    ctl.records["u-x"] = ParentRecord(must_sync=True)  # this first sync is not skipped
    assert ctl.task("u-x", 0) is not None
    ctl.completed(result, p, 0)
    ctl.queue(0).forget("u-x")
    ctl.queue(0).add("u-x")
    assert take(ctl) == "u-x"
    assert ctl.task("u-x", 0) is not None, "synced, not skipped"
    ctl.completed(ok("u-x"), p, 0)  # converged now
    ctl.queue(0).add("u-x")
    take(ctl)
    assert ctl.task("u-x", 0) is None


def test_a_returned_or_crashed_parent_syncs_again(setup):
    ctl, cache, *_ = setup
    for n in ("a", "b"):
        cache.upsert_parent(parent(n))
        ctl.queue(0).add(f"u-{n}")
    take(ctl), take(ctl)
    pa = ctl.task("u-a", 0).parent
    ctl.task("u-b", 0)
    for n in ("a", "b"):  # meanwhile, their status records these very inputs
        cache.upsert_parent(converged(ctl, parent(n, rv="2"), []))
    ctl.crashed("u-a", pa, 0, -9, 0)
    ctl.returned("u-b", 0)
    assert take(ctl) == "u-b"
    assert ctl.task("u-b", 0) is not None
    ctl.queue(0).forget("u-a")
    ctl.queue(0).add("u-a")  # not after its backoff: now
    assert take(ctl) == "u-a"
    assert ctl.task("u-a", 0) is not None


def test_a_parent_being_deleted_is_never_skipped(setup):
    ctl, cache, *_ = setup
    p = parent("x")
    p["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    cache.upsert_parent(converged(ctl, p, []))
    ctl.enqueue("u-x")
    take(ctl)
    assert ctl.task("u-x", 0) is not None


def test_skip_unchanged_false_always_syncs():
    cfg = Config.from_dict(
        {
            "name": "shop",
            "skipUnchanged": False,
            "controllers": [
                {
                    "name": "orders",
                    "handler": "m:f",
                    "parent": {"apiVersion": "shop.example.com/v1", "kind": "Order"},
                }
            ],
        }
    )
    cache = Cache()
    ctl = Controller(
        cfg.controllers[0],
        cache=cache,
        related=RelatedTypes(cfg, lambda uids: None),
        events=Events(),  # type: ignore[arg-type]
        metrics=Metrics(controller="shop"),
        fence=Fence(),
        workers=1,
        capacity=4,
        slot_of=lambda uid: 0,
    )
    assert ctl.digest == ""
    p = parent("x")
    p["status"] = {fingerprint.FIELD: fingerprint.record(fingerprint.of("", p, []), None)}
    cache.upsert_parent(p)
    ctl.enqueue("u-x")
    take(ctl)
    assert ctl.task("u-x", 0) is not None


def test_on_a_restart_the_recorded_selection_is_restored_and_its_objects_counted():
    cfg = Config.from_dict(
        {
            "name": "shop",
            "controllers": [
                {
                    "name": "orders",
                    "handler": "m:f",
                    "parent": {"apiVersion": "shop.example.com/v1", "kind": "Order"},
                    "related": [{"apiVersion": "v1", "kind": "Secret"}],
                }
            ],
        }
    )
    cache = Cache()
    enqueued: list[set[str]] = []
    related = RelatedTypes(cfg, enqueued.append)
    related.index.namespaced[("v1", "Secret")] = True
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "tls", "namespace": "ns", "resourceVersion": "5"},
    }
    related.index.upsert(dict(secret))
    metrics = Metrics(controller="shop")
    ctl = Controller(
        cfg.controllers[0],
        cache=cache,
        related=related,
        events=Events(),  # type: ignore[arg-type]
        metrics=metrics,
        fence=Fence(),
        workers=1,
        capacity=4,
        slot_of=lambda uid: 0,
    )
    selection = (("v1", "Secret", ("tls",), None, None),)
    cache.upsert_parent(converged(ctl, parent("x"), [], [secret], selection))
    ctl.enqueue("u-x")
    take(ctl)
    assert ctl.task("u-x", 0) is None, "a fresh leader skips it"
    assert related.index.selection("u-x") == selection
    # The Secret changes: the parent is routed again and, its input changed, synced.
    changed = {**secret, "metadata": {**secret["metadata"], "resourceVersion": "6"}}
    related._on_event("MODIFIED", changed)
    assert enqueued == [{"u-x"}]
    ctl.enqueue_related("u-x")
    take(ctl)
    task = ctl.task("u-x", 0)
    assert task is not None and task.selection == selection
