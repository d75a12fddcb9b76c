"""Metrics catalog, recorder validation, worker deltas across processes, /metrics exposition."""

from __future__ import annotations

import pickle
import re
import urllib.request
from pathlib import Path

import multiprocess
import pytest
from prometheus_client.parser import text_string_to_metric_families

from operatord.metrics import (
    CATALOG,
    PREFIX,
    DeltaRecorder,
    MetricError,
    Metrics,
    metrics_reference_markdown,
)

ROOT = Path(__file__).resolve().parents[1]


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Parse an exposition into {(sample name, labels): value}."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return samples(metrics.render().decode()).get((name, frozenset(labels.items())))


def test_catalog_names_prefix_and_types():
    names = [m.name for m in CATALOG]
    assert len(names) == len(set(names))
    for m in CATALOG:
        assert m.full_name.startswith(PREFIX)
        assert m.type in {"counter", "gauge", "histogram"}
        assert m.help.strip()
        assert (m.type == "counter") == m.name.endswith("_total")
        assert (m.buckets is not None) == (m.type == "histogram")
        assert "uid" not in m.labels and "name" not in m.labels and "namespace" not in m.labels
    required = {
        "syncs_total", "sync_duration_seconds", "finalizes_total", "finalize_duration_seconds",
        "queue_depth", "queue_wait_seconds", "parents_backing_off", "retries_total",
        "child_writes_total", "status_writes_total", "finalizer_writes_total",
        "watch_events_total", "watch_restarts_total", "cached_objects", "workers_alive",
        "worker_restarts_total", "api_requests_total", "api_request_duration_seconds",
        "leader", "leader_transitions_total", "build_info",
    }  # fmt: skip
    assert required <= set(names)


def test_every_catalog_metric_is_exposed_with_help_and_type():
    m = Metrics(version="1.2.3")
    families = {f.name: f for f in text_string_to_metric_families(m.render().decode())}
    for spec in CATALOG:
        # the parser strips _total from counter family names
        fam = families[spec.full_name.removesuffix("_total")]
        assert fam.type == spec.type
        assert fam.documentation == spec.help


def test_recording_shows_in_render():
    m = Metrics(version="1.2.3")
    m.inc("syncs_total", {"result": "ok"})
    m.inc("syncs_total", {"result": "ok"}, value=2)
    m.observe("sync_duration_seconds", 0.2, {"result": "ok"})
    m.set("queue_depth", 7, {"worker": 1})  # values are stringified
    m.inc("child_writes_total", {"kind": "ConfigMap", "operation": "create"})
    s = samples(m.render().decode())
    assert s[("operatord_syncs_total", frozenset({("result", "ok")}))] == 3
    assert s[("operatord_syncs_total", frozenset({("result", "error")}))] == 0  # pre-initialised
    assert s[("operatord_sync_duration_seconds_count", frozenset({("result", "ok")}))] == 1
    le = frozenset({("result", "ok"), ("le", "0.25")})
    assert s[("operatord_sync_duration_seconds_bucket", le)] == 1
    assert s[("operatord_queue_depth", frozenset({("worker", "1")}))] == 7
    cw = frozenset({("kind", "ConfigMap"), ("operation", "create")})
    assert s[("operatord_child_writes_total", cw)] == 1
    import platform

    bi = frozenset({("version", "1.2.3"), ("python", platform.python_version())})
    assert s[("operatord_build_info", bi)] == 1


@pytest.mark.parametrize("recorder", [Metrics, DeltaRecorder])
def test_validation_raises_at_the_call(recorder):
    r = recorder()
    with pytest.raises(MetricError, match="unknown metric"):
        r.inc("sync_total", {"result": "ok"})
    with pytest.raises(MetricError, match="unknown metric"):
        r.inc("operatord_syncs_total", {"result": "ok"})  # names are without prefix
    with pytest.raises(MetricError, match="takes labels"):
        r.inc("syncs_total")
    with pytest.raises(MetricError, match="takes labels"):
        r.inc("syncs_total", {"result": "ok", "uid": "x"})
    with pytest.raises(MetricError, match="not in"):
        r.inc("syncs_total", {"result": "okay"})
    with pytest.raises(MetricError, match="not allowed"):
        r.observe("syncs_total", 1.0, {"result": "ok"})
    with pytest.raises(MetricError, match="not allowed"):
        r.set("retries_total", 3)
    with pytest.raises(MetricError, match="not allowed"):
        r.inc("queue_wait_seconds")
    with pytest.raises(MetricError, match="only go up"):
        r.inc("retries_total", value=-1)
    with pytest.raises(MetricError, match="not a number"):
        r.set("workers_alive", "three")
    r.inc("workers_alive", value=-1)  # gauges may go down


def test_delta_recorder_coalesces_counters_and_keeps_gauge_order():
    d = DeltaRecorder()
    d.inc("retries_total")
    d.inc("retries_total", value=2)
    d.set("workers_alive", 1)
    d.set("workers_alive", 3)
    d.observe("queue_wait_seconds", 0.5)
    deltas = d.drain()
    assert ("inc", "retries_total", (), 3.0) in deltas
    gauge_ops = [x for x in deltas if x[1] == "workers_alive"]
    assert gauge_ops == [("set", "workers_alive", (), 1.0), ("set", "workers_alive", (), 3.0)]
    assert d.drain() == [] and len(d) == 0
    m = Metrics()
    m.apply(deltas)
    assert value(m, "operatord_workers_alive") == 3
    assert value(m, "operatord_retries_total") == 3


def test_apply_rejects_a_malformed_batch_without_applying_any_of_it():
    m = Metrics()
    good = ("inc", "retries_total", (), 1.0)
    with pytest.raises(MetricError):
        m.apply([good, ("inc", "nope_total", (), 1.0)])
    with pytest.raises(MetricError):
        m.apply([good, ("inc", "retries_total")])
    assert value(m, "operatord_retries_total") == 0


def _worker(conn, syncs: int) -> None:
    """A 'worker process': records through a DeltaRecorder and ships the drained deltas."""
    from operatord.metrics import DeltaRecorder

    rec = DeltaRecorder()
    for _ in range(syncs):
        rec.inc("syncs_total", {"result": "ok"})
        rec.observe("sync_duration_seconds", 0.01, {"result": "ok"})
    rec.inc("child_writes_total", {"kind": "ConfigMap", "operation": "apply"})
    conn.send({"op": "metrics", "deltas": rec.drain()})
    conn.close()


def test_deltas_cross_a_spawned_process_and_counters_survive_worker_restarts():
    ctx = multiprocess.get_context("spawn")
    m = Metrics()
    for syncs in (3, 4):  # the second process stands for a restarted worker
        parent_end, child_end = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(child_end, syncs))
        proc.start()
        assert parent_end.poll(60), "worker sent nothing"
        msg = parent_end.recv()
        proc.join(30)
        assert proc.exitcode == 0
        m.apply(msg["deltas"])
    assert value(m, "operatord_syncs_total", result="ok") == 7
    assert value(m, "operatord_sync_duration_seconds_count", result="ok") == 7
    assert value(m, "operatord_child_writes_total", kind="ConfigMap", operation="apply") == 2


def test_drained_deltas_are_plain_data():
    d = DeltaRecorder()
    d.inc("api_requests_total", {"verb": "GET", "code": 200})
    d.observe("api_request_duration_seconds", 0.003, {"verb": "GET"})
    deltas = d.drain()

    def plain(x):
        if isinstance(x, (tuple, list)):
            return all(plain(i) for i in x)
        return isinstance(x, (str, float, int))

    assert plain(deltas)
    assert pickle.loads(pickle.dumps(deltas)) == deltas


def test_serve_on_free_port_and_scrape_over_http():
    m = Metrics()
    port = m.serve(0, host="127.0.0.1")
    try:
        assert port > 0 and m.port == port
        m.inc("watch_restarts_total", {"resource": "widgets.example.com", "reason": "expired"})
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            text = resp.read().decode()
        lbl = frozenset({("resource", "widgets.example.com"), ("reason", "expired")})
        assert samples(text)[("operatord_watch_restarts_total", lbl)] == 1
        assert "_created" not in text
    finally:
        m.stop()
    m.stop()  # idempotent


def test_reference_markdown_lists_every_metric_and_docs_are_current():
    md = metrics_reference_markdown()
    for spec in CATALOG:
        assert re.search(rf"^\| `{spec.full_name}` \| {spec.type} \|", md, re.M)
    doc = (ROOT / "docs" / "metrics.md").read_text()
    assert md in doc, "docs/metrics.md is stale: regenerate it from metrics_reference_markdown()"
