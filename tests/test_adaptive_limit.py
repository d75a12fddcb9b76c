"""InFlightLimit: a worker's in-flight limit follows its API requests' queueing (Vegas)."""

from __future__ import annotations

from operatord.inflight import InFlightLimit


def feed(limit: InFlightLimit, latency_at, results: int, t0: float = 0.0) -> list[int]:
    """``results`` one-request results whose latency is ``latency_at(limit)``; the limit after each."""
    seen = []
    for i in range(results):
        limit.observe(1, latency_at(limit.limit), now=t0 + i * 0.001)
        seen.append(limit.limit)
    return seen


def test_a_server_that_queues_our_requests_shrinks_the_limit_to_where_they_stop_queueing():
    # A saturated server: each request waits for every other request in flight (1 ms each).
    limit = InFlightLimit(16)
    limit.observe(1, 0.001, now=0)  # an unloaded moment: the base latency
    seen = feed(limit, lambda n: 0.001 * n, 2000, t0=0.01)
    assert seen[-1] < 16
    # latency n ms against a 1 ms base: queued = n - 1, held between alpha and beta
    assert 2 <= seen[-1] <= 6, seen[-50:]
    assert all(v >= 2 for v in seen)


def test_a_fixed_wire_latency_keeps_the_limit_at_its_ceiling():
    # A remote server: 10 ms per request whatever the concurrency (plus a little jitter).
    limit = InFlightLimit(16)
    seen = feed(limit, lambda n: 0.010 + 0.0002 * (n % 3), 2000)
    assert min(seen) == 16


def test_the_limit_grows_back_when_the_queue_drains():
    limit = InFlightLimit(16)
    limit.observe(1, 0.001, now=0)
    feed(limit, lambda n: 0.001 * n, 2000, t0=0.01)
    low = limit.limit
    seen = feed(limit, lambda n: 0.001, 2000, t0=3)  # the server is idle again
    assert seen[-1] == 16 > low


def test_bounds_and_results_without_requests():
    limit = InFlightLimit(8, floor=3)
    limit.observe(1, 0.0001, now=0)
    feed(limit, lambda n: 1.0, 5000, t0=0.01)  # terribly slow: down to the floor, no lower
    assert limit.limit == 3
    before = limit.limit
    for _ in range(100):
        limit.observe(0, 0.0)  # a result that made no API request says nothing
    assert limit.limit == before
    fixed = InFlightLimit(8, floor=8)  # not adaptive
    feed(fixed, lambda n: 1.0, 500)
    assert fixed.limit == 8


def test_the_base_latency_expires_after_two_windows():
    limit = InFlightLimit(16, window=10)
    limit.observe(1, 0.001, now=0)
    assert limit.base == 0.001
    limit.observe(1, 0.005, now=11)  # a new window: the old minimum still counts
    assert limit.base == 0.001
    limit.observe(1, 0.005, now=22)  # two windows on: it is forgotten
    assert limit.base == 0.005
    limit.observe(1, 0.009, now=100)  # idle for longer than two windows: nothing old counts
    assert limit.base == 0.009


def test_a_server_that_suddenly_queues_everything_is_met_within_a_few_rounds():
    limit = InFlightLimit(16)
    limit.observe(1, 0.001, now=0)
    seen = feed(limit, lambda n: 0.100, 50, t0=0.01)  # 100x the base: nearly all of it queued
    assert seen[15] <= 12 and seen[-1] <= 8, seen
