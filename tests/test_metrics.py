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


def value(metrics: Metrics, name: str, /, **labels: str) -> float | None:
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


def test_gauges_refreshed_before_a_scrape_are_current_in_it_and_a_failing_refresh_is_survived():
    m = Metrics()
    alive = [0]
    m.before_scrape(lambda: m.set("workers_alive", alive[0]))

    def broken() -> None:
        raise RuntimeError("refresher bug")

    m.before_scrape(broken)
    port = m.serve(0, host="127.0.0.1")
    try:
        for n in (2, 3):
            alive[0] = n  # changed after the last refresh; the scrape must refresh first
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
                text = resp.read().decode()
            assert samples(text)[("operatord_workers_alive", frozenset())] == n
        alive[0] = 5
        assert samples(m.render().decode())[("operatord_workers_alive", frozenset())] == 5
    finally:
        m.stop()


def test_reference_markdown_lists_every_metric_and_docs_are_current():
    md = metrics_reference_markdown()
    for spec in CATALOG:
        assert re.search(rf"^\| `{spec.full_name}` \| {spec.type} \|", md, re.M)
    doc = (ROOT / "docs" / "metrics.md").read_text()
    assert md in doc, "docs/metrics.md is stale: regenerate it from metrics_reference_markdown()"


# ---- controller label, process series, per-worker sampling, controller-runtime series ----------


def test_every_operatord_series_carries_the_controller_label():
    m = Metrics(version="1", controller="widgets")
    m.inc("syncs_total", {"result": "ok"})
    m.observe("sync_duration_seconds", 0.1, {"result": "ok"})
    names = set()
    for (name, labels), _ in samples(m.render().decode()).items():
        if name.startswith(PREFIX):
            names.add(name)
            assert dict(labels)["controller"] == "widgets", name
    assert "operatord_syncs_total" in names and "operatord_sync_duration_seconds_bucket" in names
    assert value(m, "operatord_syncs_total", controller="widgets", result="ok") == 1


def test_process_series_of_the_leader_are_exported():
    s = samples(Metrics().render().decode())
    rss = [v for (name, _), v in s.items() if name == "process_resident_memory_bytes"]
    assert rss and rss[0] > 1_000_000
    assert any(name == "process_cpu_seconds_total" for name, _ in s)


def test_process_sampler_reports_rss_and_keeps_cpu_counting_across_restarts():
    import os
    import subprocess
    import sys

    from operatord.metrics import ProcessSampler, read_proc_stat

    m = Metrics()
    burn = "import time\nt=time.process_time()\nwhile time.process_time()-t<0.3: pass\ninput()"
    first = subprocess.Popen([sys.executable, "-c", burn], stdin=subprocess.PIPE)
    second = None
    try:
        pids = {"0": first.pid}
        sampler = ProcessSampler(m, lambda: pids)

        def cpu_of(pid):
            stat = read_proc_stat(pid)
            return stat[0] if stat else 0.0

        from operatord.testing import wait_for

        wait_for(lambda: cpu_of(first.pid) >= 0.3, 30, message="first worker burnt CPU")
        sampler.sample()
        assert value(m, "operatord_worker_resident_memory_bytes", worker="0") > 1_000_000
        before = value(m, "operatord_worker_cpu_seconds_total", worker="0")
        assert before >= 0.3
        # the worker is replaced: the counter adds the new process's CPU instead of resetting
        second = subprocess.Popen([sys.executable, "-c", burn], stdin=subprocess.PIPE)
        pids["0"] = second.pid
        wait_for(lambda: cpu_of(second.pid) >= 0.3, 30, message="second worker burnt CPU")
        sampler.sample()
        assert value(m, "operatord_worker_cpu_seconds_total", worker="0") >= before + 0.3
        pids["1"] = 2**22 + os.getpid()  # no such process: skipped, not an error
        sampler.sample()
    finally:
        for p in (first, second):
            if p is not None:
                p.kill()
                p.wait()


def test_controller_runtime_series_are_off_by_default_and_mirror_the_recorder_when_on():
    assert "controller_runtime" not in Metrics(controller="w").render().decode()
    m = Metrics(controller="w", controller_runtime=True, lease="w-leader", max_concurrent=32)
    m.inc("syncs_total", {"result": "ok"}, 3)
    m.inc("syncs_total", {"result": "timeout"})
    m.inc("finalizes_total", {"result": "pending"})
    m.observe("sync_duration_seconds", 0.2, {"result": "ok"})
    m.observe("queue_wait_seconds", 0.01)
    m.inc("retries_total")
    m.set("queue_depth", 4, {"worker": "0"})
    m.set("queue_depth", 2, {"worker": "1"})
    m.set("in_flight", 3, {"worker": "0"})
    m.set("in_flight", 2, {"worker": "1"})
    m.set("leader", 1)
    m.apply([("inc", "syncs_total", (("result", "error"),), 2.0)])  # worker deltas too
    cr = lambda metric, /, **labels: value(m, metric, **labels)  # noqa: E731
    assert cr("controller_runtime_reconcile_total", controller="w", result="success") == 3
    assert cr("controller_runtime_reconcile_total", controller="w", result="error") == 3
    assert cr("controller_runtime_reconcile_total", controller="w", result="requeue_after") == 1
    assert cr("controller_runtime_reconcile_errors_total", controller="w") == 3
    assert cr("controller_runtime_reconcile_time_seconds_count", controller="w") == 1
    assert cr("controller_runtime_reconcile_time_seconds_bucket", controller="w", le="0.25") == 1
    assert cr("controller_runtime_active_workers", controller="w") == 5
    assert cr("controller_runtime_max_concurrent_reconciles", controller="w") == 32
    assert cr("workqueue_depth", name="w") == 6
    assert cr("workqueue_adds_total", name="w") == 1
    assert cr("workqueue_retries_total", name="w") == 1
    assert cr("workqueue_queue_duration_seconds_count", name="w") == 1
    assert cr("workqueue_work_duration_seconds_count", name="w") == 1
    assert cr("leader_election_master_status", name="w-leader") == 1
