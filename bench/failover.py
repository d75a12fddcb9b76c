"""Leader failover: a warm standby against a cold one, while parents keep changing.

    .venv-bench/bin/python bench/failover.py [--parents 10000] [--changing 500] [--runs 3]
                                             [--modes warm,cold] [--workers 2]
                                             [--lease 15,10,2] [--rate 100] [--json FILE]

For each mode and run: a fresh embedded API server with ``--parents`` Widgets, two replicas of
the example Widget operator (``leaderElection.warmStandby`` true for ``warm``, false for
``cold``; lease, renew deadline and retry period from ``--lease``). The first replica leads and
converges every Widget; then the second starts and, once ready and idle, its process tree's
RSS and PSS are the standby's memory. ``--changing`` Widgets then change their spec in turn
(``--rate`` changes per second) while the leader's whole process tree (leader, fork server,
workers) is SIGKILLed; the changes go on until the standby holds the lease.

Per run, from the API server's audit log (arrival times on this process's monotonic clock):
*acquired* is the standby's lease write that took the lease, seconds after the kill; *first
write* is the first status write after it, seconds after *acquired*; *converged* is when every
Widget reported ready for its current generation (seen by a watch), seconds after the kill.
The table gives medians and ranges over the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import threading
import time

from harness import (
    BENCH,
    BENCH_AGENT,
    GROUP,
    KIND,
    REPO,
    VERSION,
    Http,
    ProcTree,
    WidgetWatch,
    change_spec,
    create_widgets,
    load_average,
    machine_line,
    new_api,
    tree_pids,
    wait,
    wait_idle,
)

from operatord.testing import OperatorProcess

LEASE_NAME = "bench-leader"
MB = 1024 * 1024


def replica_config(warm: bool, workers: int, lease: tuple[float, float, float]) -> dict:
    duration, deadline, retry = lease
    return {
        "name": "bench",
        "handler": "examples.widgets:Widgets",
        "pythonPath": [str(BENCH), str(REPO)],
        "parent": {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND},
        "children": [{"apiVersion": "v1", "kind": "ConfigMap"}],
        "workers": workers,
        "resyncSeconds": 0,
        "leaderElection": {
            "enabled": True,
            "leaseName": LEASE_NAME,
            "leaseNamespace": "default",
            "leaseDurationSeconds": duration,
            "renewDeadlineSeconds": deadline,
            "retryPeriodSeconds": retry,
            "warmStandby": warm,
        },
        "logging": {"format": "json", "level": "warning"},
    }


def leads(op: OperatorProcess) -> bool:
    try:
        return op.metric("operatord_leader") == 1
    except OSError:
        return False


def churn(http_: Http, changing: int, rate: float, stop: threading.Event) -> None:
    """Change Widgets 0..changing-1 in turn, ``rate`` changes per second."""
    i = 0
    next_at = time.monotonic()
    while not stop.is_set():
        i += 1
        try:
            change_spec(http_, i % changing, 100 + i)
        except (OSError, RuntimeError):
            pass
        next_at += 1.0 / rate
        stop.wait(max(0.0, next_at - time.monotonic()))


def kill_tree(pid: int) -> None:
    for p in tree_pids(pid):
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run(
    warm: bool,
    parents: int,
    changing: int,
    workers: int,
    lease: tuple[float, float, float],
    rate: float,
) -> dict:
    api = new_api(parents)
    http_ = Http(api.port)
    watch: WidgetWatch | None = None
    ops: list[OperatorProcess] = []
    stop = threading.Event()
    try:
        create_widgets(http_, parents)
        watch = WidgetWatch(api.port).start()
        watch.expect(1, parents)
        cfg = replica_config(warm, workers, lease)
        a = OperatorProcess(api, cfg).start()
        ops.append(a)
        wait(lambda: leads(a), 60, "the first replica leading", 0.1)
        wait(lambda: watch.done_at, 600, "every Widget ready", 0.1)
        b = OperatorProcess(api, cfg).start()
        ops.append(b)
        b.wait_ready(600)
        standby = ProcTree(b.proc.pid)
        wait_idle(standby, 120, window=1.0)
        leader = ProcTree(a.proc.pid)
        standby_rss, standby_pss = standby.rss(), standby.pss()
        leader_rss, leader_pss = leader.rss(), leader.pss()
        standby.stop()
        leader.stop()

        writer = threading.Thread(target=churn, args=(http_, changing, rate, stop), daemon=True)
        writer.start()
        time.sleep(2.0)  # the leader is busy with the changes when it dies
        api.clear_requests()
        killed_at = time.monotonic()
        kill_tree(a.proc.pid)
        wait(lambda: leads(b), sum(lease) + 30, "the standby leading", 0.05)
        stop.set()
        writer.join(10)
        watch.expect(1, parents)
        wait(lambda: watch.done_at, 600, "every change converged", 0.05)
        assert watch.done_at is not None
        converged = watch.done_at - killed_at
        audit = [r for r in api.requests() if r["time"] >= killed_at]
        acquired = next(
            r["time"]
            for r in audit
            if r["resource"] == "leases" and r["name"] == LEASE_NAME and r["verb"] == "update"
        )
        first_write = next(
            r["time"]
            for r in audit
            if r["resource"] == "widgets"
            and r["subresource"] == "status"
            and r["verb"] in ("update", "patch")
            and r["userAgent"] != BENCH_AGENT
            and r["time"] >= acquired
        )
        return {
            "mode": "warm" if warm else "cold",
            "acquired_s": round(acquired - killed_at, 3),
            "first_write_s": round(first_write - acquired, 3),
            "converged_s": round(converged, 3),
            "standby_rss_mb": round(standby_rss / MB, 1),
            "standby_pss_mb": round(standby_pss / MB, 1),
            "leader_rss_mb": round(leader_rss / MB, 1),
            "leader_pss_mb": round(leader_pss / MB, 1),
        }
    finally:
        stop.set()
        if watch is not None:
            watch.stop()
        for op in ops:
            if op.proc is not None and op.proc.poll() is None:
                op.stop()
        http_.close()
        api.stop()


def summary(values: list[float]) -> str:
    med = statistics.median(values)
    return f"{med:g} ({min(values):g}-{max(values):g})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parents", type=int, default=10000)
    p.add_argument("--changing", type=int, default=500)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--modes", default="warm,cold")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--lease", default="15,10,2")
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--json")
    args = p.parse_args(argv)
    d, r, t = (float(x) for x in args.lease.split(","))
    lease = (d, r, t)
    modes = args.modes.split(",")
    print(f"# operatord leader failover — {machine_line()}")
    print(
        f"# {args.parents} parents, {args.changing} changing at {args.rate:g}/s, "
        f"{args.workers} workers per replica, lease {d:g} s / renew {r:g} s / retry {t:g} s, "
        f"{args.runs} runs per mode; bound: converged <= {d + 3:g} s, first write <= 0.5 s",
        flush=True,
    )
    rows: list[dict] = []
    for k in range(args.runs):
        for mode in modes:
            row = run(mode == "warm", args.parents, args.changing, args.workers, lease, args.rate)
            rows.append(row)
            print(f"# run {k + 1} {json.dumps(row)}", flush=True)
    print(
        "| standby | runs | lease acquired after kill (s) | first status write after "
        "acquiring (s) | all converged after kill (s) | standby RSS (MB) | standby PSS (MB) "
        "| leader RSS (MB) | leader PSS (MB) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for mode in modes:
        mine = [x for x in rows if x["mode"] == mode]
        cols = [
            summary([x[key] for x in mine])
            for key in (
                "acquired_s",
                "first_write_s",
                "converged_s",
                "standby_rss_mb",
                "standby_pss_mb",
                "leader_rss_mb",
                "leader_pss_mb",
            )
        ]
        print(f"| {mode} | {len(mine)} | " + " | ".join(cols) + " |")
    print(f"\nload average at the end: {load_average()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine_line(), "args": vars(args), "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
