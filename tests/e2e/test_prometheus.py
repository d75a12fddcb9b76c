"""A real Prometheus scrapes a running operatord (a leader and a standby) on the embedded API
server while parents are created, fail and are finalized; then every Grafana dashboard query
and every alert expression of the chart is evaluated through Prometheus's HTTP API against that
live data. Each must parse and return series where the scenario produced them.

Needs the `prometheus` binary (Debian package, installed by `make test` where it can); without
it the test skips, and under CI=true it fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml
from conftest import Operator, wait_for
from kubernetes import client
from widgets import create_widget, delete_widget, get_widget, ready

from operatord.testing import free_port

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
from test_helm import one, render_objects  # noqa: E402

DASHBOARD = REPO / "helm" / "operatord" / "dashboards" / "operatord.json"
NAME = "prom"  # the operator's config name: the controller label
JOB, NAMESPACE = "operatord", "operators"  # what the chart's ServiceMonitor would give


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("prometheus is missing; `make test` installs it (Debian package prometheus)")
    pytest.skip("prometheus not installed (run `make tools` as root on Debian to install it)")


class Prometheus:
    def __init__(self, binary: str, workdir: Path, targets: dict[str, int], rules: Path):
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "scrape_configs": [
                {
                    "job_name": JOB,
                    "static_configs": [
                        {
                            "targets": [f"127.0.0.1:{port}"],
                            "labels": {"namespace": NAMESPACE, "pod": pod},
                        }
                        for pod, port in targets.items()
                    ],
                }
            ],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = open(workdir / "prometheus.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.workdir = workdir

    def api(self, path: str, **params) -> dict:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:  # a query that does not parse: 400 with a body
            return json.loads(e.read())

    def query(self, expr: str) -> dict:
        return self.api("query", query=expr)

    def values(self, expr: str) -> list[dict]:
        answer = self.query(expr)
        assert answer["status"] == "success", f"{expr}: {answer}"
        return answer["data"]["result"]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def dashboard_queries() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    out = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            if "operatord_shard_" in target["expr"]:
                continue  # the replica-shards row: this scenario runs one shard (not sharded)
            out.append((f"{panel['title']} [{target['refId']}]", target["expr"]))
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            out.append((f"variable {var['name']}", var["query"]["query"]))
    return out


def grafana_to_promql(expr: str) -> str:
    """What Grafana sends for "All" in every variable over the whole test's time range."""
    expr = expr.replace("$__rate_interval", "5m").replace("$__range", "5m")
    return re.sub(r"\$(namespace|job|controller|pod)\b", ".*", expr)


def label_values(prom: Prometheus, expr: str) -> list[str]:
    """Evaluate label_values(selector, label) as Grafana does: the label over the series API."""
    m = re.fullmatch(r"label_values\((.*),\s*([a-z_]+)\)", expr)
    assert m, expr
    answer = prom.api("series", **{"match[]": m.group(1)})
    assert answer["status"] == "success", f"{expr}: {answer}"
    return sorted({s[m.group(2)] for s in answer["data"] if m.group(2) in s})


@pytest.fixture
def ns(kube):
    name = f"prom-{uuid.uuid4().hex[:6]}"
    client.CoreV1Api(kube).create_namespace({"metadata": {"name": name}})
    return name


def test_prometheus_scrapes_the_daemon_and_every_query_and_alert_evaluates(api, kube, ns, tmp_path):
    binary = prometheus_binary()
    lease = {
        "enabled": True,
        "leaseNamespace": "default",
        "leaseName": f"prom-{ns}",
        "leaseDurationSeconds": 2,
        "renewDeadlineSeconds": 1.5,
        "retryPeriodSeconds": 0.3,
    }
    replicas = {}
    for pod in ("a", "b"):
        d = tmp_path / pod
        d.mkdir()
        replicas[pod] = Operator(
            api, d, name=NAME, namespace=ns, leaderElection=lease, workers=1
        ).start()
    rules = tmp_path / "rules.yaml"
    rendered = one(
        render_objects(
            {
                "namespaceOverride": NAMESPACE,
                "config": {"name": NAME},
                "prometheusRule": {"enabled": True, "targetSelector": f'job="{JOB}"'},
            }
        ),
        "PrometheusRule",
    )
    rules.write_text(yaml.safe_dump({"groups": rendered["spec"]["groups"]}))
    prom = Prometheus(binary, tmp_path, {p: op.metrics_port for p, op in replicas.items()}, rules)
    try:
        wait_for(
            lambda: prom.api("status/buildinfo").get("status") == "success",
            30,
            message="prometheus up",
        )
        for op in replicas.values():
            op.wait_ready()
        leader = wait_for(
            lambda: next(
                (p for p, op in replicas.items() if op.metric("operatord_leader") == 1), None
            ),
            30,
            message="a leader",
        )
        standby = next(p for p in replicas if p != leader)

        # The scenario: parents converge, one fails on every sync, one is finalized, two
        # status writes get a 503 (retried), and the watches are cut once.
        api.faults.add_error(503, verbs=["patch"], resources=["widgets/status"], count=2)
        for i in range(3):
            create_widget(kube, ns, f"ok-{i}", size=i)
        create_widget(kube, ns, "broken", fail=True)
        wait_for(lambda: all(ready(kube, ns, f"ok-{i}") for i in range(3)), 30, message="ready")
        delete_widget(kube, ns, "ok-0")
        wait_for(lambda: get_widget(kube, ns, "ok-0") is None, 30, message="finalized")
        api.faults.drop_watches()
        op = replicas[leader]
        wait_for(lambda: op.metric("operatord_watch_restarts_total") > 0, 30, message="rewatch")
        wait_for(
            lambda: op.metric("operatord_worker_resident_memory_bytes", worker="0") > 0,
            30,
            message="worker sampled",
        )

        # Prometheus has scraped the finished scenario from both replicas.
        checks = {
            "finalized": f'operatord_finalizes_total{{controller="{NAME}",result="finalized"}} >= 1',
            "rewatched": f'sum(operatord_watch_restarts_total{{controller="{NAME}"}}) > 0',
            "both up": f'count(up{{job="{JOB}"}} == 1) == 2',
        }
        missing: list[str] = []

        def scraped() -> bool:
            missing[:] = [what for what, expr in checks.items() if not prom.values(expr)]
            return not missing

        try:
            wait_for(scraped, 60, 0.5, message="prometheus scraped the scenario")
        except AssertionError:
            pytest.fail(f"prometheus has not seen: {missing}")

        # Every dashboard query parses (a parse error fails at once) and returns series; rate()
        # needs two scrapes after an event, so allow a few seconds for the last ones.
        empty: list[str] = []

        def dashboard_has_data() -> bool:
            empty[:] = []
            for title, expr in dashboard_queries():
                if title.startswith("variable"):
                    found = label_values(prom, grafana_to_promql(expr))
                else:
                    found = prom.values(grafana_to_promql(expr))
                if not found:
                    empty.append(title)
            return not empty

        try:
            wait_for(dashboard_has_data, 30, 1.0, message="dashboard data")
        except AssertionError:
            pytest.fail(f"dashboard queries without data: {empty}")
        assert label_values(prom, "label_values(operatord_build_info, controller)") == [NAME]
        assert label_values(prom, "label_values(operatord_build_info, pod)") == ["a", "b"]

        # Every alert expression parses and evaluates; those the scenario caused fire.
        alerts = {r["alert"]: r["expr"] for r in rendered["spec"]["groups"][0]["rules"]}
        results = {name: prom.values(expr) for name, expr in alerts.items()}
        for firing in ("OperatordParentsStuckInBackoff", "OperatordSyncErrorRatioHigh"):
            # the broken parent fails every sync and waits in backoff between attempts
            wait_for(lambda f=firing: prom.values(alerts[f]), 30, message=f"{firing} fires")
        assert not results["OperatordNoLeader"], "one replica leads: the standby's 0 is not it"
        assert not results["OperatordTargetDown"]
        assert not results["OperatordWorkerCrashLooping"]
        # The backlog alert needs a growing queue; its left-hand side has data.
        assert prom.values(alerts["OperatordQueueBacklogGrowing"].split(" > ")[0])
        assert prom.values(alerts["OperatordApiErrors"].split("\n")[0]), "the 503s are counted"

        # Prometheus itself evaluates the rules without errors.
        groups = prom.api("rules")["data"]["groups"]
        health = {r["name"]: (r["health"], r.get("lastError", "")) for r in groups[0]["rules"]}
        assert set(health) == set(alerts)
        assert all(h == "ok" for h, _ in health.values()), health

        # The standby goes away: its target is down and the alert expression sees it.
        replicas[standby].stop()
        wait_for(lambda: prom.values(alerts["OperatordTargetDown"]), 30, message="target down seen")
        assert [s["metric"]["pod"] for s in prom.values(alerts["OperatordTargetDown"])] == [standby]
    finally:
        prom.stop()
        for op in replicas.values():
            op.stop()
