"""Tests of operatord.queue.WorkQueue (client-go workqueue semantics plus two lanes)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import pytest

from operatord.backoff import Backoff
from operatord.queue import EVENT, RESYNC, Item, WorkQueue
from operatord.testing.waiting import wait_for as _wait_for


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


SIMULATED_SYNC_SECONDS = 0.0005  # how long a stress-test "sync" holds its key


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until `condition()` is true, failing after `timeout` seconds."""
    _wait_for(condition, timeout, 0.001)


def take(q: WorkQueue) -> Item:
    item = q.get(timeout=0)
    assert item is not None, "expected a ready key"
    return item


def keys_now(q: WorkQueue) -> list:
    """Hand out and finish every key that is ready now; return them in order."""
    out = []
    while (item := q.get(timeout=0)) is not None:
        out.append(item.key)
        q.done(item.key)
    return out


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def q(clock: FakeClock) -> WorkQueue:
    return WorkQueue(clock=clock, backoff=Backoff(initial_seconds=1, jitter=0))


# -- coalescing, order, dirty -----------------------------------------------------------------


def test_adds_coalesce(q: WorkQueue) -> None:
    for _ in range(5):
        q.add("a")
    q.add("b")
    q.add("a")
    assert len(q) == 2
    assert keys_now(q) == ["a", "b"]
    assert len(q) == 0


def test_fifo_order(q: WorkQueue) -> None:
    for k in "dcab":
        q.add(k)
    assert keys_now(q) == list("dcab")


def test_add_while_processing_is_requeued_on_done(q: WorkQueue) -> None:
    q.add("a")
    item = take(q)
    assert item.key == "a" and item.lane == EVENT
    q.add("a")
    q.add("a")
    assert len(q) == 0, "a processing key is not ready again before done"
    assert q.get(timeout=0) is None
    q.done("a")
    assert len(q) == 1
    assert take(q).key == "a"
    q.done("a")
    assert q.get(timeout=0) is None, "dirty adds coalesce into one requeue"


def test_done_without_dirty_does_not_requeue(q: WorkQueue) -> None:
    q.add("a")
    take(q)
    q.done("a")
    assert len(q) == 0 and q.processing_count() == 0
    q.done("a")  # not processing: ignored
    q.done("never")
    assert len(q) == 0


def test_get_timeout_returns_none(q: WorkQueue) -> None:
    assert q.get(timeout=0) is None
    assert q.get(timeout=0.01) is None


def test_never_handed_out_concurrently_and_no_add_lost() -> None:
    """Stress: 1 producer, 8 consumers. No key is ever processed by two consumers at once, and
    every add is followed by a processing of the key that started after it (no lost event)."""
    q = WorkQueue()
    keys = [f"k{i}" for i in range(20)]
    version = dict.fromkeys(keys, 0)  # bumped by the producer before each add
    seen = dict.fromkeys(keys, -1)  # version observed when processing of the key started
    in_flight: set[str] = set()
    violations: list[str] = []
    state = threading.Lock()
    stop_producing = threading.Event()
    rng = random.Random(1)

    def producer() -> None:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            k = rng.choice(keys)
            with state:
                version[k] += 1
            if rng.random() < 0.1:
                q.add_after(k, rng.random() * 0.01, lane=rng.choice([EVENT, RESYNC]))
            else:
                q.add(k)
        stop_producing.set()

    def consumer() -> None:
        while (item := q.get()) is not None:
            with state:
                if item.key in in_flight:
                    violations.append(item.key)
                in_flight.add(item.key)
                seen[item.key] = version[item.key]
            if rng.random() < 0.3:
                time.sleep(SIMULATED_SYNC_SECONDS)  # provokes dirty re-adds
            with state:
                in_flight.discard(item.key)
            q.done(item.key)

    consumers = [threading.Thread(target=consumer, daemon=True) for _ in range(8)]
    for t in consumers:
        t.start()
    prod = threading.Thread(target=producer, daemon=True)
    prod.start()
    prod.join(timeout=30)
    assert stop_producing.is_set()
    wait_for(
        lambda: len(q) == 0 and q.processing_count() == 0 and q.delayed_count() == 0,
        timeout=30,
    )
    q.shut_down()
    for t in consumers:
        t.join(timeout=10)
        assert not t.is_alive()
    assert violations == []
    assert seen == version, "some add was not followed by a processing of its key"


# -- delayed adds -----------------------------------------------------------------------------


def test_delayed_adds_become_ready_in_due_order(q: WorkQueue, clock: FakeClock) -> None:
    q.add_after("c", 3)
    q.add_after("a", 1)
    q.add_after("b", 2)
    assert len(q) == 0 and q.delayed_count() == 3
    assert q.get(timeout=0) is None
    clock.advance(1.5)
    assert keys_now(q) == ["a"]
    clock.advance(10)
    assert keys_now(q) == ["b", "c"]
    assert q.delayed_count() == 0


def test_add_after_non_positive_delay_is_immediate(q: WorkQueue) -> None:
    q.add_after("a", 0)
    q.add_after("b", -5)
    assert q.delayed_count() == 0
    assert keys_now(q) == ["a", "b"]


@pytest.mark.parametrize("order", [(10, 5), (5, 10)])
def test_earliest_due_time_wins(q: WorkQueue, clock: FakeClock, order: tuple[int, int]) -> None:
    for delay in order:
        q.add_after("k", delay)
    assert q.delayed_count() == 1
    clock.advance(4.9)
    assert keys_now(q) == []
    clock.advance(0.1)
    assert keys_now(q) == ["k"]
    clock.advance(100)
    assert keys_now(q) == [], "the later delayed add was dropped"


def test_equal_due_times_prefer_event_lane(q: WorkQueue, clock: FakeClock) -> None:
    q.add_after("k", 5, lane=RESYNC)
    q.add_after("k", 5, lane=EVENT)
    q.add_after("j", 5, lane=EVENT)
    q.add_after("j", 5, lane=RESYNC)
    clock.advance(5)
    lanes = {}
    while (item := q.get(timeout=0)) is not None:
        lanes[item.key] = item.lane
        q.done(item.key)
    assert lanes == {"k": EVENT, "j": EVENT}


def test_delayed_add_is_independent_of_immediate_add(q: WorkQueue, clock: FakeClock) -> None:
    q.add_after("k", 5)
    q.add("k")
    assert keys_now(q) == ["k"]
    clock.advance(5)
    assert keys_now(q) == ["k"], "resync_after still fires after an event-driven sync"


def test_delayed_add_due_while_processing_marks_dirty(q: WorkQueue, clock: FakeClock) -> None:
    q.add("k")
    take(q)
    q.add_after("k", 1)
    clock.advance(2)
    assert q.get(timeout=0) is None
    assert q.delayed_count() == 0
    q.done("k")
    assert keys_now(q) == ["k"]


def test_blocked_get_wakes_when_delayed_key_falls_due() -> None:
    q = WorkQueue()  # real clock: the waiter must compute its own timed wait
    got: list[Item | None] = []
    waiter = threading.Thread(target=lambda: got.append(q.get(timeout=30)), daemon=True)
    waiter.start()
    wait_for(lambda: waiter.is_alive())
    q.add_after("late", 60)  # the waiter now waits towards this one ...
    q.add_after("soon", 0.02)  # ... and must be woken to wait for the earlier one instead
    waiter.join(timeout=10)
    assert not waiter.is_alive()
    assert [i.key for i in got if i] == ["soon"]
    assert got[0].waited >= 0


def test_blocked_get_wakes_on_add() -> None:
    q = WorkQueue()
    got: list[Item | None] = []
    waiter = threading.Thread(target=lambda: got.append(q.get()), daemon=True)
    waiter.start()
    q.add("x")
    waiter.join(timeout=10)
    assert not waiter.is_alive() and got[0] is not None and got[0].key == "x"


def test_many_delayed_keys(clock: FakeClock) -> None:
    q = WorkQueue(clock=clock)
    n = 100_000
    rng = random.Random(5)
    delays = {f"k{i}": rng.uniform(1, 1000) for i in range(n)}
    for k, d in delays.items():
        q.add_after(k, d, lane=RESYNC)
    assert q.delayed_count() == n
    clock.advance(500)
    expected = sorted((d, k) for k, d in delays.items() if d <= 500)
    got = keys_now(q)
    assert got == [k for _, k in expected]
    assert q.delayed_count() == n - len(expected)


def test_heap_does_not_grow_with_superseded_delayed_adds(q: WorkQueue, clock: FakeClock) -> None:
    for i in range(10_000):
        q.add_after("k", 100_000 - i)
    assert q.delayed_count() == 1
    assert len(q._heap) <= 2 * 1 + 65
    for i in range(1000):
        q.add_after(f"d{i}", 10)
        q.discard(f"d{i}")
    assert len(q._heap) <= 2 * 1 + 65


def test_unknown_lane_rejected(q: WorkQueue) -> None:
    with pytest.raises(ValueError):
        q.add_after("k", 1, lane="urgent")  # type: ignore[arg-type]


# -- lanes ------------------------------------------------------------------------------------


def test_resync_lane_never_served_before_ready_event_work(q: WorkQueue, clock: FakeClock) -> None:
    q.add_after("r1", 0, lane=RESYNC)
    q.add_after("r2", 1, lane=RESYNC)
    q.add("e1")
    clock.advance(1)  # r2 now due, before e2 is added
    q.add("e2")
    got = []
    while (item := q.get(timeout=0)) is not None:
        got.append((item.key, item.lane))
        q.done(item.key)
    assert got == [("e1", EVENT), ("e2", EVENT), ("r1", RESYNC), ("r2", RESYNC)]
    assert q.ready_count(RESYNC) == 0


def test_resync_flood_does_not_delay_events(q: WorkQueue, clock: FakeClock) -> None:
    for i in range(1000):
        q.add_after(f"r{i}", 0, lane=RESYNC)
    taken = [take(q).key for _ in range(10)]
    q.add("event")
    assert take(q).key == "event"
    for k in taken:
        q.done(k)


def test_add_promotes_resync_key_to_event_lane(q: WorkQueue, clock: FakeClock) -> None:
    q.add_after("r", 0, lane=RESYNC)
    q.add("e")
    clock.advance(2)
    q.add("r")  # promotion to the end of the event lane, keeping its ready time
    assert q.ready_count(EVENT) == 2 and q.ready_count(RESYNC) == 0
    first, second = take(q), take(q)
    assert (first.key, first.lane) == ("e", EVENT)
    assert (second.key, second.lane) == ("r", EVENT)
    assert second.waited == pytest.approx(2.0)


def test_resync_add_does_not_demote_event_key(q: WorkQueue) -> None:
    q.add("k")
    q.add_after("k", 0, lane=RESYNC)
    item = take(q)
    assert (item.key, item.lane) == ("k", EVENT)
    assert q.get(timeout=0) is None


def test_dirty_key_takes_the_strongest_lane(q: WorkQueue) -> None:
    q.add("k")
    take(q)
    q.add_after("k", 0, lane=RESYNC)
    q.add("k")
    q.done("k")
    assert take(q).lane == EVENT
    q.done("k")
    q.add("k")
    take(q)
    q.add_after("k", 0, lane=RESYNC)
    q.done("k")
    assert take(q).lane == RESYNC


# -- rate limiting ----------------------------------------------------------------------------


def test_rate_limited_adds_back_off_and_forget_resets(q: WorkQueue, clock: FakeClock) -> None:
    delays = []
    for _ in range(3):
        delays.append(q.add_rate_limited("k"))
        clock.advance(delays[-1] - 0.01)
        assert keys_now(q) == []
        clock.advance(0.01)
        assert keys_now(q) == ["k"]
    assert delays == [1.0, 2.0, 4.0]
    assert q.num_requeues("k") == 3
    q.forget("k")
    assert q.num_requeues("k") == 0
    assert q.add_rate_limited("k") == 1.0


def test_default_backoff_is_used() -> None:
    q = WorkQueue()
    d = q.add_rate_limited("k")
    assert 0.25 <= d <= 0.75 and q.num_requeues("k") == 1 and q.delayed_count() == 1


# -- discard ----------------------------------------------------------------------------------


def test_discard_drops_ready_and_delayed_entries(q: WorkQueue, clock: FakeClock) -> None:
    q.add("a")
    q.add_after("b", 1)
    q.add_after("c", 0, lane=RESYNC)
    q.add_rate_limited("d")
    for k in "abcd":
        q.discard(k)
    assert len(q) == 0 and q.delayed_count() == 0
    assert q.num_requeues("d") == 0 and len(q.backoff) == 0
    clock.advance(100)
    assert keys_now(q) == []
    q.discard("unknown")


def test_discard_in_flight_key_only_cancels_dirty_readd(q: WorkQueue) -> None:
    q.add("a")
    take(q)
    q.add("a")
    q.discard("a")
    assert q.processing_count() == 1 and q.is_processing("a")
    q.done("a")
    assert keys_now(q) == []
    assert q.processing_count() == 0


# -- shutdown ---------------------------------------------------------------------------------


def test_shutdown_wakes_all_waiters() -> None:
    q = WorkQueue()
    results: list[Item | None] = []
    waiters = [
        threading.Thread(target=lambda: results.append(q.get()), daemon=True) for _ in range(4)
    ]
    waiters.append(threading.Thread(target=lambda: results.append(q.get(timeout=60)), daemon=True))
    q.add_after("far", 3600)  # some waiters block on a timed wait
    for t in waiters:
        t.start()
    q.shut_down()
    for t in waiters:
        t.join(timeout=10)
        assert not t.is_alive()
    assert results == [None] * 5


def test_after_shutdown_get_returns_none_and_adds_are_ignored(q: WorkQueue) -> None:
    q.add("a")
    q.add("b")
    take(q)
    q.shut_down()
    assert q.shutting_down
    assert q.get() is None, "returns immediately even though b is ready"
    q.add("c")
    q.add_after("d", 1)
    assert q.add_rate_limited("e") == 0.0 and q.num_requeues("e") == 0
    q.add("a")  # would be dirty; ignored
    q.done("a")
    assert len(q) == 1 and q.delayed_count() == 0 and q.processing_count() == 0


def test_drain_waits_for_in_flight_keys(q: WorkQueue) -> None:
    q.add("a")
    q.add("b")
    take(q)
    take(q)
    assert q.drain(timeout=0.01) is False
    result: list[bool] = []
    drainer = threading.Thread(target=lambda: result.append(q.drain(timeout=30)), daemon=True)
    drainer.start()
    q.done("a")
    assert drainer.is_alive() or result == [False]
    q.done("b")
    drainer.join(timeout=10)
    assert result == [True]
    assert q.get() is None


# -- wait time and introspection --------------------------------------------------------------


def test_wait_time_reported(q: WorkQueue, clock: FakeClock) -> None:
    q.add("a")
    clock.advance(2.5)
    assert take(q).waited == pytest.approx(2.5)
    # A delayed key counts from its due time, not from add_after.
    q.add_after("b", 3)
    clock.advance(4)
    assert take(q).waited == pytest.approx(1.0)
    # A key re-added while processing counts from that add (it waited behind its own sync).
    clock.advance(1)
    q.add("a")
    clock.advance(2)
    q.done("a")
    clock.advance(1)
    assert take(q).waited == pytest.approx(3.0)
    # Coalesced adds keep the first ready time.
    q.add("c")
    clock.advance(1)
    q.add("c")
    assert take(q).waited == pytest.approx(1.0)


def test_introspection_counts(q: WorkQueue, clock: FakeClock) -> None:
    q.add("a")
    q.add_after("r", 0, lane=RESYNC)
    q.add_after("later", 5)
    assert (len(q), q.ready_count(EVENT), q.ready_count(RESYNC)) == (2, 1, 1)
    assert q.delayed_count() == 1 and q.processing_count() == 0
    take(q)
    assert len(q) == 1 and q.processing_count() == 1
    clock.advance(5)
    assert len(q) == 2 and q.delayed_count() == 0
    assert "processing=1" in repr(q)


def test_last_get_time_and_stalled_for(q: WorkQueue, clock: FakeClock) -> None:
    assert q.last_get_time is None and q.stalled_for() == 0.0
    q.add("a")
    clock.advance(7)
    assert q.stalled_for() == pytest.approx(7.0)
    take(q)
    assert q.last_get_time == clock.now
    assert q.stalled_for() == 0.0, "nothing ready"
    q.add("b")
    q.add("c")
    clock.advance(3)
    take(q)
    clock.advance(4)
    assert q.stalled_for() == pytest.approx(4.0), "measured from the last get"
    take(q)
    # A delayed key that fell due counts from its due time even if nobody looked meanwhile.
    q.add_after("d", 10)
    clock.advance(30)
    assert q.stalled_for() == pytest.approx(20.0)
    q.discard("d")
    assert q.stalled_for() == 0.0


def test_ready_keys_lists_both_lanes_and_due_delayed_keys():
    q = WorkQueue(clock=FakeClock())
    q.add("a")
    q.add_after("r", 0, lane=RESYNC)
    q.add_after("later", 3600)
    assert sorted(q.ready_keys()) == ["a", "r"]
    item = q.get(timeout=0)
    assert item is not None and item.key not in q.ready_keys()  # handed out: not ready
