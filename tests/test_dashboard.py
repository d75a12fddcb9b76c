"""The Grafana dashboard: valid shape, and every metric it queries is one the daemon exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from operatord.metrics import CATALOG

DASHBOARD = Path(__file__).resolve().parents[1] / "helm/operatord/dashboards/operatord.json"

# sample name -> labels of the metric that exposes it (every series names its controller)
EXPORTED: dict[str, set[str]] = {
    sample: {*m.labels, "controller"} for m in CATALOG for sample in m.sample_names()
}
# labels Prometheus adds at scrape time, and the histogram bucket label
TARGET_LABELS = {"namespace", "pod", "job", "instance", "container", "service", "le"}
METRIC_RE = re.compile(r"\boperatord_[A-Za-z0-9_:]+")


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def all_panels(dashboard: dict) -> list[dict]:
    out = []
    for p in dashboard["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # collapsed rows nest their panels
    return out


def exprs(dashboard: dict) -> list[tuple[str, str]]:
    found = [(p["title"], t["expr"]) for p in all_panels(dashboard) for t in p.get("targets", [])]
    for var in dashboard["templating"]["list"]:
        q = var.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if var["type"] == "query":
            found.append((f"variable {var['name']}", q))
    return found


def test_dashboard_shape(dashboard):
    for key in ("title", "uid", "panels", "templating", "schemaVersion", "time"):
        assert key in dashboard, key
    assert isinstance(dashboard["schemaVersion"], int)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in all_panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in all_panels(dashboard):
        assert p["title"] and p["type"]
        g = p["gridPos"]
        assert 0 <= g["x"] and g["w"] > 0 and g["x"] + g["w"] <= 24 and g["h"] > 0
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}"
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs))
        for t in p["targets"]:
            assert t["expr"].strip()
            assert t["datasource"]["uid"] == "${datasource}"


def test_panels_do_not_overlap(dashboard):
    cells = set()
    for p in dashboard["panels"]:
        g = p["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps another panel"
                cells.add((x, y))


def test_every_referenced_metric_is_exported(dashboard):
    for title, expr in exprs(dashboard):
        names = METRIC_RE.findall(expr)
        assert names, f"{title}: no operatord metric in {expr!r}"
        for name in names:
            assert name in EXPORTED, f"{title}: {name} is not exported by operatord"


def test_grouping_labels_exist_on_the_metric(dashboard):
    for title, expr in exprs(dashboard):
        labels = set().union(*(EXPORTED[n] for n in METRIC_RE.findall(expr))) | TARGET_LABELS
        for group in re.findall(r"\b(?:by|on|without)\s*\(([^)]*)\)", expr):
            for label in filter(None, (x.strip() for x in group.split(","))):
                assert label in labels, f"{title}: grouping by unknown label {label!r}"
        for label in re.findall(r"[{,]\s*([A-Za-z_]+)\s*(?:=~|!~|!=|=)", expr):
            assert label in labels, f"{title}: selecting on unknown label {label!r}"


def test_expressions_are_balanced_and_use_rate_intervals(dashboard):
    pairs = {")": "(", "]": "[", "}": "{"}
    for title, expr in exprs(dashboard):
        stack = []
        for ch in re.sub(r'"[^"]*"', '""', expr):
            if ch in "([{":
                stack.append(ch)
            elif ch in pairs:
                assert stack and stack.pop() == pairs[ch], f"{title}: unbalanced {expr!r}"
        assert not stack, f"{title}: unbalanced {expr!r}"
        if "_bucket" in expr:
            assert "histogram_quantile(" in expr and "by (le" in expr, title
        for name in METRIC_RE.findall(expr):
            if name.endswith(("_total", "_bucket")):
                assert re.search(rf"(rate|increase)\({name}\b", expr), f"{title}: raw counter"


def test_required_panels_are_present(dashboard):
    text = json.dumps(dashboard)
    for metric in (
        "operatord_syncs_total",
        "operatord_sync_duration_seconds_bucket",
        "operatord_queue_depth",
        "operatord_queue_wait_seconds_bucket",
        "operatord_parents_backing_off",
        "operatord_retries_total",
        "operatord_leader",
        "operatord_leader_transitions_total",
        "operatord_workers_alive",
        "operatord_worker_restarts_total",
        "operatord_api_requests_total",
        "operatord_api_request_duration_seconds_bucket",
        "operatord_watch_restarts_total",
        "operatord_cached_objects",
        "operatord_finalize_duration_seconds_bucket",
        "operatord_worker_resident_memory_bytes",
        "operatord_worker_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
    ):
        assert metric in text, metric
    quantiles = {
        q
        for _, e in exprs(dashboard)
        if "operatord_sync_duration_seconds_bucket" in e
        for q in re.findall(r"histogram_quantile\(([0-9.]+)", e)
    }
    assert quantiles == {"0.5", "0.9", "0.99"}


# Series of one controller of the daemon: they carry its name as `controller` (several
# controllers per daemon each have their own). Every other operatord series is the daemon's
# (leader, workers, API requests, shared watches and caches, shards, build info).
PER_CONTROLLER = {
    "operatord_syncs_total",
    "operatord_handler_calls_total",
    "operatord_sync_duration_seconds_bucket",
    "operatord_finalizes_total",
    "operatord_finalize_duration_seconds_bucket",
    "operatord_queue_depth",
    "operatord_in_flight",
    "operatord_queue_wait_seconds_bucket",
    "operatord_parents_backing_off",
    "operatord_retries_total",
    "operatord_child_writes_total",
    "operatord_status_writes_total",
    "operatord_finalizer_writes_total",
    "operatord_events_total",
}


def test_per_controller_sets_name_exported_metrics():
    assert PER_CONTROLLER <= set(EXPORTED)


def test_controller_variable_lists_each_controller_of_the_daemon(dashboard):
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert {"namespace", "job", "controller", "pod"} <= set(variables)
    query = variables["controller"]["query"]["query"]
    # from a series every controller has (its own work queue), not from the daemon's build info,
    # which names the daemon once
    (metric,) = METRIC_RE.findall(query)
    assert metric in PER_CONTROLLER and metric.endswith("queue_depth")
    assert query.endswith(", controller)")
    assert variables["controller"]["multi"] and variables["controller"]["includeAll"]
    # the pods of the daemon serve every controller: the pod list does not depend on it
    assert "$controller" not in variables["pod"]["query"]["query"]


def test_controller_and_pod_variables_filter_every_operatord_query(dashboard):
    seen = set()
    for title, expr in exprs(dashboard):
        if title.startswith("variable"):
            continue
        for name, selector in re.findall(r"(operatord_[a-z_]+)\{([^}]*)\}", expr):
            assert 'pod=~"$pod"' in selector, title
            if name in PER_CONTROLLER:
                assert 'controller=~"$controller"' in selector, title
            else:  # the daemon's series: choosing a controller must not hide them
                assert "controller" not in selector, title
            seen.add(name in PER_CONTROLLER)
    assert seen == {True, False}
