"""Chart values users expect from popular charts, and manifests a strict YAML parser accepts.

Rendered by real Helm (helm-python-sdk), like tests/test_helm.py. PrometheusRule alerts are
checked by Prometheus's own parser (`promtool check rules`) and by `promtool test rules` unit
tests with input series; `make test` installs promtool (Debian's prometheus package) where it
can, and under CI a missing promtool fails instead of skipping.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from test_helm import (
    CHART,
    KUBE_VERSION,
    NAMESPACE,
    RELEASE,
    VARIANTS,
    deployment_container,
    find,
    one,
    render,
    render_objects,
)

ROOT = Path(__file__).resolve().parents[1]
RUNBOOKS = ROOT / "docs" / "runbooks.md"

ALERTS = (
    "OperatordTargetDown",
    "OperatordNoLeader",
    "OperatordSyncErrorRatioHigh",
    "OperatordQueueBacklogGrowing",
    "OperatordParentsStuckInBackoff",
    "OperatordWorkerCrashLooping",
    "OperatordApiErrors",
    "OperatordParentDeletionStuck",
)

EVERYTHING = {
    "namespaceOverride": "ops-system",
    "global": {"imageRegistry": "mirror.example.com"},
    "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
    "startupProbe": {"enabled": True, "failureThreshold": 60},
    "livenessProbe": {"enabled": False},
    "initContainers": [
        {"name": "wait", "image": "busybox:1.36", "command": ["true"], "securityContext": {}}
    ],
    "extraContainers": [
        {"name": "sidecar-{{ .Release.Name }}", "image": "busybox:1.36", "command": ["sleep"]}
    ],
    "runtimeClassName": "gvisor",
    "hostAliases": [{"ip": "10.0.0.1", "hostnames": ["api.internal"]}],
    "dnsPolicy": "ClusterFirst",
    "dnsConfig": {"options": [{"name": "ndots", "value": "2"}]},
    "enableServiceLinks": True,
    "service": {"labels": {"team": "platform"}},
    "serviceAccount": {"labels": {"team": "platform"}},
    "commonLabels": {"app.kubernetes.io/component": "ignored-duplicate", "tier": "ops"},
    "podLabels": {"tier": "ops", "extra": "yes"},
    "serviceMonitor": {
        "enabled": True,
        "annotations": {"owner": "sre"},
        "jobLabel": "app.kubernetes.io/instance",
        "targetLabels": ["team"],
    },
    "podMonitor": {"enabled": True, "podTargetLabels": ["tier"]},
    "prometheusRule": {"enabled": True, "alertLabels": {"team": "platform"}},
    "rbac": {"aggregateToDefaultRoles": True},
    "extraObjects": [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "{{ .Release.Name }}-extra"},
            "data": {"a": "b"},
        },
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {{ .Release.Name }}-extra\n"
        "stringData:\n  k: v\n",
    ],
}


# ---- strict YAML ------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """Rejects a mapping that repeats a key, as strict Kubernetes tooling does."""


def _no_duplicates(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def strict_load_all(text: str) -> list:
    return [doc for doc in yaml.load_all(text, Loader=_StrictLoader) if doc]


def test_the_strict_parser_rejects_a_duplicate_key():
    with pytest.raises(yaml.constructor.ConstructorError, match="duplicate key 'b'"):
        strict_load_all("a: 1\nmetadata:\n  labels:\n    b: x\n    b: y\n")


@pytest.mark.parametrize("variant", [*sorted(VARIANTS), "everything"])
def test_every_rendered_manifest_parses_without_duplicate_keys(variant):
    values = EVERYTHING if variant == "everything" else VARIANTS[variant]
    for path, text in render(values).items():
        if path.endswith(".yaml"):
            strict_load_all(text)  # raises on a repeated key
    tests = [
        o
        for o in render_objects(values)
        if "test" in o["metadata"].get("annotations", {}).get("helm.sh/hook", "")
    ]
    assert len(tests) == 2
    for pod in tests:
        assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "test"


# ---- every value does something ---------------------------------------------------------------


def test_everything_on_lints_and_validates():
    report = helm.lint(
        CHART, EVERYTHING, strict=True, namespace=NAMESPACE, kube_version="v" + KUBE_VERSION
    )
    assert report["errors"] == [] and [m for m in report["messages"] if m["severity"] >= 2] == []
    for obj in render_objects(EVERYTHING):
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def test_everything_on_reaches_the_objects():
    objects = render_objects(EVERYTHING)
    namespaced = [o for o in objects if o["kind"] not in ("ClusterRole", "ClusterRoleBinding")]
    assert {o["metadata"].get("namespace") for o in namespaced} <= {"ops-system", None}
    deployment = one(objects, "Deployment")
    spec = deployment["spec"]
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    pod = spec["template"]["spec"]
    assert pod["runtimeClassName"] == "gvisor"
    assert pod["hostAliases"] == EVERYTHING["hostAliases"]
    assert pod["dnsPolicy"] == "ClusterFirst" and pod["dnsConfig"] == EVERYTHING["dnsConfig"]
    assert pod["enableServiceLinks"] is True
    assert [c["name"] for c in pod["initContainers"]] == ["wait"]
    assert [c["name"] for c in pod["containers"]] == ["operatord", f"sidecar-{RELEASE}"]
    container = pod["containers"][0]
    assert container["image"].startswith("mirror.example.com/ghcr.io/operatord/operatord:")
    assert container["startupProbe"]["failureThreshold"] == 60
    assert "enabled" not in container["startupProbe"]
    assert "livenessProbe" not in container and "readinessProbe" in container
    labels = spec["template"]["metadata"]["labels"]
    assert labels["tier"] == "ops" and labels["extra"] == "yes"
    assert labels["app.kubernetes.io/component"] == "operator"  # the chart's, not commonLabels'
    assert one(objects, "Service")["metadata"]["labels"]["team"] == "platform"
    assert one(objects, "ServiceAccount")["metadata"]["labels"]["team"] == "platform"
    sm = one(objects, "ServiceMonitor")
    assert sm["metadata"]["annotations"] == {"owner": "sre"}
    assert sm["spec"]["jobLabel"] == "app.kubernetes.io/instance"
    assert sm["spec"]["targetLabels"] == ["team"]
    pm = one(objects, "PodMonitor")
    assert pm["spec"]["podTargetLabels"] == ["tier"]
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    view = one(objects, "ClusterRole", "-view")
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert view["rules"][0]["resources"] == ["widgets", "widgets/status"]
    assert "delete" in one(objects, "ClusterRole", "-edit")["rules"][0]["verbs"]
    assert one(objects, "ConfigMap", f"{RELEASE}-extra")["data"] == {"a": "b"}
    assert one(objects, "Secret", f"{RELEASE}-extra")["stringData"] == {"k": "v"}
    rule = one(objects, "PrometheusRule")
    alerts = rule["spec"]["groups"][0]["rules"]
    assert [a["alert"] for a in alerts] == list(ALERTS)
    assert all(a["labels"]["team"] == "platform" for a in alerts)


def test_defaults_keep_optional_objects_off():
    objects = render_objects()
    for kind in ("PodMonitor", "PrometheusRule", "ServiceMonitor"):
        assert not find(objects, kind), kind
    assert not find(objects, "ClusterRole", "-view")
    container = deployment_container(objects)
    assert "startupProbe" not in container and "livenessProbe" in container
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["enableServiceLinks"] is False and "strategy" not in one(objects, "Deployment")


def test_every_top_level_value_is_used_by_a_template():
    templates = "".join(p.read_text() for p in (CHART / "templates").rglob("*") if p.is_file())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    unused = [key for key in values if not re.search(rf"\.Values\.{key}\b", templates)]
    assert unused == []


def test_image_registry_beats_global_image_registry():
    image = deployment_container(
        render_objects(
            {"global": {"imageRegistry": "g.example"}, "image": {"registry": "r.example"}}
        )
    )["image"]
    assert image.startswith("r.example/ghcr.io/operatord/operatord:")


def test_chart_yaml_has_home_icon_sources_maintainers():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    for key in ("home", "icon", "sources", "maintainers"):
        assert chart.get(key), key
    assert (ROOT / "docs" / "icon.svg").exists()


# ---- alerts -----------------------------------------------------------------------------------


def rule_file(tmp_path: Path, values: dict | None = None) -> Path:
    """The PrometheusRule's groups as a plain Prometheus rule file."""
    merged = {"prometheusRule": {"enabled": True}, **(values or {})}
    rule = one(render_objects(merged), "PrometheusRule")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    return path


def test_every_alert_has_summary_description_and_a_runbook_section(tmp_path):
    groups = yaml.safe_load(rule_file(tmp_path).read_text())["groups"]
    runbooks = RUNBOOKS.read_text()
    for rule in groups[0]["rules"]:
        ann = rule["annotations"]
        assert ann["summary"] and ann["description"], rule["alert"]
        anchor = ann["runbook_url"].rpartition("#")[2]
        assert anchor == rule["alert"].lower()
        assert f"## {rule['alert']}\n" in runbooks, f"docs/runbooks.md has no {rule['alert']}"
        assert rule["labels"]["severity"] in ("warning", "critical")


def promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("promtool is missing; `make test` installs it (Debian package prometheus)")
    pytest.skip("promtool not installed (run `make tools` as root on Debian to install it)")


def test_promtool_accepts_the_rules(tmp_path):
    r = subprocess.run(
        [promtool(), "check", "rules", str(rule_file(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in r.stdout


def test_alerts_on_controller_series_cover_every_controller(tmp_path):
    """With config.controllers the series of syncs, queue and backoff name each controller:
    those alerts select them all (and group by controller); the daemon's own series keep
    config.name."""
    shop = {
        "config": {
            "name": "shop-operator",
            "controllers": [
                {"name": n, "handler": "shop:sync", "parent": {"apiVersion": "v1", "kind": k}}
                for n, k in (("orders", "ConfigMap"), ("carts", "Secret"))
            ],
        }
    }
    groups = yaml.safe_load(rule_file(tmp_path, shop).read_text())["groups"]
    exprs = {r["alert"]: r["expr"] for r in groups[0]["rules"]}
    each = 'controller=~"orders|carts",namespace="operators"'
    daemon = 'controller="shop-operator",namespace="operators"'
    for alert in (
        "OperatordSyncErrorRatioHigh",
        "OperatordQueueBacklogGrowing",
        "OperatordParentsStuckInBackoff",
    ):
        assert each in exprs[alert] and daemon not in exprs[alert], alert
        assert "by (namespace, controller)" in exprs[alert], alert
    for alert in ("OperatordNoLeader", "OperatordWorkerCrashLooping", "OperatordApiErrors"):
        assert daemon in exprs[alert] and each not in exprs[alert], alert


def test_promtool_accepts_the_rules_of_several_controllers(tmp_path):
    shop = {
        "config": {
            "controllers": [
                {"name": n, "handler": "shop:sync", "parent": {"apiVersion": "v1", "kind": k}}
                for n, k in (("orders", "ConfigMap"), ("carts", "Secret"))
            ],
        }
    }
    r = subprocess.run(
        [promtool(), "check", "rules", str(rule_file(tmp_path, shop))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_would_reject_a_broken_expression(tmp_path):
    bad = {"prometheusRule": {"enabled": True, "thresholds": {"syncErrorRatio": 0.1}}}
    path = rule_file(tmp_path, bad)
    path.write_text(
        path.read_text().replace("rate(operatord_syncs_total", "rate(operatord_syncs_total}")
    )
    r = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True)
    assert r.returncode != 0


# Input series as the chart's scrape gives them: namespace from the target, controller from
# operatord. Each case makes one alert fire and checks that the others stay quiet.
SERIES = 'controller="widget-operator",namespace="operators"'
TARGET = 'job="operatord",namespace="operators",instance="10.0.0.7:8080"'
PROMTOOL_TESTS = {
    "OperatordTargetDown": {
        "description": "10.0.0.7:8080 of widget-operator has been down for 5m: no metrics, and if it is the leader no reconciling.",
        "series": [{"series": f"up{{{TARGET}}}", "values": "1 0x10"}],
        "at": "10m",
        "exp_labels": {
            "severity": "warning",
            "job": "operatord",
            "namespace": "operators",
            "instance": "10.0.0.7:8080",
        },
    },
    "OperatordNoLeader": {
        "description": "No replica of widget-operator in operators has been leader for 5m: nothing is reconciled.",
        "series": [
            {"series": f'operatord_leader{{{SERIES},pod="a"}}', "values": "1 0x10"},
            {"series": f'operatord_leader{{{SERIES},pod="b"}}', "values": "0x11"},
        ],
        "at": "8m",
        "exp_labels": {
            "severity": "critical",
            "controller": "widget-operator",
            "namespace": "operators",
        },
    },
    "OperatordSyncErrorRatioHigh": {
        "description": "33.33% of the syncs of widget-operator failed (error, invalid, timeout or crash) over 5 minutes.",
        "series": [
            {"series": f'operatord_syncs_total{{{SERIES},result="ok"}}', "values": "0+10x40"},
            {"series": f'operatord_syncs_total{{{SERIES},result="error"}}', "values": "0+5x40"},
        ],
        "at": "30m",
        "exp_labels": {
            "severity": "warning",
            "controller": "widget-operator",
            "namespace": "operators",
        },
    },
    "OperatordQueueBacklogGrowing": {
        "description": "1100 parents of widget-operator wait for a worker and the queue grew over 15 minutes: the workers cannot keep up.",
        "series": [
            {"series": f'operatord_queue_depth{{{SERIES},worker="0"}}', "values": "100+10x60"},
            {"series": f'operatord_queue_depth{{{SERIES},worker="1"}}', "values": "100+10x60"},
        ],
        "at": "45m",
        "exp_labels": {
            "severity": "warning",
            "controller": "widget-operator",
            "namespace": "operators",
        },
    },
    "OperatordParentsStuckInBackoff": {
        "description": "3 parents of widget-operator have been retrying with backoff for 30m.",
        "series": [{"series": f"operatord_parents_backing_off{{{SERIES}}}", "values": "3x60"}],
        "at": "45m",
        "exp_labels": {
            "severity": "warning",
            "controller": "widget-operator",
            "namespace": "operators",
        },
    },
    "OperatordWorkerCrashLooping": {
        "description": "Worker processes of widget-operator restarted 15 times in 15 minutes (crash, out of memory or a handler past its deadline).",
        "series": [{"series": f"operatord_worker_restarts_total{{{SERIES}}}", "values": "0+1x20"}],
        "at": "15m",
        "exp_labels": {
            "severity": "warning",
            "controller": "widget-operator",
            "namespace": "operators",
        },
    },
    "OperatordApiErrors": {
        "description": "33.33% of the API requests of widget-operator got a 5xx, a 429 or no answer over 5 minutes.",
        "series": [
            {
                "series": f'operatord_api_requests_total{{{SERIES},verb="list",code="200"}}',
                "values": "0+10x40",
            },
            {
                "series": f'operatord_api_requests_total{{{SERIES},verb="list",code="503"}}',
                "values": "0+5x40",
            },
        ],
        "at": "25m",
        "exp_labels": {
            "severity": "warning",
            "controller": "widget-operator",
            "namespace": "operators",
        },
    },
    "OperatordParentDeletionStuck": {
        # the oldest deletion is 20 minutes old at the start and keeps aging (60 s a minute)
        "description": "A parent of widget-operator was deleted 40m 0s ago and is still there (more than 30 minutes): a finalizer, this operator's or another's, is not being removed.",
        "series": [
            {
                "series": f"operatord_parent_deletion_max_age_seconds{{{SERIES}}}",
                "values": "1200+60x40",
            }
        ],
        "at": "20m",
        "exp_labels": {
            "severity": "warning",
            "controller": "widget-operator",
            "namespace": "operators",
        },
    },
}


def test_promtool_unit_tests_fire_each_alert_on_its_input_series(tmp_path):
    rules = rule_file(tmp_path, {"namespaceOverride": "operators"})
    rendered = {r["alert"]: r for r in yaml.safe_load(rules.read_text())["groups"][0]["rules"]}
    tests = []
    for alert, case in PROMTOOL_TESTS.items():
        alerts = [{"eval_time": case["at"], "alertname": a, "exp_alerts": []} for a in ALERTS]
        for check in alerts:
            if check["alertname"] == alert:
                # the description carries the numbers an on-call needs
                annotations = {
                    "summary": rendered[alert]["annotations"]["summary"],
                    "description": case["description"],
                    "runbook_url": rendered[alert]["annotations"]["runbook_url"],
                }
                check["exp_alerts"] = [
                    {"exp_labels": case["exp_labels"], "exp_annotations": annotations}
                ]
        tests.append({"interval": "1m", "input_series": case["series"], "alert_rule_test": alerts})
    # A healthy operator: nothing fires.
    healthy = [
        {"series": f"up{{{TARGET}}}", "values": "1x60"},
        {"series": f'operatord_leader{{{SERIES},pod="a"}}', "values": "1x60"},
        {"series": f'operatord_syncs_total{{{SERIES},result="ok"}}', "values": "0+10x60"},
        {"series": f'operatord_syncs_total{{{SERIES},result="error"}}', "values": "0+0x60"},
        # child-name conflicts are the cluster's state, not the handler's failure
        {"series": f'operatord_syncs_total{{{SERIES},result="conflict"}}', "values": "0+10x60"},
        {"series": f'operatord_queue_depth{{{SERIES},worker="0"}}', "values": "5x60"},
        {"series": f"operatord_parents_backing_off{{{SERIES}}}", "values": "0x60"},
        {"series": f"operatord_worker_restarts_total{{{SERIES}}}", "values": "0x60"},
        # deletions that finish within minutes
        {
            "series": f"operatord_parent_deletion_max_age_seconds{{{SERIES}}}",
            "values": "0 30 90 0x57",
        },
    ]
    tests.append(
        {
            "interval": "1m",
            "input_series": healthy,
            "alert_rule_test": [
                {"eval_time": "59m", "alertname": a, "exp_alerts": []} for a in ALERTS
            ],
        }
    )
    test_file = tmp_path / "rules_test.yaml"
    test_file.write_text(yaml.safe_dump({"rule_files": [rules.name], "tests": tests}))
    r = subprocess.run(
        [promtool(), "test", "rules", test_file.name],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout + r.stderr
