"""Benchmark: the leader's memory per cached object, by kind.

One embedded API server; the example Widget operator (`operatord run`, 2 workers) converges
``--objects`` Widgets (default 20,000), so the parents and their ConfigMap children are exactly
what operatord writes (finalizer, status with conditions, labels, owner reference); then as many
Secrets of ``--size`` bytes of data (default 4,096) are added. For each kind, ``--runs`` fresh
processes (default 3) each do what the leader does for it: an `Informer` (streaming list, with
the leader's ``transform``) handing its list to the leader's store, and report the growth of
their RSS from before the informer started to after the store is filled (garbage collected),
divided by the number of objects:

- ``parent``: the Widgets into `Cache.replace_parents` (``transform=Cache.pack``, as the
  leader does);
- ``child``: the ConfigMaps into `Cache.replace_children` (``transform=Cache.pack``);
- ``related (full)``: the Secrets into a `RelatedIndex` (``cache: full``);
- ``related (metadata)``: the Secrets' PartialObjectMetadata into a `RelatedIndex` as
  `MetaStub` tuples (``cache: metadata``).

The JSON column is the average size of one object as the API server serves it (managedFields
included). Medians and ranges of the runs.

    python bench/cache_memory.py --objects 20000 --runs 3
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    NS,
    Http,
    Operatord,
    WidgetWatch,
    create_widgets,
    load_average,
    machine_line,
    new_api,
    wait,
)

KINDS = ("parent", "child", "related (full)", "related (metadata)")
SECRETS = f"/api/v1/namespaces/{NS}/secrets"


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(kubeconfig: str, kind: str) -> None:
    """One store filled as the leader fills it; prints a JSON line."""
    import gc

    from operatord.cache import Cache, compact
    from operatord.informer import Informer
    from operatord.kube import ClientSettings, Kube
    from operatord.related import RelatedIndex, trim_metadata

    kube = Kube(ClientSettings(kubeconfig=kubeconfig))
    cache = Cache()
    index = RelatedIndex()
    count = {"n": 0}
    if kind == "parent":
        res = kube.resource("example.com/v1", "Widget")

        def on_list(items: list) -> None:
            count["n"] = len(items)
            cache.replace_parents(items)

        extra: dict = {"transform": cache.pack}
    elif kind == "child":
        res = kube.resource("v1", "ConfigMap")

        def on_list(items: list) -> None:
            count["n"] = len(items)
            cache.replace_children("v1", "ConfigMap", items)

        extra = {"transform": cache.pack_child, "label_selector": "operatord.io/parent-uid"}
    else:
        res = kube.resource("v1", "Secret")

        def on_list(items: list) -> None:
            count["n"] = len(items)
            index.replace("v1", "Secret", items)

        metadata = kind == "related (metadata)"
        extra = {"transform": trim_metadata if metadata else compact, "metadata_only": metadata}
    kube._pool  # noqa: B018 - the watch client, loaded before the baseline
    gc.collect()
    base_kb = _status_kb("VmRSS")
    inf = Informer(kube, res, namespace=NS, on_list=on_list, on_event=lambda _t, _o: None, **extra)
    inf.start()
    if not inf.synced.wait(600):
        raise SystemExit("not synced within 600 s")
    gc.collect()
    after_kb = _status_kb("VmRSS")
    inf.stop()
    print(json.dumps({"kind": kind, "objects": count["n"], "grown_kb": after_kb - base_kb}))


def one(kubeconfig: str, kind: str) -> dict:
    p = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--kubeconfig", kubeconfig],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if p.returncode != 0:
        raise RuntimeError(f"{kind} run failed: {p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def json_size(api, path: str) -> float:
    """Average JSON bytes per object of the first 500 at ``path``."""
    page = api._raw("GET", path + "?limit=500")
    items = page.get("items") or []
    return sum(len(json.dumps(i)) for i in items) / max(len(items), 1)


def populate(api, objects: int, size: int) -> None:
    http_ = Http(api.port, threads=16)
    watch = WidgetWatch(api.port).start()
    op = Operatord(api, workers=2)
    try:
        op.start()
        op.wait_ready()
        watch.expect(1, objects)
        create_widgets(http_, objects)
        wait(lambda: watch.done_at is not None, 900, "converged", 0.2)
        op.stop()
        blob = base64.b64encode(os.urandom(size * 3 // 4)).decode()
        http_.map(
            lambda i: http_.must(
                "POST", SECRETS, {"metadata": {"name": f"s-{i:06d}"}, "data": {"blob": blob}}
            ),
            range(objects),
        )
    finally:
        op.stop()
        watch.stop()
        http_.close()


def spread(values: list[float], fmt: str = "{:.0f}") -> str:
    med = statistics.median(values)
    return f"{fmt.format(med)} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=20_000)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    ap.add_argument("--kubeconfig", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.kubeconfig, args.child)
        return 0
    api = new_api(args.objects)
    try:
        t0 = time.monotonic()
        populate(api, args.objects, args.size)
        print(f"  populated in {time.monotonic() - t0:.0f} s", file=sys.stderr)
        paths = {
            "parent": f"/apis/example.com/v1/namespaces/{NS}/widgets",
            "child": f"/api/v1/namespaces/{NS}/configmaps",
            "related (full)": SECRETS,
            "related (metadata)": SECRETS,
        }
        sizes = {k: json_size(api, p) for k, p in paths.items()}
        rows: dict[str, list[dict]] = {k: [] for k in KINDS}
        for run in range(args.runs):
            for kind in KINDS if run % 2 == 0 else KINDS[::-1]:
                r = one(api.kubeconfig, kind)
                if r["objects"] != args.objects:
                    print(f"warning: {r}", file=sys.stderr)
                rows[kind].append(r)
    finally:
        api.stop()
    print(
        f"# leader memory per cached object, {args.objects} objects per kind, "
        f"{args.size}-byte Secrets — {machine_line()}"
    )
    print(
        "| kind | runs | JSON as served (bytes) | leader memory per object (bytes, median (range)) |"
    )
    print("|---|---|---|---|")
    for kind in KINDS:
        per = [1024 * r["grown_kb"] / max(r["objects"], 1) for r in rows[kind]]
        print(f"| {kind} | {len(per)} | {sizes[kind]:.0f} | {spread(per)} |")
    print(f"\nload average at the end: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
