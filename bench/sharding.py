"""Scale-out of active-active replicas: 1, 2 and 3 `operatord run` replicas on the same parents.

    .venv/bin/python bench/sharding.py [--parents 3000] [--replicas 1,2,3] [--shards 8]
                                       [--latency 0.01] [--workers 1] [--client-side]
                                       [--json FILE]

For each replica count: a fresh embedded API server (every request delayed by ``--latency``
seconds), ``--replicas`` replicas of the example Widget operator with ``sharding.shards``
(``--workers`` worker processes each, lease 4 s / renew 3 s / retry 1 s), started together and
waited for until the shards are shared fairly; then ``--parents`` Widgets are created and the
wall time until every Widget reports ready (seen by a watch) is measured. Per replica: CPU
seconds and peak RSS of its process tree (leader + workers) during the run, the shards it held
and the parents it cached (``operatord_cached_objects``). ``--client-side`` turns the API
server's shardSelector support off (an API server before v1.36): every replica then receives
every parent and filters it (``operatord_shard_filtered_objects_total``).

Everything runs on one machine: with few cores the replicas compete for the same CPUs, so the
wall time shows what overlapping API waits buys, and per-replica cost shows what each pod
would need.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

from harness import (
    BENCH,
    GROUP,
    KIND,
    REPO,
    VERSION,
    Http,
    ProcTree,
    WidgetWatch,
    create_widgets,
    machine_line,
    new_api,
    wait,
)

from operatord.testing import OperatorProcess

LEASE = {"leaseDurationSeconds": 4, "renewDeadlineSeconds": 3, "retryPeriodSeconds": 1}


def replica_config(shards: int, workers: int) -> dict:
    return {
        "name": "bench",
        "handler": "examples.widgets:Widgets",
        "pythonPath": [str(BENCH), str(REPO)],
        "parent": {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND},
        "children": [{"apiVersion": "v1", "kind": "ConfigMap"}],
        "workers": workers,
        "resyncSeconds": 0,
        "leaderElection": {"enabled": True, "leaseNamespace": "default", **LEASE},
        "sharding": {"shards": shards},
        "logging": {"format": "json", "level": "warning"},
    }


def held(op: OperatorProcess, shards: int) -> list[int]:
    return [k for k in range(shards) if op.metric("operatord_shard_held", shard=str(k)) == 1]


def run(
    replicas: int, parents: int, shards: int, latency: float, workers: int, client_side: bool
) -> dict:
    api = new_api(parents, latency)
    if client_side:
        api.faults.ignore_shard_selector()
    ops: list[OperatorProcess] = []
    try:
        ops = [
            OperatorProcess(api, replica_config(shards, workers)).start() for _ in range(replicas)
        ]
        for op in ops:
            op.wait_ready(120)
        share = math.ceil(shards / replicas)

        def fair() -> bool:
            counts = [len(held(op, shards)) for op in ops]
            return sum(counts) == shards and max(counts) <= share

        wait(fair, 60, "shards shared", interval=0.2)
        trees = [ProcTree(op.proc.pid) for op in ops]
        cpu0 = [t.cpu() for t in trees]
        watch = WidgetWatch(api.port).start()
        watch.expect(1, parents)
        http_ = Http(api.port)
        start = time.monotonic()
        create_widgets(http_, parents)
        wait(lambda: watch.done_at is not None, 1800, "every Widget ready", interval=0.2)
        wall = watch.done_at - start
        watch.stop()
        http_.close()
        rows = []
        for op, tree, c0 in zip(ops, trees, cpu0, strict=True):
            rows.append(
                {
                    "shards": held(op, shards),
                    "cached_parents": int(
                        op.metric("operatord_cached_objects", resource="widgets.example.com")
                    ),
                    "filtered_parents": int(
                        op.metric(
                            "operatord_shard_filtered_objects_total",
                            resource="widgets.example.com",
                        )
                    ),
                    "cpu_s": round(tree.cpu() - c0, 2),
                    "peak_rss_mb": round(tree.peak_rss / 2**20, 1),
                }
            )
            tree.stop()
        return {
            "replicas": replicas,
            "parents": parents,
            "wall_s": round(wall, 2),
            "per_replica": rows,
        }
    finally:
        for op in ops:
            op.stop(60)
        api.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parents", type=int, default=3000)
    p.add_argument("--replicas", default="1,2,3")
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--latency", type=float, default=0.01)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--client-side", action="store_true")
    p.add_argument("--json")
    args = p.parse_args(argv)
    counts = [int(x) for x in args.replicas.split(",")]
    print(f"# operatord sharding scale-out — {machine_line()}")
    print(
        f"# {args.parents} parents, {args.shards} shards, {args.workers} worker(s) per replica, "
        f"API latency {args.latency * 1000:g} ms, shardSelector "
        + ("ignored by the server (client-side filtering)" if args.client_side else "served")
    )
    print(
        "| replicas | wall time to all ready (s) | shards per replica | cached parents per replica "
        "| parent events filtered out per replica | CPU s per replica | peak RSS MB per replica |"
    )
    print("|---|---|---|---|---|---|---|")
    results = []
    for n in counts:
        r = run(n, args.parents, args.shards, args.latency, args.workers, args.client_side)
        results.append(r)
        per = r["per_replica"]
        print(
            f"| {n} | {r['wall_s']} | {' / '.join(str(len(x['shards'])) for x in per)} | "
            f"{' / '.join(str(x['cached_parents']) for x in per)} | "
            f"{' / '.join(str(x['filtered_parents']) for x in per)} | "
            f"{' / '.join(str(x['cpu_s']) for x in per)} | "
            f"{' / '.join(str(x['peak_rss_mb']) for x in per)} |",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine_line(), "args": vars(args), "rows": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
