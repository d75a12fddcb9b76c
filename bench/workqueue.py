"""Throughput of operatord.queue.WorkQueue (a script, not a test).

    .venv/bin/python bench/queue.py [--adds 200000] [--keys 10000] [--delayed 100000]

1. One producer thread calls `add` for `--adds` random keys out of `--keys` while N consumer
   threads `get` + `done`. Adds coalesce, so gets <= adds; both rates are reported.
2. `--delayed` keys are added with `add_after` (random delays), then handed out as they fall
   due: once with an injected clock jumped past every due time (pure heap cost), once with
   the real clock and keys due over one second drained by N consumers.
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from operatord.queue import RESYNC, WorkQueue  # noqa: E402


def _consume(q: WorkQueue, counter: list[int]) -> None:
    n = 0
    while (item := q.get()) is not None:
        q.done(item.key)
        n += 1
    counter.append(n)


def _wait_empty(q: WorkQueue, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while len(q) or q.processing_count() or q.delayed_count():
        if time.monotonic() > deadline:
            raise RuntimeError(f"queue did not drain: {q!r}")
        time.sleep(0.001)


def bench_add_get(consumers: int, adds: int, keys: int) -> tuple[float, float, int]:
    q = WorkQueue()
    names = [f"uid-{i}" for i in range(keys)]
    rng = random.Random(1)
    picks = [rng.choice(names) for _ in range(adds)]
    counts: list[int] = []
    threads = [threading.Thread(target=_consume, args=(q, counts)) for _ in range(consumers)]
    for t in threads:
        t.start()
    start = time.perf_counter()
    for k in picks:
        q.add(k)
    add_elapsed = time.perf_counter() - start
    _wait_empty(q)
    elapsed = time.perf_counter() - start
    q.shut_down()
    for t in threads:
        t.join()
    return adds / add_elapsed, sum(counts) / elapsed, sum(counts)


def bench_delayed_fake_clock(n: int) -> tuple[float, float]:
    now = [0.0]
    q = WorkQueue(clock=lambda: now[0])
    rng = random.Random(2)
    delays = [rng.uniform(1, 600) for _ in range(n)]
    start = time.perf_counter()
    for i, d in enumerate(delays):
        q.add_after(f"uid-{i}", d, lane=RESYNC)
    add_rate = n / (time.perf_counter() - start)
    now[0] = 601.0
    start = time.perf_counter()
    got = 0
    while (item := q.get(timeout=0)) is not None:
        q.done(item.key)
        got += 1
    assert got == n, got
    return add_rate, n / (time.perf_counter() - start)


def bench_delayed_real_clock(n: int, consumers: int) -> tuple[float, float]:
    q = WorkQueue()
    counts: list[int] = []
    threads = [threading.Thread(target=_consume, args=(q, counts)) for _ in range(consumers)]
    for t in threads:
        t.start()
    rng = random.Random(3)
    start = time.perf_counter()
    for i in range(n):
        q.add_after(f"uid-{i}", rng.uniform(0.0, 1.0))
    add_elapsed = time.perf_counter() - start
    _wait_empty(q)
    elapsed = time.perf_counter() - start
    q.shut_down()
    for t in threads:
        t.join()
    assert sum(counts) == n
    return n / add_elapsed, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adds", type=int, default=200_000)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--delayed", type=int, default=100_000)
    parser.add_argument("--consumers", type=int, nargs="+", default=[1, 2, 4, 8])
    args = parser.parse_args()

    print(f"Python {sys.version.split()[0]}; {args.adds} adds over {args.keys} keys")
    print(f"{'consumers':>9} | {'adds/s':>10} | {'gets+done/s':>11} | {'gets':>7}")
    print("-" * 47)
    for c in args.consumers:
        add_rate, get_rate, gets = bench_add_get(c, args.adds, args.keys)
        print(f"{c:>9} | {add_rate:>10,.0f} | {get_rate:>11,.0f} | {gets:>7}")

    print()
    add_rate, get_rate = bench_delayed_fake_clock(args.delayed)
    print(f"{args.delayed} delayed keys, injected clock jumped past all due times:")
    print(f"  add_after {add_rate:>10,.0f}/s   get+done {get_rate:>10,.0f}/s")
    for c in (1, 4):
        add_rate, elapsed = bench_delayed_real_clock(args.delayed, c)
        print(
            f"{args.delayed} delayed keys due within 1 s, real clock, {c} consumer(s): "
            f"add_after {add_rate:,.0f}/s, all handed out after {elapsed:.2f} s"
        )


if __name__ == "__main__":
    main()
