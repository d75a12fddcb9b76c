"""TurnLock: mutual exclusion with waiters served in turn (keys round-robin, FIFO per key)."""

from __future__ import annotations

import threading

import pytest

from operatord.testing import wait_for
from operatord.turns import TurnLock


def _queue_waiters(lock: TurnLock, names: list[tuple[str, str]], order: list[str]) -> list:
    """Start one thread per (name, key), each queued before the next starts; each records its
    name once it holds the lock, then releases it."""
    threads = []
    for name, key in names:

        def run(name: str = name, key: str = key) -> None:
            assert lock.acquire(key, tick=0.01)
            order.append(name)
            lock.release()

        before = sum(lock.waiting().values())
        t = threading.Thread(target=run, daemon=True)
        t.start()
        threads.append(t)
        wait_for(lambda before=before: sum(lock.waiting().values()) == before + 1, timeout=5)
    return threads


def test_keys_take_turns_and_each_key_is_first_come_first_served() -> None:
    lock = TurnLock()
    assert lock.acquire("storm")
    order: list[str] = []
    threads = _queue_waiters(
        lock,
        [("s1", "storm"), ("s2", "storm"), ("s3", "storm"), ("c1", "calm"), ("s4", "storm")],
        order,
    )
    assert lock.waiting() == {"storm": 4, "calm": 1}
    lock.release()
    for t in threads:
        t.join(5)
    # calm, queued behind four storm calls while storm holds the lock, goes next.
    assert order == ["c1", "s1", "s2", "s3", "s4"]
    assert lock.waiting() == {}
    assert lock.acquire("x")  # free again
    lock.release()


def test_three_keys_rotate() -> None:
    lock = TurnLock()
    assert lock.acquire()
    order: list[str] = []
    threads = _queue_waiters(
        lock, [("a1", "a"), ("a2", "a"), ("b1", "b"), ("b2", "b"), ("c1", "c")], order
    )
    lock.release()
    for t in threads:
        t.join(5)
    assert order == ["a1", "b1", "c1", "a2", "b2"]


def test_a_waiter_that_gives_up_leaves_without_the_lock() -> None:
    lock = TurnLock()
    assert lock.acquire("a")
    give_up = threading.Event()
    got: list[bool] = []
    t = threading.Thread(
        target=lambda: got.append(lock.acquire("b", tick=0.01, abandon=give_up.is_set)),
        daemon=True,
    )
    t.start()
    wait_for(lambda: lock.waiting() == {"b": 1}, timeout=5)
    give_up.set()
    t.join(5)
    assert got == [False]
    assert lock.waiting() == {}
    lock.release()
    assert lock.acquire("c")  # nobody was handed the lock by mistake
    lock.release()


def test_waiting_keeps_its_place_across_ticks() -> None:
    """A waiter that wakes every tick to ask whether to give up does not lose its place."""
    lock = TurnLock()
    assert lock.acquire()
    order: list[str] = []
    checks = threading.Semaphore(0)

    def first() -> None:
        def abandon() -> bool:
            checks.release()
            return False

        assert lock.acquire("a", tick=0.001, abandon=abandon)
        order.append("first")
        lock.release()

    t1 = threading.Thread(target=first, daemon=True)
    t1.start()
    wait_for(lambda: lock.waiting() == {"a": 1}, timeout=5)
    for _ in range(5):  # it has woken and kept waiting several times
        assert checks.acquire(timeout=5)
    threads = _queue_waiters(lock, [("second", "a")], order)
    lock.release()
    for t in [t1, *threads]:
        t.join(5)
    assert order == ["first", "second"]


def test_release_of_an_unheld_lock_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        TurnLock().release()


def test_mutual_exclusion_under_contention() -> None:
    lock = TurnLock()
    inside = [0]
    worst = [0]

    def run(key: str) -> None:
        for _ in range(200):
            assert lock.acquire(key, tick=0.01)
            inside[0] += 1
            worst[0] = max(worst[0], inside[0])
            inside[0] -= 1
            lock.release()

    threads = [threading.Thread(target=run, args=(f"k{i % 3}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert worst[0] == 1
    assert lock.waiting() == {}
