"""Tests of operatord.backoff: growth, cap, jitter bounds, reset, gauge, thread-safety."""

from __future__ import annotations

import random
import threading

import pytest

from operatord.backoff import Backoff


class _Extreme:
    """An rng whose uniform() returns one end of the interval, to pin the jitter bounds."""

    def __init__(self, high: bool) -> None:
        self.high = high

    def uniform(self, a: float, b: float) -> float:
        return b if self.high else a


def test_exponential_growth_without_jitter() -> None:
    b = Backoff(initial_seconds=0.5, max_seconds=300, multiplier=2.0, jitter=0)
    assert [b.next_delay("k") for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0]
    assert b.failures("k") == 6


def test_other_multiplier_and_cap() -> None:
    b = Backoff(initial_seconds=0.1, max_seconds=1.0, multiplier=1.5, jitter=0)
    delays = [b.next_delay("k") for _ in range(10)]
    assert delays[:3] == pytest.approx([0.1, 0.15, 0.225])
    assert delays[-1] == 1.0
    assert all(x <= y for x, y in zip(delays, delays[1:], strict=False))


def test_capped_at_max() -> None:
    b = Backoff(initial_seconds=1, max_seconds=10, multiplier=3, jitter=0)
    assert [b.next_delay("k") for _ in range(5)] == [1, 3, 9, 10, 10]


def test_huge_failure_counts_do_not_overflow() -> None:
    b = Backoff(initial_seconds=0.5, max_seconds=300, multiplier=2.0, jitter=0.5)
    assert b.base_delay(10**6) == 300.0
    assert b.base_delay(2000) == 300.0  # 2.0 ** 1999 would overflow a float
    b._failures["k"] = 10**9  # as if it had failed a billion times
    assert 150.0 <= b.next_delay("k") <= 300.0
    assert b.failures("k") == 10**9 + 1
    flat = Backoff(initial_seconds=2, max_seconds=5, multiplier=1.0, jitter=0)
    assert flat.base_delay(10**9) == 2.0


def test_jitter_bounds_are_exact() -> None:
    low = Backoff(initial_seconds=1, max_seconds=100, multiplier=2, jitter=0.5, rng=_Extreme(False))
    high = Backoff(initial_seconds=1, max_seconds=100, multiplier=2, jitter=0.5, rng=_Extreme(True))
    assert [low.next_delay("k") for _ in range(4)] == [0.5, 1.0, 2.0, 4.0]
    assert [high.next_delay("k") for _ in range(4)] == [1.5, 3.0, 6.0, 12.0]
    # At the cap the upper end of the jitter interval is cut back to max_seconds.
    for _ in range(10):
        low.next_delay("k"), high.next_delay("k")
    assert low.next_delay("k") == 50.0
    assert high.next_delay("k") == 100.0


def test_jittered_delays_stay_within_bounds_and_vary() -> None:
    b = Backoff(initial_seconds=1, max_seconds=8, multiplier=2, jitter=0.5, rng=random.Random(3))
    for n in range(1, 40):
        key = f"k{n}"
        for _ in range(n - 1):
            b.next_delay(key)
        base = b.base_delay(n)
        d = b.next_delay(key)
        assert base * 0.5 <= d <= min(8, base * 1.5)
    first = [Backoff(jitter=0.5, rng=random.Random(i)).next_delay("k") for i in range(20)]
    assert len(set(first)) > 10
    assert all(0.25 <= d <= 0.75 for d in first)


def test_rng_makes_delays_reproducible() -> None:
    a = Backoff(rng=random.Random(42))
    b = Backoff(rng=random.Random(42))
    assert [a.next_delay("k") for _ in range(5)] == [b.next_delay("k") for _ in range(5)]


def test_reset_forgets_key_and_restarts_at_initial() -> None:
    b = Backoff(initial_seconds=0.5, jitter=0)
    for _ in range(5):
        b.next_delay("k")
    b.reset("k")
    assert b.failures("k") == 0
    assert b.next_delay("k") == 0.5
    b.reset("never-seen")  # no error


def test_keys_are_independent_and_len_is_a_gauge() -> None:
    b = Backoff(jitter=0)
    assert len(b) == 0 and b.keys() == []
    b.next_delay("a")
    b.next_delay("a")
    b.next_delay("b")
    assert b.failures("a") == 2 and b.failures("b") == 1 and b.failures("c") == 0
    assert len(b) == 2 and sorted(b.keys()) == ["a", "b"]
    b.failures("c")  # a read does not create an entry
    assert len(b) == 2
    b.reset("a")
    assert len(b) == 1 and b.keys() == ["b"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial_seconds": 0},
        {"initial_seconds": -1},
        {"initial_seconds": 10, "max_seconds": 5},
        {"max_seconds": float("inf")},
        {"multiplier": 0.5},
        {"jitter": -0.1},
        {"jitter": 1.5},
    ],
)
def test_invalid_parameters_are_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)


def test_thread_safety_no_lost_failures() -> None:
    b = Backoff(jitter=0.5)
    threads, per_thread = 8, 2000
    start = threading.Barrier(threads)

    def hammer(i: int) -> None:
        start.wait()
        for n in range(per_thread):
            b.next_delay("shared")
            b.next_delay(f"own-{i}")
            if n % 2:
                b.reset(f"other-{i}")
            else:
                b.next_delay(f"other-{i}")

    workers = [threading.Thread(target=hammer, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=60)
        assert not t.is_alive()
    assert b.failures("shared") == threads * per_thread
    assert all(b.failures(f"own-{i}") == per_thread for i in range(threads))
    assert all(b.failures(f"other-{i}") == 0 for i in range(threads))
    assert len(b) == threads + 1
