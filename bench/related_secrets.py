"""Benchmark: the leader's memory next to many Secrets it does not need (``cache: metadata``).

One embedded API server per run holds ``--parents`` Readers (default 1,000), each selecting one
Secret of its own by name (``related: [{v1, Secret, cache: metadata}]``, the Secret default),
and, in the ``with`` runs, ``--unrelated`` further Secrets (default 50,000) of ``--size``
bytes of data each (default 4,096) that nobody selects. `operatord run` (2 workers,
``resyncSeconds: 0``) syncs every Reader once; then:

- the leader's RSS (VmRSS of the ``operatord run`` process, not of its workers) once every
  Reader has synced and the queues are empty, and its peak (VmHWM);
- ``--changes`` times (default 20), one selected Secret's data is changed and the time until
  its Reader's status shows the new data's digest is measured (the handler,
  bench/secrets_handler.py, writes it).

``--runs`` runs (default 3) of each of ``without`` and ``with``, alternating; medians and ranges.
The last lines compare the leader's RSS with and without the unrelated Secrets.

    python bench/related_secrets.py --parents 1000 --unrelated 50000 --runs 3
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import NS, Http, load_average, machine_line, wait  # noqa: E402

from operatord.testing import ApiServer, OperatorProcess  # noqa: E402

GROUP = "bench.example.com"
READERS = f"/apis/{GROUP}/v1/namespaces/{NS}/readers"
SECRETS = f"/api/v1/namespaces/{NS}/secrets"
MERGE_PATCH = "application/merge-patch+json"

READER_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"readers.{GROUP}"},
    "spec": {
        "group": GROUP,
        "names": {"kind": "Reader", "plural": "readers", "singular": "reader"},
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


def digest(data: dict) -> str:  # as bench/secrets_handler.py
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


def populate(api: ApiServer, parents: int, unrelated: int, size: int) -> None:
    api._raw("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", READER_CRD)
    api._raw("POST", "/api/v1/namespaces", {"metadata": {"name": NS}})
    wait(lambda: api._raw("GET", READERS + "?limit=1"), 10, "Reader CRD served")
    http_ = Http(api.port, threads=8)
    try:
        blob = base64.b64encode(os.urandom(size * 3 // 4)).decode()  # `size` bytes of data

        def noise(i: int) -> None:
            body = {"metadata": {"name": f"noise-{i:06d}"}, "data": {"blob": blob}}
            http_.must("POST", SECRETS, body)

        def own(i: int) -> None:
            body = {"metadata": {"name": f"own-{i:05d}"}, "data": {"v": "MA=="}}
            http_.must("POST", SECRETS, body)
            reader = {
                "apiVersion": f"{GROUP}/v1",
                "kind": "Reader",
                "metadata": {"name": f"r-{i:05d}"},
                "spec": {"secret": f"own-{i:05d}"},
            }
            http_.must("POST", READERS, reader)

        http_.map(noise, range(unrelated))
        http_.map(own, range(parents))
    finally:
        http_.close()


def synced(http_: Http, i: int) -> str | None:
    _, reader = http_.request("GET", f"{READERS}/r-{i:05d}")
    return ((reader or {}).get("status") or {}).get("secret")


def metric(op: OperatorProcess, name: str, **labels: str) -> float:
    try:
        return op.metric(name, **labels)
    except (OSError, KeyError):
        return -1.0


def one_run(parents: int, unrelated: int, size: int, changes: int) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="operatord-bench-secrets-"))
    with ApiServer(history_size=max(10_000, 2 * (parents + unrelated))) as api:
        populate(api, parents, unrelated, size)
        config = {
            "name": "bench-secrets",
            "handler": "secrets_handler:Reading",
            "pythonPath": [str(Path(__file__).resolve().parent)],
            "parent": {"apiVersion": f"{GROUP}/v1", "kind": "Reader"},
            "related": [{"apiVersion": "v1", "kind": "Secret", "cache": "metadata"}],
            "namespace": NS,
            "workers": 2,
            "resyncSeconds": 0,
            "conditions": False,
            "logging": {"format": "json", "level": "warning"},
        }
        op = OperatorProcess(api, config, workdir=workdir).start()
        try:
            op.wait_ready(300)
            t0 = time.monotonic()
            wait(
                lambda: metric(op, "operatord_syncs_total", result="ok") >= parents,
                900,
                "every Reader synced",
                0.5,
            )
            first_s = time.monotonic() - t0
            wait(
                lambda: (
                    metric(op, "operatord_in_flight") == 0
                    and metric(op, "operatord_queue_depth") == 0
                ),
                120,
                "idle",
                0.5,
            )
            pid = op.proc.pid
            rss_mb = _status_kb(pid, "VmRSS") / 1024
            hwm_mb = _status_kb(pid, "VmHWM") / 1024
            cached = metric(op, "operatord_cached_objects", resource="secrets")

            http_ = Http(api.port, threads=1)
            latencies = []
            try:
                for n in range(changes):
                    i = (n * 37) % parents
                    value = base64.b64encode(f"change-{n}".encode()).decode()
                    want = digest({"v": value})
                    t = time.monotonic()
                    http_.must(
                        "PATCH", f"{SECRETS}/own-{i:05d}", {"data": {"v": value}}, MERGE_PATCH
                    )
                    wait(lambda i=i, want=want: synced(http_, i) == want, 30, "re-synced", 0.002)
                    latencies.append(time.monotonic() - t)
            finally:
                http_.close()
            errors = metric(op, "operatord_syncs_total", result="error")
        finally:
            op.stop()
    return {
        "unrelated": unrelated,
        "first_s": first_s,
        "rss_mb": rss_mb,
        "hwm_mb": hwm_mb,
        "cached": cached,
        "latency_med": statistics.median(latencies),
        "latency_max": max(latencies),
        "errors": errors,
    }


def spread(values: list[float], fmt: str = "{:.0f}") -> str:
    return (
        f"{fmt.format(statistics.median(values))} "
        f"({fmt.format(min(values))}-{fmt.format(max(values))})"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parents", type=int, default=1000)
    ap.add_argument("--unrelated", type=int, default=50_000)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--changes", type=int, default=20)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    rows: dict[str, list[dict]] = {"without": [], "with": []}
    for run in range(args.runs):
        order = ("without", "with") if run % 2 == 0 else ("with", "without")
        for mode in order:
            n = args.unrelated if mode == "with" else 0
            r = one_run(args.parents, n, args.size, args.changes)
            print(f"  run {run + 1} {mode}: {json.dumps(r)}", file=sys.stderr, flush=True)
            rows[mode].append(r)
    print(
        f"# leader memory next to unrelated Secrets (cache: metadata), {args.parents} Readers, "
        f"{args.size}-byte Secrets, 2 workers — {machine_line()}"
    )
    print(
        "| unrelated Secrets | runs | cached Secrets (metadata) | first syncs (s) | "
        "leader RSS (MB) | leader peak RSS (MB) | change -> re-sync (s, median of each run) | "
        "change -> re-sync (s, slowest of each run) | sync errors |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for mode in ("without", "with"):
        rs = rows[mode]
        print(
            f"| {rs[0]['unrelated']} | {len(rs)} | {rs[0]['cached']:.0f} | "
            f"{spread([r['first_s'] for r in rs], '{:.1f}')} | "
            f"{spread([r['rss_mb'] for r in rs])} | {spread([r['hwm_mb'] for r in rs])} | "
            f"{spread([r['latency_med'] for r in rs], '{:.3f}')} | "
            f"{spread([r['latency_max'] for r in rs], '{:.3f}')} | "
            f"{sum(r['errors'] for r in rs):.0f} |"
        )
    med = {m: statistics.median(r["rss_mb"] for r in rows[m]) for m in rows}
    hwm = {m: statistics.median(r["hwm_mb"] for r in rows[m]) for m in rows}
    print(
        f"- leader RSS with {args.unrelated} unrelated Secrets: {med['with'] - med['without']:+.1f} "
        f"MB (medians; peak {hwm['with'] - hwm['without']:+.1f} MB)"
    )
    slowest = max(r["latency_max"] for rs in rows.values() for r in rs)
    print(f"- slowest change -> re-sync of {2 * args.runs * args.changes}: {slowest:.3f} s")
    print(f"\nload average at the end: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
