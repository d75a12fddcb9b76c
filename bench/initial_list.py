"""Benchmark: peak memory and time of a leader's start-up list, streaming against paged.

One embedded API server holds ``--parents`` Widgets (default 20,000 and 100,000; as the
example operator's parents, with managedFields). For each count, ``--runs`` rounds (default
3), each round starting one fresh process per mode, in alternating order:

- ``paged``: the parent informer lists in pages of 500 (``streaming_list=False``), as
  operatord did before streaming lists and still does on servers without them;
- ``streaming``: the parent informer's initial list is a streaming list (a watch with
  ``sendInitialEvents=true`` ending at the ``k8s.io/initial-events-end`` bookmark);
- ``+slim``: the same with ``transform=cache.slim``: each object loses its managedFields as
  it arrives (as its page is decoded, or as its event is), not once the list is complete.

Each process does what the leader does at start: an `Informer` whose ``on_list`` hands the
items to `Cache.replace_parents` (which slims them: managedFields dropped). It reports its
peak RSS (VmHWM) minus its RSS before the informer started (imports, the client), its RSS
once the cache is filled, and the seconds until the informer is synced. Medians and ranges
of the runs are printed as Markdown.

    python bench/initial_list.py --parents 20000 100000 --runs 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import NS, Http, create_widgets, machine_line, new_api  # noqa: E402

MODES = ("paged", "streaming", "paged+slim", "streaming+slim")


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(kubeconfig: str, mode: str) -> None:
    """One leader-like start: the parent informer into a Cache; prints a JSON line."""
    import gc

    from operatord.cache import Cache, slim
    from operatord.informer import Informer
    from operatord.kube import ClientSettings, Kube

    kube = Kube(ClientSettings(kubeconfig=kubeconfig))
    res = kube.resource("example.com/v1", "Widget")
    cache = Cache()
    # Both modes watch (urllib3) once synced; load it first so neither pays its import here.
    kube._pool  # noqa: B018
    gc.collect()
    base_kb = _status_kb("VmRSS")
    inf = Informer(
        kube,
        res,
        namespace=NS,
        on_list=cache.replace_parents,
        on_event=lambda _t, _o: None,
        streaming_list=mode.startswith("streaming"),
        transform=slim if mode.endswith("+slim") else None,
    )
    t0 = time.monotonic()
    inf.start()
    if not inf.synced.wait(600):
        raise SystemExit("not synced within 600 s")
    sync_s = time.monotonic() - t0
    gc.collect()
    out = {
        "mode": mode,
        "streamed": inf.last_list_streamed,
        "parents": cache.parent_count(),
        "sync_s": sync_s,
        "peak_mb": (_status_kb("VmHWM") - base_kb) / 1024,
        "after_mb": (_status_kb("VmRSS") - base_kb) / 1024,
    }
    inf.stop()
    print(json.dumps(out), flush=True)


def one(kubeconfig: str, mode: str) -> dict:
    p = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--kubeconfig", kubeconfig],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if p.returncode != 0:
        raise RuntimeError(f"{mode} run failed: {p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def spread(values: list[float], fmt: str = "{:.0f}") -> str:
    med = statistics.median(values)
    return f"{fmt.format(med)} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parents", type=int, nargs="+", default=[20_000, 100_000])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--kubeconfig", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.kubeconfig, args.child)
        return 0
    print(f"# leader start-up list: streaming against paged — {machine_line()}")
    print(
        "| parents | mode | runs | peak RSS growth (MB, median (range)) | "
        "RSS with the cache filled (MB) | time to synced (s) |"
    )
    print("|---|---|---|---|---|---|")
    failed = False
    for n in args.parents:
        api = new_api(n)
        try:
            http_ = Http(api.port, threads=16)
            try:
                create_widgets(http_, n)
            finally:
                http_.close()
            rows: dict[str, list[dict]] = {m: [] for m in MODES}
            for run in range(args.runs):
                order = MODES if run % 2 == 0 else MODES[::-1]  # no mode always first
                for mode in order:
                    r = one(api.kubeconfig, mode)
                    if r["parents"] != n or r["streamed"] != mode.startswith("streaming"):
                        print(f"warning: unexpected run {r}", file=sys.stderr)
                        failed = True
                    rows[mode].append(r)
            for mode in MODES:
                rs = rows[mode]
                print(
                    f"| {n} | {mode} | {len(rs)} | {spread([r['peak_mb'] for r in rs])} | "
                    f"{spread([r['after_mb'] for r in rs])} | "
                    f"{spread([r['sync_s'] for r in rs], '{:.2f}')} |",
                    flush=True,
                )
            med = {m: statistics.median(r["peak_mb"] for r in rows[m]) for m in MODES}
            for a, b in (("streaming", "paged"), ("streaming+slim", "paged+slim")):
                print(
                    f"- {n} parents: {a} peak {med[a]:.0f} MB against {b} {med[b]:.0f} MB "
                    f"({med[a] / med[b] - 1:+.0%})",
                    flush=True,
                )
        finally:
            api.stop()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
