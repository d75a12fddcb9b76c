"""Throughput of the embedded API server: writes/s and watch events/s it sustains.

    .venv/bin/python bench/apiserver.py [--objects 4000] [--writers 2] [--watchers 4]

Writers are separate processes with keep-alive HTTP connections (raw JSON, as operatord's hot
path does with `_preload_content=False`), so the numbers measure the server, not client-side
model deserialization. Watch throughput counts events delivered to all watchers together.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import sys
import time
from importlib import resources

import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from operatord.testing import ApiServer  # noqa: E402


def _writer(port: int, ns: str, start: int, count: int, op: str, out: mp.Queue) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    hdr = {"Content-Type": "application/json"}
    t0 = time.perf_counter()
    for i in range(start, start + count):
        if op == "create":
            body = {
                "metadata": {"name": f"cm-{i}", "labels": {"bench": "yes"}},
                "data": {"i": str(i)},
            }
            conn.request("POST", f"/api/v1/namespaces/{ns}/configmaps", json.dumps(body), hdr)
        elif op == "patch":
            hdr = {"Content-Type": "application/merge-patch+json"}
            body = {"data": {"i": f"{i}-x"}}
            conn.request(
                "PATCH", f"/api/v1/namespaces/{ns}/configmaps/cm-{i}", json.dumps(body), hdr
            )
        elif op in ("cr", "cr+schema"):
            plural = "gizmos" if op == "cr" else "widgets"
            kind = "Gizmo" if op == "cr" else "Widget"
            body = {
                "apiVersion": "bench.example.com/v1",
                "kind": kind,
                "metadata": {"name": f"cr-{i}", "labels": {"bench": "yes"}},
                "spec": {"size": i % 7, "message": f"hello {i}"},
            }
            conn.request(
                "POST",
                f"/apis/bench.example.com/v1/namespaces/{ns}/{plural}",
                json.dumps(body),
                hdr,
            )
        else:  # apply
            hdr = {"Content-Type": "application/apply-patch+yaml"}
            body = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"cm-{i}"},
                "data": {"a": str(i)},
            }
            conn.request(
                "PATCH",
                f"/api/v1/namespaces/{ns}/configmaps/cm-{i}?fieldManager=bench&force=true",
                json.dumps(body),
                hdr,
            )
        resp = conn.getresponse()
        resp.read()
        if resp.status >= 300:
            raise SystemExit(f"{op} cm-{i}: {resp.status}")
    out.put(time.perf_counter() - t0)


def _watcher(port: int, ns: str, rv: str, expect: int, out: mp.Queue) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    conn.request("GET", f"/api/v1/namespaces/{ns}/configmaps?watch=true&resourceVersion={rv}")
    resp = conn.getresponse()
    n = 0
    t0 = None
    while n < expect:
        line = resp.readline()
        if not line:
            break
        if t0 is None:
            t0 = time.perf_counter()
        json.loads(line)
        n += 1
    out.put((n, time.perf_counter() - (t0 or time.perf_counter())))


def _run(ctx, target, argsets) -> list:
    q = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*a, q)) for a in argsets]
    for p in procs:
        p.start()
    res = [q.get() for _ in procs]
    for p in procs:
        p.join()
    return res


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=4000)
    ap.add_argument("--writers", type=int, default=2)
    ap.add_argument("--watchers", type=int, default=4)
    a = ap.parse_args()
    ctx = mp.get_context("spawn")
    n, w = a.objects, a.writers
    per = n // w
    print(
        f"embedded API server benchmark: {n} objects, {w} writer processes, {a.watchers} watchers, "
        f"{os.cpu_count()} CPUs"
    )
    t = time.perf_counter()
    with ApiServer(history_size=max(10_000, 4 * n)) as api:
        print(f"  startup                      {time.perf_counter() - t:8.3f} s")
        api._raw("POST", "/api/v1/namespaces", {"metadata": {"name": "bench"}})
        for op in ("create", "patch", "apply"):
            dt = max(_run(ctx, _writer, [(api.port, "bench", k * per, per, op) for k in range(w)]))
            print(f"  {op:<10} writes/s          {per * w / dt:8.0f}   ({per * w} in {dt:.2f} s)")
        # custom objects: a CRD without a schema, and the example Widget CRD's schema (types,
        # minimum, defaults, pruning)
        example = yaml.safe_load(
            resources.files("operatord.examples").joinpath("widget-crd.yaml").read_text()
        )
        schema = example["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        api.apply_crd("bench.example.com", "v1", "Gizmo")
        api.apply_crd("bench.example.com", "v1", "Widget", schema=schema)
        for op in ("cr", "cr+schema"):
            dt = max(_run(ctx, _writer, [(api.port, "bench", k * per, per, op) for k in range(w)]))
            print(f"  create {op:<9} writes/s   {per * w / dt:8.0f}   ({per * w} in {dt:.2f} s)")
        t0 = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", api.port)
        conn.request("GET", "/api/v1/namespaces/bench/configmaps")
        body = conn.getresponse().read()
        dt = time.perf_counter() - t0
        print(f"  list of {n} objects          {dt * 1000:8.1f} ms ({len(body) / 1e6:.1f} MB)")
        # watch fan-out: every watcher replays the create/patch/apply history
        rv = "1"
        expect = 3 * per * w
        res = _run(ctx, _watcher, [(api.port, "bench", rv, expect) for _ in range(a.watchers)])
        dt = max(r[1] for r in res)
        total = sum(r[0] for r in res)
        print(
            f"  watch events/s (replay)      {total / dt:8.0f}   ({total} events to {a.watchers} watchers)"
        )
        # live watch: events delivered while writers write
        rv = json.loads(body)["metadata"]["resourceVersion"]
        q = ctx.Queue()
        watchers = [
            ctx.Process(target=_watcher, args=(api.port, "bench", rv, per * w, q))
            for _ in range(a.watchers)
        ]
        for p in watchers:
            p.start()
        time.sleep(0.5)  # let watchers connect (benchmark, not a test)
        dt = max(
            _run(ctx, _writer, [(api.port, "bench", n + k * per, per, "create") for k in range(w)])
        )
        res = [q.get() for _ in watchers]
        for p in watchers:
            p.join()
        total = sum(r[0] for r in res)
        print(f"  creates/s with live watchers {per * w / dt:8.0f}")
        print(
            f"  live watch events/s          {total / dt:8.0f}   ({total} events to {a.watchers} watchers)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
