"""Benchmark: one controller's storm must not starve another controller of the same daemon.

One daemon, two controllers sharing its worker pool (2 workers): ``storm`` (kind Alpha) with
``--storm`` parents and ``calm`` (kind Beta) with ``--calm`` parents, both converged first. Then
every Alpha's spec changes at once (concurrent merge patches, as fast as the server takes them)
while one Beta changes every 1/``--rate`` seconds (round robin). Measured per run:

- the storm's converge time: from the first Alpha patch until a watch has seen every Alpha's
  status.observedGeneration reach its new generation;
- each Beta change's latency: from the patch's answer (which carries the new generation) until
  the watch sees status.observedGeneration reach it; p50, p99 and max over the changes made
  while the storm was being worked off. The Beta changes and their watch run in a process of
  their own (`calm_probe`): in the process that floods the server with the storm's patches and
  decodes its watch events, the probe's own clock readings waited for the interpreter lock;
- where a Beta's time goes inside operatord: its wait in the leader's queue and its time in a
  worker (histogram bucket bounds of operatord_queue_wait_seconds and
  operatord_sync_duration_seconds for controller "calm" over the storm).

Each run is repeated alone (the same storm with no Beta changes, on a fresh server and daemon)
to compare the storm's converge time with and without the calm controller's traffic. Every
number is the median of ``--runs`` runs, with the range.

    python bench/fairness.py [--storm 5000] [--calm 10] [--rate 5] [--runs 3] [--workers 2]
                             [--in-flight 16] [--adaptive on|off]
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import BENCH, REPO, Http, load_average, machine_line, wait  # noqa: E402

from operatord.testing import ApiServer, OperatorProcess  # noqa: E402

GROUP, NS = "fair.example.com", "bench"
MERGE = "application/merge-patch+json"
KINDS = {"storm": ("Alpha", "alphas"), "calm": ("Beta", "betas")}


def crd(kind: str, plural: str) -> dict:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }


def path(plural: str, name: str = "") -> str:
    base = f"/apis/{GROUP}/v1/namespaces/{NS}/{plural}"
    return f"{base}/{name}" if name else base


class Watch:
    """(generation, observedGeneration) of every object of one kind, and when each
    (name, generation) was first seen observed."""

    def __init__(self, port: int, plural: str) -> None:
        self.port, self.plural = port, plural
        self.lock = threading.Lock()
        self.state: dict[str, tuple[int, int]] = {}
        self.seen: dict[tuple[str, int], float] = {}
        self.listed = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()
        wait(self.listed.is_set, 30, f"{plural} listed")

    def _update(self, obj: dict, t: float) -> None:
        meta, status = obj["metadata"], obj.get("status") or {}
        gen, observed = int(meta.get("generation") or 0), int(status.get("observedGeneration") or 0)
        with self.lock:
            self.state[meta["name"]] = (gen, observed)
            self.seen.setdefault((meta["name"], observed), t)

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=None)
        conn.request("GET", f"/apis/{GROUP}/v1/{self.plural}")
        listed = json.loads(conn.getresponse().read())
        t = time.monotonic()
        for obj in listed["items"]:
            self._update(obj, t)
        self.listed.set()
        rv = listed["metadata"]["resourceVersion"]
        conn.request("GET", f"/apis/{GROUP}/v1/{self.plural}?watch=true&resourceVersion={rv}")
        resp = conn.getresponse()
        while line := resp.readline():
            event = json.loads(line)
            if event.get("type") in ("ADDED", "MODIFIED"):
                self._update(event["object"], time.monotonic())

    def converged(self, count: int, min_generation: int = 1) -> bool:
        with self.lock:
            done = [1 for g, o in self.state.values() if o == g and g >= min_generation]
        return len(done) >= count

    def last_seen(self) -> float:
        with self.lock:
            return max(self.seen.values())


def calm_probe(port: int, calm: int, rate: float, stop: Any, out: Any) -> None:
    """In its own process, so that the storm's load on the benchmark process (32 patching
    threads, the Alpha watch decoding thousands of events) does not delay its clock readings:
    change one Beta every 1/``rate`` s until ``stop`` is set, watch the Betas, and put each
    change's latency (patch answer -> status observed by the watch) on ``out``."""
    betas = Watch(port, "betas")
    http_ = Http(port, threads=1)
    changes: list[tuple[str, int, float]] = []
    i = 0
    next_at = time.monotonic()
    while not stop.is_set():
        name = f"b{i % calm}"
        answer = http_.must("PATCH", path("betas", name), {"spec": {"n": i + 1}}, MERGE)
        changes.append((name, int(answer["metadata"]["generation"]), time.monotonic()))
        i += 1
        next_at += 1 / rate
        stop.wait(max(0.0, next_at - time.monotonic()))
    latencies, missing = [], 0
    for name, gen, t in changes:
        try:
            seen = wait(lambda name=name, gen=gen: betas.seen.get((name, gen)), 10, "beta")
            latencies.append(seen - t)
        except AssertionError:
            missing += 1
    http_.close()
    out.put((latencies, missing))


def buckets(op: OperatorProcess, name: str, controller: str) -> dict[float, float]:
    """Cumulative bucket counts of histogram ``name`` for one controller, from a fresh scrape."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{op.metrics_port}/metrics", timeout=5) as r:
        body = r.read().decode()
    out: dict[float, float] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == f"{name}_bucket" and sample.labels.get("controller") == controller:
                le = float(sample.labels["le"])
                out[le] = out.get(le, 0.0) + sample.value
    return out


def quantile(before: dict[float, float], after: dict[float, float], q: float) -> float | None:
    """The upper bound of the bucket holding quantile ``q`` of the observations made between
    two scrapes (None: no observation)."""
    edges = sorted(after)
    counts = [after[e] - before.get(e, 0.0) for e in edges]
    if not counts or counts[-1] <= 0:
        return None
    for edge, count in zip(edges, counts, strict=True):
        if count >= q * counts[-1]:
            return edge
    return edges[-1]


STAGES = {
    "queue": "operatord_queue_wait_seconds",  # ready in the leader's queue -> sent to a worker
    "worker": "operatord_sync_duration_seconds",  # taken by the worker -> its result
}


def one_run(args: argparse.Namespace, with_calm: bool) -> dict[str, Any]:
    api = ApiServer(history_size=max(50_000, 20 * args.storm)).start()
    op = None
    http_ = Http(api.port, threads=32)
    try:
        for kind, plural in KINDS.values():
            api._raw(
                "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd(kind, plural)
            )
        api._raw("POST", "/api/v1/namespaces", {"metadata": {"name": NS}})
        for _, plural in KINDS.values():
            wait(lambda plural=plural: api._raw("GET", path(plural) + "?limit=1"), 10, plural)
        config = {
            "name": "fair",
            "workers": args.workers,
            "inFlightPerWorker": args.in_flight,
            "inFlightAdaptive": args.adaptive == "on",
            "resyncSeconds": 0,
            "pythonPath": [str(BENCH), str(REPO)],
            "logging": {"format": "json", "level": "warning"},
            "controllers": [
                {
                    "name": name,
                    "handler": "fair_handlers:sync",
                    "parent": {"apiVersion": f"{GROUP}/v1", "kind": kind},
                    "children": [{"apiVersion": "v1", "kind": "ConfigMap"}],
                }
                for name, (kind, _) in KINDS.items()
            ],
        }

        def body(kind: str, name: str) -> dict:
            return {
                "apiVersion": f"{GROUP}/v1",
                "kind": kind,
                "metadata": {"name": name},
                "spec": {"n": 0},
            }

        http_.map(
            lambda i: http_.must("POST", path("alphas"), body("Alpha", f"a{i}")), range(args.storm)
        )
        http_.map(
            lambda i: http_.must("POST", path("betas"), body("Beta", f"b{i}")), range(args.calm)
        )
        alphas, betas = Watch(api.port, "alphas"), Watch(api.port, "betas")
        op = OperatorProcess(api, config).start()
        wait(lambda: alphas.converged(args.storm) and betas.converged(args.calm), 600, "converged")
        ctx = multiprocessing.get_context("spawn")  # a clean process: no threads forked
        stop, results = ctx.Event(), ctx.Queue()
        prober = ctx.Process(
            target=calm_probe, args=(api.port, args.calm, args.rate, stop, results), daemon=True
        )

        before = {k: buckets(op, name, "calm") for k, name in STAGES.items()}
        t0 = time.monotonic()
        if with_calm:
            prober.start()
        http_.map(
            lambda i: http_.must("PATCH", path("alphas", f"a{i}"), {"spec": {"n": 1}}, MERGE),
            range(args.storm),
        )
        wait(lambda: alphas.converged(args.storm, 2), 600, "storm converged")
        converge = alphas.last_seen() - t0
        latencies: list[float] = []
        missing = 0
        if with_calm:
            stop.set()
            latencies, missing = results.get(timeout=60)
            prober.join(10)
        after = {k: buckets(op, name, "calm") for k, name in STAGES.items()}
        stages = {
            f"{k}_p{round(q * 100)}": quantile(before[k], after[k], q)
            for k in STAGES
            for q in (0.5, 0.99)
        }
        latencies.sort()
        return {
            "converge": converge,
            "changes": len(latencies) + missing,
            "missing": missing,
            "p50": latencies[len(latencies) // 2] if latencies else None,
            "p99": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
            if latencies
            else None,
            "max": latencies[-1] if latencies else None,
            **stages,
        }
    finally:
        if op is not None:
            op.stop(60)
        http_.close()
        api.stop()


def med(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.3g} ({min(values):.3g}-{max(values):.3g})"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--storm", type=int, default=5000)
    p.add_argument("--calm", type=int, default=10)
    p.add_argument("--rate", type=float, default=5.0)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--in-flight", type=int, default=16, help="inFlightPerWorker")
    p.add_argument("--adaptive", choices=["on", "off"], default="on", help="inFlightAdaptive")
    args = p.parse_args()
    together, alone = [], []
    for _ in range(args.runs):
        together.append(one_run(args, with_calm=True))
        alone.append(one_run(args, with_calm=False))
        print(f"run: with calm {together[-1]}, alone {alone[-1]}", file=sys.stderr)
    ms = lambda key: [r[key] * 1000 for r in together if r[key] is not None]  # noqa: E731
    ratio = [t["converge"] / a["converge"] for t, a in zip(together, alone, strict=True)]
    print(f"{machine_line()}; load average {load_average()}")
    print(
        f"\n{args.storm} parents of `storm` changing at once, {args.calm} of `calm` changing at "
        f"{args.rate:g}/s, {args.workers} workers, inFlightPerWorker {args.in_flight}, inFlightAdaptive {args.adaptive}; median (range) of {args.runs} runs\n"
    )
    print("| figure | value |")
    print("|---|---|")
    print(f"| calm: change -> status p50 (ms) | {med(ms('p50'))} |")
    print(f"| calm: change -> status p99 (ms) | {med(ms('p99'))} |")
    print(f"| calm: change -> status max (ms) | {med(ms('max'))} |")
    print(
        f"| calm: changes during the storm (missing) | {med([r['changes'] for r in together])} ({sum(r['missing'] for r in together)}) |"
    )
    for key in (f"{k}_p{q}" for k in STAGES for q in (50, 99)):
        stage = key.split("_")[0]
        print(
            f"| calm: {stage} stage {key.split('_')[1]} (ms, bucket bound) | "
            f"{med([r[key] * 1000 for r in together if r[key] is not None])} |"
        )
    print(f"| storm: converge with calm's changes (s) | {med([r['converge'] for r in together])} |")
    print(f"| storm: converge alone (s) | {med([r['converge'] for r in alone])} |")
    print(f"| storm: with / alone | {med(ratio)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
