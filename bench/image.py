"""Benchmark: the operatord image's size, start-to-ready time, memory and SIGTERM-to-exit time.

Builds the image with .ci/build-image (as `make image` does), then runs it ``--runs`` times the
way the chart's Deployment does (tests/e2e/container.py: chart defaults, the example Widget
handler in the image) against the embedded API server, and reports per run:
- start to ready: from `run` until /readyz answers 200 (leader elected, caches synced, workers
  up), container creation included;
- idle memory: RSS and PSS summed over the container's processes 5 s after ready, no parents;
- memory after ``--parents`` Widgets converged, 5 s later;
- SIGTERM to exit, and the exit code.
It prints medians and ranges. Runs in the test virtualenv (it renders the chart with Helm):

    .venv/bin/python bench/image.py --runs 5 --parents 100
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml
from kubernetes import client

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "tests" / "e2e")]

from container import Container, build_image, find_engine  # noqa: E402
from harness import machine_line  # noqa: E402
from test_helm import render_objects  # noqa: E402
from widgets import create_widget  # noqa: E402

from operatord.testing import ApiServer, free_port, wait_for  # noqa: E402

NAMESPACE = "operators"
SETTLE_SECONDS = 5.0  # measured time, not a wait for a condition


def mb(n: float) -> str:
    return f"{n / 1e6:.0f} MB"


def spread(values: list[float], fmt: str) -> str:
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def one_run(engine, api, kube, image: str, workdir: Path, parents: int) -> dict:
    repository, tag = image.rsplit(":", 1)
    values = {
        "image": {"repository": repository, "tag": tag},
        "config": {"metrics": {"port": free_port()}, "health": {"port": free_port()}},
    }
    pod = Container(
        engine,
        render_objects(values, namespace=NAMESPACE),
        kubeconfig=api.kubeconfig,
        workdir=workdir,
        pod_name=f"bench-{uuid.uuid4().hex[:6]}",
        namespace=NAMESPACE,
    )
    try:
        ready = pod.start().wait_ready(timeout=120)
        time.sleep(SETTLE_SECONDS)
        idle = pod.memory()
        ns = f"b-{uuid.uuid4().hex[:6]}"
        client.CoreV1Api(kube).create_namespace({"metadata": {"name": ns}})
        custom = client.CustomObjectsApi(kube)
        t0 = time.monotonic()
        for i in range(parents):
            create_widget(kube, ns, f"w{i}", size=i % 7)

        def converged() -> bool:
            items = custom.list_namespaced_custom_object("example.com", "v1", ns, "widgets")
            return sum(1 for w in items["items"] if (w.get("status") or {}).get("ready")) >= parents

        wait_for(converged, 300, 0.2, "convergence")
        converge = time.monotonic() - t0
        time.sleep(SETTLE_SECONDS)
        loaded = pod.memory()
        code, stop = pod.stop()
    finally:
        pod.remove()
    return {
        "ready_s": ready,
        "idle_rss": idle["rss_mb"],
        "idle_pss": idle["pss_mb"],
        "processes": idle["processes"],
        "converge_s": converge,
        "loaded_rss": loaded["rss_mb"],
        "loaded_pss": loaded["pss_mb"],
        "stop_s": stop,
        "exit": code,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--parents", type=int, default=100)
    ap.add_argument("--image", default="operatord:bench")
    args = ap.parse_args()
    engine = find_engine()
    if engine is None:
        raise SystemExit("no container engine (docker or podman); `make tools` installs podman")
    t0 = time.monotonic()
    image = build_image(engine, args.image)
    build_s = time.monotonic() - t0
    size = engine.image_size(image)
    labels = engine.run("image", "inspect", "--format", "{{json .Config.Labels}}", image).stdout
    base = yaml.safe_load(labels)["org.opencontainers.image.base.name"]
    base_size = engine.image_size(base)
    workdir = Path(tempfile.mkdtemp(prefix="operatord-bench-image-"))
    rows = []
    with ApiServer() as api:
        kube = api.client()
        crd = yaml.safe_load((REPO / "examples" / "widget-crd.yaml").read_text())
        client.ApiextensionsV1Api(kube).create_custom_resource_definition(crd)
        client.CoreV1Api(kube).create_namespace({"metadata": {"name": NAMESPACE}})
        for _ in range(args.runs):
            rows.append(one_run(engine, api, kube, image, workdir, args.parents))
    print(f"# operatord image benchmark — {engine.name}, {machine_line()}")
    print(f"image {image}: {mb(size)}; base {base}: {mb(base_size)} ({base_size / size:.0%})")
    print(f"build on a warm cache: {build_s:.1f} s")
    print(f"{args.runs} runs, median (range); chart defaults (2 workers), {args.parents} Widgets\n")
    print("| measure | value |")
    print("|---|---|")
    print(f"| start to ready (s) | {spread([r['ready_s'] for r in rows], '.2f')} |")
    print(f"| processes | {spread([r['processes'] for r in rows], '.0f')} |")
    print(f"| idle RSS, all processes (MiB) | {spread([r['idle_rss'] for r in rows], '.0f')} |")
    print(f"| idle PSS, all processes (MiB) | {spread([r['idle_pss'] for r in rows], '.0f')} |")
    print(
        f"| {args.parents} Widgets converge (s) | {spread([r['converge_s'] for r in rows], '.2f')} |"
    )
    print(f"| RSS after converging (MiB) | {spread([r['loaded_rss'] for r in rows], '.0f')} |")
    print(f"| PSS after converging (MiB) | {spread([r['loaded_pss'] for r in rows], '.0f')} |")
    print(f"| SIGTERM to exit (s) | {spread([r['stop_s'] for r in rows], '.2f')} |")
    print(f"| exit codes | {sorted({r['exit'] for r in rows})} |")


if __name__ == "__main__":
    main()
