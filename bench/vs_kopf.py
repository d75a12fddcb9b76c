"""Benchmark: operatord against kopf on the same job, side by side, plus the raw-write floor.

The job is the example Widget operator (examples/widgets.py; its kopf twin is
bench/kopf_widgets.py): per Widget a finalizer, one owned ConfigMap holding the spec, and a
status with ``ready`` and ``observedGeneration``. Every system of every scenario runs on a fresh
embedded API server (`operatord.testing.ApiServer`), in this one run:

- raw-write floor: no operator; writer processes issue the same writes directly over keep-alive
  plain HTTP (per Widget: its create, the finalizer patch, the ConfigMap create, the status
  patch; per update: the spec patch, the ConfigMap patch, the status patch), one handler's CPU
  burn per Widget in the ``cpu`` scenario: the API server's limit, not the client's;
- operatord (`operatord run`, leader + ``--workers`` worker processes), once per worker count;
- kopf (`python -m kopf run bench/kopf_widgets.py --standalone --all-namespaces -q`), its
  synchronous handlers on kopf's default thread pool (min(32, CPUs + 4) threads) unless
  ``--kopf-threads`` sets ``settings.execution.max_workers``; the size it ran with is printed
  after the table.

Scenarios: ``none`` (no added latency), ``latency`` (10 ms added to every API request by the
server's fault injection), ``cpu`` (the handler burns 10 ms of CPU per call).

Each system is ready before anything is timed: operatord's /readyz answers 200; kopf has
opened its own watch on Widgets (its User-Agent in the API server's audit log, so the
benchmark's watch never stands in for it).

Per system: converge (s) from the first create of N Widgets until every one is ready with
observedGeneration = generation (seen by a watch); update wave (s) from the first of N spec
changes until every status shows the new generation and ready; restart (s) from launching a
fresh process over the N converged Widgets until every one was handled (operatord:
syncs_total + syncs_skipped_total >= N, the skipped ones with skipUnchanged; kopf: N resume
handler calls), with the CPU seconds of its process tree up to that moment (start-up
included), its handler calls and the writes it made; CPU seconds and peak
RSS of the operator's process tree (/proc) over converge + update wave; API writes (the
operator's non-read requests in the server's audit log) and 409 answers.

    python bench/vs_kopf.py [--parents 1000] [--scenarios none latency cpu] [--workers 1 2]
                            [--in-flight 16] [--systems floor operatord kopf]
                            [--skip-unchanged on off] [--in-flight-adaptive on off] [--kopf-threads N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    CONFIGMAPS,
    MERGE_PATCH,
    WIDGETS,
    Http,
    Kopf,
    Operatord,
    ProcTree,
    WidgetWatch,
    audit,
    change_spec,
    conflicts,
    create_widgets,
    kopf_pool_line,
    load_average,
    machine,
    machine_line,
    new_api,
    wait,
    wait_idle,
    widget_body,
    widget_name,
    writes,
)

SCENARIOS: dict[str, dict[str, Any]] = {
    "none": {"latency": 0.0, "burn": 0.0, "title": "no added latency"},
    "latency": {"latency": 0.010, "burn": 0.0, "title": "10 ms added to every API request"},
    "cpu": {"latency": 0.0, "burn": 0.010, "title": "handler burns 10 ms of CPU per call"},
}
COLUMNS = [
    ("scenario", "scenario"),
    ("system", "system"),
    ("converge_s", "converge (s)"),
    ("update_s", "update wave (s)"),
    ("restart_s", "restart (s)"),
    ("restart_cpu_s", "restart CPU (s)"),
    ("cpu_s", "CPU (s)"),
    ("rss_mb", "peak RSS (MB)"),
    ("pss_mb", "peak PSS (MB)"),
    ("writes", "API writes"),
    ("conflicts", "409s"),
    ("restart_writes", "restart writes"),
    ("restart_calls", "restart handler calls"),
    ("calls", "handler calls"),
    ("missing", "missing"),
]


# ---- operatord and kopf ---------------------------------------------------------------------


def run_system(make, scenario: dict, parents: int, threads: int, timeout: float) -> dict:
    """Converge, update wave and restart of one system on a fresh API server."""
    api = new_api(parents, scenario["latency"])
    http_ = Http(api.port, threads)
    watch = WidgetWatch(api.port).start()
    system = make(api)
    row: dict[str, Any] = {"system": system.label, "missing": 0}
    try:
        audit(api)
        tree = ProcTree(system.start())
        system.wait_ready()
        audit(api)  # start-up requests are not part of the job
        cpu0 = tree.cpu()

        # converge: N new Widgets
        watch.expect(1, parents)
        t0 = time.monotonic()
        create_widgets(http_, parents)
        row["create_s"] = time.monotonic() - t0
        row["converge_s"] = _wait_done(watch, t0, timeout, "converge", row, parents)
        wait_idle(tree, timeout)  # not timed: leftovers of converge do not slow the wave
        reqs = audit(api)

        # update wave: every spec changed
        watch.expect(2, parents)
        t1 = time.monotonic()
        http_.map(lambda i: change_spec(http_, i, i % 7 + 10), range(parents))
        row["update_s"] = _wait_done(watch, t1, timeout, "update wave", row, parents)
        wait_idle(tree, timeout)  # the CPU of work done after the last status counts too
        row["cpu_s"] = tree.cpu() - cpu0
        row["calls"] = system.calls()
        if getattr(system, "pool_size", None):
            row["kopf_threads"] = system.pool_size
        system.stop()
        tree.stop()
        row["rss_mb"] = tree.peak_rss / 1e6
        row["pss_mb"] = tree.peak_pss / 1e6
        reqs += audit(api)  # after stop: every write the system made is in
        row["writes"] = writes(reqs) - 2 * parents  # not the benchmark's creates and changes
        row["conflicts"] = conflicts(reqs)

        # restart over N converged Widgets
        t2 = time.monotonic()
        tree = ProcTree(system.start())
        try:
            wait(lambda: system.handled() >= parents, timeout, "restart", 0.02)
            row["restart_s"] = time.monotonic() - t2
            row["restart_cpu_s"] = tree.cpu()
            row["restart_calls"] = system.calls()
        except AssertionError as exc:
            print(f"  {system.label}: {exc}", file=sys.stderr)
            row["restart_s"] = None
        system.stop()
        tree.stop()
        row["restart_writes"] = writes(audit(api))
    except BaseException:
        print(system.output()[-3000:], file=sys.stderr)
        raise
    finally:
        system.stop()
        watch.stop()
        http_.close()
        api.stop()
    return row


def _wait_done(
    watch: WidgetWatch, t0: float, timeout: float, what: str, row: dict, parents: int
) -> float | None:
    try:
        wait(lambda: watch.done_at is not None, timeout, what, 0.01)
    except AssertionError as exc:
        print(f"  {row['system']}: {exc} ({watch.done()}/{parents})", file=sys.stderr)
        row["missing"] = max(row["missing"], parents - watch.done())
        return None
    return watch.done_at - t0


# ---- the raw-write floor --------------------------------------------------------------------


def _floor_thread(port: int, phase: str, indices: list[int], burn: float) -> None:
    from burn import burn_cpu

    http_ = Http(port, 1)
    for i in indices:
        name = widget_name(i)
        path = f"{WIDGETS}/{name}"
        burn_cpu(burn)
        if phase == "converge":
            w = http_.must("POST", WIDGETS, widget_body(i))
            http_.must(
                "PATCH",
                path,
                {"metadata": {"finalizers": ["bench.example.com/floor"]}},
                MERGE_PATCH,
            )
            owner = {
                "apiVersion": w["apiVersion"],
                "kind": w["kind"],
                "name": name,
                "uid": w["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
            cm = {
                "metadata": {"name": name, "ownerReferences": [owner]},
                "data": {"size": str(i % 7), "message": "hello"},
            }
            http_.must("POST", CONFIGMAPS, cm)
        else:
            w = change_spec(http_, i, i % 7 + 10)
            cm = {"data": {"size": str(i % 7 + 10)}}
            http_.must("PATCH", f"{CONFIGMAPS}/{name}", cm, MERGE_PATCH)
        status = {
            "ready": True,
            "configMap": name,
            "observedGeneration": w["metadata"]["generation"],
        }
        http_.must("PATCH", path + "/status", {"status": status}, MERGE_PATCH)
    http_.close()


def _floor_process(port, phase, indices, threads, burn, ready, go, out) -> None:
    shares = [indices[k::threads] for k in range(threads)]
    workers = [
        threading.Thread(target=_floor_thread, args=(port, phase, share, burn)) for share in shares
    ]
    ready.put(1)
    go.wait()
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    out.put(time.monotonic())


def run_floor(scenario: dict, parents: int, procs: int, threads: int) -> dict:
    api = new_api(parents, scenario["latency"])
    ctx = mp.get_context("spawn")
    row: dict[str, Any] = {"system": f"raw-write floor ({procs}x{threads} HTTP)", "missing": 0}
    try:
        audit(api)
        for phase in ("converge", "update"):
            ready, go, out = ctx.Queue(), ctx.Event(), ctx.Queue()
            indices = list(range(parents))
            ps = [
                ctx.Process(
                    target=_floor_process,
                    args=(
                        api.port,
                        phase,
                        indices[k::procs],
                        threads,
                        scenario["burn"],
                        ready,
                        go,
                        out,
                    ),
                )
                for k in range(procs)
            ]
            for p in ps:
                p.start()
            for _ in ps:
                ready.get(timeout=60)
            t0 = time.monotonic()
            go.set()
            ends = [out.get(timeout=600) for _ in ps]
            for p in ps:
                p.join()
                if p.exitcode:
                    raise SystemExit(f"floor writer failed in {phase} (exit {p.exitcode})")
            row[f"{phase}_s"] = max(ends) - t0
        reqs = audit(api)
        row["writes"] = writes(reqs) - 2 * parents
        row["conflicts"] = conflicts(reqs)
    finally:
        api.stop()
    return row


# ---- output ---------------------------------------------------------------------------------


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "—"
    if key in ("converge_s", "update_s", "restart_s", "cpu_s"):
        return f"{value:.1f}"
    if key == "restart_cpu_s":
        return f"{value:.2f}"
    if key in ("rss_mb", "pss_mb"):
        return f"{value:.0f}"
    return str(value)


def table_header() -> str:
    return "\n".join(
        [
            "| " + " | ".join(title for _, title in COLUMNS) + " |",
            "|" + "---|" * len(COLUMNS),
        ]
    )


def table_row(row: dict) -> str:
    return "| " + " | ".join(_cell(k, row.get(k)) for k, _ in COLUMNS) + " |"


def _ratio(a: Any, b: Any) -> str:
    if not a or not b:
        return "—"
    return f"{a / b:.2f}x"


def ratio_lines(rows: list[dict]) -> list[str]:
    lines = []
    for name in dict.fromkeys(r["scenario"] for r in rows):
        rs = [r for r in rows if r["scenario"] == name]
        kopf = next((r for r in rs if r["system"] == "kopf"), None)
        floor = next((r for r in rs if r["system"].startswith("raw-write floor")), None)
        ops = [r for r in rs if r["system"].startswith("operatord")]
        for op in ops:
            parts = []
            if kopf:
                parts.append(
                    ", ".join(
                        f"{title} {_ratio(op.get(key), kopf.get(key))}"
                        for key, title in (
                            ("converge_s", "converge"),
                            ("update_s", "update wave"),
                            ("restart_s", "restart"),
                            ("restart_cpu_s", "restart CPU"),
                            ("cpu_s", "CPU"),
                            ("rss_mb", "peak RSS"),
                            ("pss_mb", "peak PSS"),
                            ("writes", "API writes"),
                        )
                    )
                )
            if floor:
                parts.append(
                    f"converge {_ratio(op.get('converge_s'), floor.get('converge_s'))} "
                    f"and update wave {_ratio(op.get('update_s'), floor.get('update_s'))} "
                    "of the raw-write floor"
                )
            if parts:
                vs = "/kopf: " if kopf else ": "
                lines.append(f"- {name}: {op['system']}{vs}" + "; ".join(parts))
        if len(ops) > 1:
            base = ops[0]
            for op in ops[1:]:
                lines.append(
                    f"- {name}: {op['system']} converges "
                    f"{_ratio(base.get('converge_s'), op.get('converge_s'))} as fast as "
                    f"{base['system']} (update wave "
                    f"{_ratio(base.get('update_s'), op.get('update_s'))})"
                )
    return lines


def system_factories(args: argparse.Namespace, sc: dict) -> list:
    """Per system to run in scenario ``sc``: a function of the API server making it."""
    out = []
    if "operatord" in args.systems:
        for adaptive in args.in_flight_adaptive:
            for skip in args.skip_unchanged:
                for w in args.workers:
                    out.append(
                        lambda api, w=w, skip=skip, adaptive=adaptive: Operatord(
                            api,
                            workers=w,
                            in_flight=args.in_flight,
                            burn=sc["burn"] > 0,
                            skip_unchanged=skip == "on",
                            adaptive=adaptive == "on",
                        )
                    )
    if "kopf" in args.systems:
        out.append(lambda api: Kopf(api, burn=sc["burn"], threads=args.kopf_threads))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parents", type=int, default=1000)
    ap.add_argument("--scenarios", nargs="+", choices=list(SCENARIOS), default=list(SCENARIOS))
    ap.add_argument("--workers", type=int, nargs="+", default=[2], help="operatord worker counts")
    ap.add_argument(
        "--in-flight",
        type=int,
        default=None,
        help="operatord's inFlightPerWorker (passed only when given)",
    )
    ap.add_argument(
        "--systems",
        nargs="+",
        choices=["floor", "operatord", "kopf"],
        default=["floor", "operatord", "kopf"],
    )
    ap.add_argument(
        "--skip-unchanged",
        nargs="+",
        choices=["on", "off"],
        default=["on"],
        help="operatord's skipUnchanged (one operatord row per value)",
    )
    ap.add_argument(
        "--in-flight-adaptive",
        nargs="+",
        choices=["on", "off"],
        default=["on"],
        help="operatord's inFlightAdaptive (one operatord row per value)",
    )
    ap.add_argument(
        "--kopf-threads",
        type=int,
        default=None,
        help="kopf's thread pool for sync handlers (default: kopf's, min(32, CPUs + 4))",
    )
    ap.add_argument("--client-threads", type=int, default=32, help="benchmark's HTTP threads")
    ap.add_argument("--floor-procs", type=int, default=2, help="raw-write floor processes")
    ap.add_argument(
        "--floor-threads",
        type=int,
        default=None,
        help="connections per floor process (default 8, or 64 with added latency)",
    )
    ap.add_argument("--timeout", type=float, default=600, help="deadline per phase (s)")
    ap.add_argument("--json", help="also write the rows as JSON to this file")
    args = ap.parse_args()
    load_start = load_average()

    print(
        f"# operatord vs kopf: {args.parents} parents, "
        f"scenarios {', '.join(args.scenarios)} — {machine_line()}\n"
    )
    for name in args.scenarios:
        print(f"- {name}: {SCENARIOS[name]['title']}")
    print()
    print(table_header(), flush=True)
    rows: list[dict] = []

    def record(name: str, row: dict) -> None:
        row["scenario"] = name
        rows.append(row)
        print(table_row(row), flush=True)

    for name in args.scenarios:
        sc = SCENARIOS[name]
        if "floor" in args.systems:
            threads = args.floor_threads or (64 if sc["latency"] else 8)
            record(name, run_floor(sc, args.parents, args.floor_procs, threads))
        for make in system_factories(args, sc):
            record(name, run_system(make, sc, args.parents, args.client_threads, args.timeout))
    print()
    for line in ratio_lines(rows):
        print(line)
    pool = kopf_pool_line(rows)
    if pool:
        print(f"\n{pool}")
    load_end = load_average()
    print(f"\nload average at the end: {load_end}")
    if args.json:
        result = {
            "machine": machine(),
            "parents": args.parents,
            "load_start": load_start,
            "load_end": load_end,
            "rows": rows,
        }
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 1 if any(r.get("missing") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
