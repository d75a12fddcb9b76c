"""The Helm chart under helm/operatord, rendered and linted by real Helm (helm-python-sdk).

Every rendered object is validated against the Kubernetes JSON schemas (kubernetes-validate,
strict: unknown fields fail), the rendered operatord config passes `operatord check-config`, and
the RBAC the chart grants is checked against what operatord asks the API server for.
"""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from operatord.testing.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "operatord"
KUBE_VERSION = "1.30.0"
RELEASE = "ops"
NAMESPACE = "operators"

# ---------------------------------------------------------------------------------------------
# rendering helpers


def chart() -> helm.Chart:
    return helm.Chart.load(CHART)


def render(values: dict | None = None, *, namespace: str = NAMESPACE) -> dict[str, str]:
    """Template path -> rendered text, exactly as `helm template` would produce it."""
    with chart() as c:
        return c.render(values or {}, name=RELEASE, namespace=namespace, is_install=True)


def render_objects(values: dict | None = None, *, namespace: str = NAMESPACE) -> list[dict]:
    objects = []
    for path, text in sorted(render(values, namespace=namespace).items()):
        if not path.endswith(".yaml"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def find(objects: list[dict], kind: str, name_suffix: str = "") -> list[dict]:
    return [o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith(name_suffix)]


def one(objects: list[dict], kind: str, name_suffix: str = "") -> dict:
    found = find(objects, kind, name_suffix)
    assert len(found) == 1, f"expected one {kind} *{name_suffix}, got {len(found)}"
    return found[0]


def rendered_config(objects: list[dict]) -> dict:
    return yaml.safe_load(one(objects, "ConfigMap", "-config")["data"]["config.yaml"])


def deployment_container(objects: list[dict]) -> dict:
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return container


def merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


HANDLER_SOURCE = """\
from operatord import SyncResponse


def sync(request):
    name = request.parent["metadata"]["name"]
    return SyncResponse(status={"seen": True}, children=[])
"""

CUSTOM_IMAGE = ROOT / "examples" / "custom-image"

# The multi-controller config of issue 22's design, as a config file states it; the chart's
# `config.controllers` and `config.namespaces` values render to exactly this.
SHOP = yaml.safe_load(
    """
name: shop-operator
workers: 2
namespaces: [shop, "team-*", "!team-archive"]
controllers:
  - name: orders
    handler: shop.orders:Orders
    parent: {apiVersion: shop.example.com/v1, kind: Order}
    children: [{apiVersion: v1, kind: ConfigMap}]
  - name: carts
    handler: shop.carts:sync
    parent: {apiVersion: shop.example.com/v1, kind: Cart}
    children: [{apiVersion: v1, kind: ConfigMap}, {apiVersion: v1, kind: Secret}]
    related: [{apiVersion: v1, kind: Secret, labelSelector: "shop.example.com/payment"}]
    backoff: {initialSeconds: 1}
"""
)
SHOP_VALUES = {"config": SHOP}
SHOP_LITERAL = merge(SHOP_VALUES, {"config": {"namespaces": ["shop", "team-a"]}})

PACKAGE_INIT = "from dbop.handler import sync  # noqa: F401\n"

VARIANTS: dict[str, dict] = {
    "default": {},
    "namespaced": {"config": {"namespace": "team-a"}},
    "leader-election-off": {"replicaCount": 1, "config": {"leaderElection": {"enabled": False}}},
    "servicemonitor": {"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}},
    "handler-configmap": {
        "handlerCode": {"enabled": True, "files": {"myhandler.py": HANDLER_SOURCE}},
        "config": {"handler": "myhandler:sync"},
    },
    "everything-on": {
        "podDisruptionBudget": {"enabled": True},
        "networkPolicy": {
            "enabled": True,
            "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
        },
        "serviceMonitor": {"enabled": True},
        "rbac": {"extraRules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]},
        "extraEnv": [{"name": "ACME_MODE", "value": "strict"}],
        "image": {"digest": "sha256:" + "a" * 64},
    },
    "custom-image": yaml.safe_load((CUSTOM_IMAGE / "values.yaml").read_text()),
    "sharded": {"replicaCount": 3, "config": {"sharding": {"shards": 8}}},
    "related": {
        "config": {
            "namespace": "team-a",
            "related": [
                {"apiVersion": "v1", "kind": "Secret"},
                {"apiVersion": "v1", "kind": "Namespace", "labelSelector": "team"},
            ],
        }
    },
    "controllers": SHOP_VALUES,
    "controllers-literal-namespaces": SHOP_LITERAL,
    "namespace-selector": {"config": {"namespaceSelector": "team=shop"}},
    "handler-package": {
        "handlerCode": {
            "enabled": True,
            "files": {"dbop/__init__.py": PACKAGE_INIT, "dbop/handler.py": HANDLER_SOURCE},
        },
        "config": {"handler": "dbop.handler:sync"},
    },
}


# ---------------------------------------------------------------------------------------------
# lint, schema, Kubernetes validation


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_helm_lint_is_clean(variant: str) -> None:
    report = helm.lint(
        CHART, VARIANTS[variant], strict=True, namespace=NAMESPACE, kube_version="v" + KUBE_VERSION
    )
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_rendered_object_validates_against_kubernetes_schemas(variant: str) -> None:
    objects = render_objects(VARIANTS[variant])
    assert objects
    for obj in objects:
        if obj["kind"] == "ServiceMonitor":
            continue  # a CRD: checked against its Service in test_servicemonitor_*
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {path}: {e.message}")


def test_kubernetes_validation_would_catch_a_broken_manifest() -> None:
    deployment = one(render_objects(), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["porrt"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)


BAD_VALUES = {
    "replicas-zero": {"replicaCount": 0},
    "replicas-string": {"replicaCount": "two"},
    "unknown-top-level-key": {"replicas": 2},
    "unknown-config-key": {"config": {"workerz": 3}},
    "handler-without-attribute": {"config": {"handler": "examples.widgets"}},
    "name-not-dns-label": {"config": {"name": "Widget_Operator"}},
    "parent-without-kind": {"config": {"parent": {"apiVersion": "example.com/v1", "kind": None}}},
    "bad-api-version": {"config": {"parent": {"apiVersion": "example.com"}}},
    "bad-plural": {"config": {"parent": {"plural": "Widgets"}}},
    "bad-update-strategy": {
        "config": {
            "children": [{"apiVersion": "v1", "kind": "ConfigMap", "updateStrategy": "Merge"}]
        }
    },
    "workers-zero": {"config": {"workers": 0}},
    "jitter-above-one": {"config": {"backoff": {"jitter": 1.5}}},
    "negative-resync": {"config": {"resyncSeconds": -1}},
    "log-level": {"config": {"logging": {"level": "verbose"}}},
    "health-port-range": {"config": {"health": {"port": 70000}}},
    "namespace-uppercase": {"config": {"namespace": "Team"}},
    "pull-policy": {"image": {"pullPolicy": "Sometimes"}},
    "digest": {"image": {"digest": "latest"}},
    "servicemonitor-interval": {"serviceMonitor": {"interval": "30"}},
    "pdb-string": {"podDisruptionBudget": {"minAvailable": "half"}},
    "relative-mount-path": {"handlerCode": {"mountPath": "handler"}},
    "grace-period-string": {"terminationGracePeriodSeconds": "60s"},
    "controller-without-handler": {
        "config": {"controllers": [{"name": "a", "parent": {"apiVersion": "v1", "kind": "Pod"}}]}
    },
    "controller-name-not-dns-label": {
        "config": {
            "controllers": [
                {"name": "A_b", "handler": "m:f", "parent": {"apiVersion": "v1", "kind": "Pod"}}
            ]
        }
    },
    "controller-unknown-key": {
        "config": {
            "controllers": [
                {
                    "name": "a",
                    "handler": "m:f",
                    "parent": {"apiVersion": "v1", "kind": "Pod"},
                    "workers": 3,
                }
            ]
        }
    },
    "namespaces-uppercase": {"config": {"namespaces": ["Team-*"]}},
    "namespaces-not-a-list": {"config": {"namespaces": "shop"}},
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_values_schema_rejects_bad_values(case: str) -> None:
    with chart() as c:
        with pytest.raises(helm.HelmValuesError):
            c.validate_schema(merge(c.values, BAD_VALUES[case]))
    with pytest.raises(helm.HelmValuesError):
        render(BAD_VALUES[case])


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_values_schema_accepts_the_variants(variant: str) -> None:
    with chart() as c:
        c.validate_schema(c.merge_values(VARIANTS[variant]))


GUARDED = {
    "replicas-without-election": (
        {"config": {"leaderElection": {"enabled": False}}},
        "replicaCount > 1 needs config.leaderElection.enabled",
    ),
    "grace-below-handler-timeout": (
        {"terminationGracePeriodSeconds": 20},
        "terminationGracePeriodSeconds must be at least config.handlerTimeoutSeconds + 10",
    ),
    "grace-without-room-to-drain": (
        {"terminationGracePeriodSeconds": 35},
        "terminationGracePeriodSeconds must be at least config.handlerTimeoutSeconds + 10",
    ),
    "same-ports": ({"config": {"health": {"port": 8080}}}, "must differ"),
    "handler-code-without-files": ({"handlerCode": {"enabled": True}}, "handlerCode.files"),
    "lease-timings": (
        {"config": {"leaderElection": {"renewDeadlineSeconds": 20}}},
        "leaseDurationSeconds must exceed renewDeadlineSeconds",
    ),
    "retry-period": (
        {"config": {"leaderElection": {"retryPeriodSeconds": 9}}},
        "renewDeadlineSeconds must exceed 1.2 * retryPeriodSeconds",
    ),
    "shards-without-election": (
        {
            "replicaCount": 1,
            "config": {"leaderElection": {"enabled": False}, "sharding": {"shards": 2}},
        },
        "config.sharding.shards > 1 needs config.leaderElection.enabled=true",
    ),
    "namespace-and-namespaces": (
        {"config": {"namespace": "a", "namespaces": ["b"]}},
        "config.namespace cannot be combined with config.namespaces",
    ),
    "controller-names-twice": (
        {
            "config": {
                "controllers": [
                    {"name": "a", "handler": "m:f", "parent": {"apiVersion": "v1", "kind": "Pod"}},
                    {"name": "a", "handler": "m:g", "parent": {"apiVersion": "v1", "kind": "Node"}},
                ]
            }
        },
        'config.controllers: the name "a" is used twice',
    ),
    "two-controllers-one-parent": (
        {
            "config": {
                "controllers": [
                    {"name": "a", "handler": "m:f", "parent": {"apiVersion": "v1", "kind": "Pod"}},
                    {"name": "b", "handler": "m:g", "parent": {"apiVersion": "v1", "kind": "Pod"}},
                ]
            }
        },
        '"a" and "b" both reconcile v1 Pod',
    ),
    "handler-path-escapes-the-mount": (
        {"handlerCode": {"enabled": True, "files": {"../evil.py": "x"}}},
        'handlerCode.files: "../evil.py" is not a usable file path. Use a file name (hello.py) '
        "or a path inside a package directory (dbop/handler.py",
    ),
    "handler-path-absolute": (
        {"handlerCode": {"enabled": True, "files": {"/etc/x.py": "x"}}},
        'handlerCode.files: "/etc/x.py" is not a usable file path',
    ),
    "handler-path-hidden": (
        {"handlerCode": {"enabled": True, "files": {"dbop/.x.py": "x"}}},
        'handlerCode.files: "dbop/.x.py" is not a usable file path',
    ),
    "handler-paths-share-a-key": (
        {"handlerCode": {"enabled": True, "files": {"a/b.py": "x", "a.b.py": "y"}}},
        'handlerCode.files: "a.b.py" and "a/b.py" would share the ConfigMap key "a.b.py"',
    ),
}


@pytest.mark.parametrize("case", sorted(GUARDED))
def test_render_refuses_inconsistent_values(case: str) -> None:
    values, message = GUARDED[case]
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        render(values)


def _schema_paths(schema: dict, prefix: str = "") -> set[str]:
    paths = set()
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}{key}"
        paths.add(path)
        if sub.get("type") == "object" and "properties" in sub:
            paths |= _schema_paths(sub, path + ".")
    return paths


def _value_paths(values: dict, prefix: str = "") -> set[str]:
    paths = set()
    for key, value in values.items():
        path = f"{prefix}{key}"
        paths.add(path)
        if isinstance(value, dict) and value:
            paths |= _value_paths(value, path + ".")
    return paths


def test_values_yaml_and_schema_describe_the_same_keys() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema_paths = _schema_paths(schema)
    value_paths = {
        p
        for p in _value_paths(values)
        # free-form Kubernetes objects: their inner keys are not chart values
        if not re.match(r"(podSecurityContext|securityContext|resources)\.", p)
    }
    missing_in_schema = value_paths - schema_paths
    missing_in_values = {
        p
        for p in schema_paths - value_paths
        if not p.startswith(("resources.", "livenessProbe.", "startupProbe.", "strategy."))
    }
    assert not missing_in_schema, missing_in_schema
    assert missing_in_values <= {"readinessProbe.successThreshold"}, missing_in_values


FREE_FORM_PARENTS = {
    "podSecurityContext",
    "securityContext",
    "resources",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "children",
}


def test_every_value_in_values_yaml_has_a_comment() -> None:
    """A key is documented by a comment right above it, or by its parent's comment when the
    parent is a free-form block (security contexts, resources, probes, list items)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing mappings
    undocumented = []
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)(- )?([A-Za-z][\w.]*):", line)
        if not m:
            continue
        indent = len(m.group(1)) + (2 if m.group(2) else 0)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parents = [k for _, k in stack]
        previous = lines[i - 1].strip() if i else ""
        documented = previous.startswith("#") or any(p in FREE_FORM_PARENTS for p in parents)
        if not documented and not m.group(2):
            undocumented.append(".".join([*parents, m.group(3)]))
        stack.append((indent, m.group(3)))
    assert undocumented == []


# ---------------------------------------------------------------------------------------------
# the Deployment


def test_default_deployment_runs_two_replicas_with_leader_election() -> None:
    objects = render_objects()
    assert one(objects, "Deployment")["spec"]["replicas"] == 2
    assert rendered_config(objects)["leaderElection"]["enabled"] is True
    assert find(objects, "Role", "-leader-election")


def _restricted_violations(pod: dict) -> list[str]:
    """The checks of the `restricted` Pod Security Standard (v1.30) that apply to a pod spec."""
    out = []
    psc = pod.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            out.append(key)
    for volume in pod.get("volumes", []):
        allowed = {"configMap", "emptyDir", "projected", "secret", "downwardAPI", "name"}
        allowed |= {"persistentVolumeClaim", "ephemeral", "csi"}
        if set(volume) - allowed:
            out.append(f"volume {volume['name']} type")
    for c in pod["containers"] + pod.get("initContainers", []):
        sc = c.get("securityContext") or {}
        name = c["name"]
        if sc.get("privileged"):
            out.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{name}: allowPrivilegeEscalation")
        if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
            out.append(f"{name}: runAsNonRoot")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            out.append(f"{name}: runAsUser 0")
        caps = sc.get("capabilities") or {}
        if "ALL" not in caps.get("drop", []):
            out.append(f"{name}: capabilities.drop ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            out.append(f"{name}: capabilities.add")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{name}: seccompProfile")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            out.append(f"{name}: hostPort")
    return out


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_pod_meets_restricted_pod_security(variant: str) -> None:
    objects = render_objects(VARIANTS[variant])
    pods = [one(objects, "Deployment")["spec"]["template"]["spec"]]
    pods += [o["spec"] for o in find(objects, "Pod")]
    assert len(pods) == 3  # the operator and the two `helm test` pods
    for pod in pods:
        assert _restricted_violations(pod) == []
        for container in pod["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert container["resources"]["requests"] and container["resources"]["limits"]


def test_restricted_check_catches_a_privileged_container() -> None:
    objects = render_objects(
        {
            "securityContext": {
                "privileged": True,
                "allowPrivilegeEscalation": True,
                "capabilities": {"drop": []},
            }
        }
    )
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert _restricted_violations(pod) == [
        "operatord: privileged",
        "operatord: allowPrivilegeEscalation",
        "operatord: capabilities.drop ALL",
    ]


def test_probes_use_the_health_port_of_the_config() -> None:
    objects = render_objects({"config": {"health": {"port": 9440}, "metrics": {"port": 9090}}})
    container = deployment_container(objects)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 9440, "metrics": 9090}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    config = rendered_config(objects)
    assert (config["health"]["port"], config["metrics"]["port"]) == (9440, 9090)


def test_container_runs_the_mounted_config_with_pod_namespace_from_downward_api() -> None:
    objects = render_objects()
    container = deployment_container(objects)
    assert container["args"] == ["run", "--config", "/etc/operatord/config.yaml"]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts["/etc/operatord"] == "config" and mounts["/tmp"] == "tmp"
    volumes = {
        v["name"]: v for v in one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
    }
    assert (
        volumes["config"]["configMap"]["name"]
        == one(objects, "ConfigMap", "-config")["metadata"]["name"]
    )
    assert rendered_config(objects)["leaderElection"]["leaseNamespace"] == ""


def _checksum(values: dict) -> str:
    pod = one(render_objects(values), "Deployment")["spec"]["template"]
    return pod["metadata"]["annotations"]["checksum/config"]


def test_config_checksum_rolls_pods_on_config_changes_only() -> None:
    base = _checksum({})
    assert _checksum({"config": {"workers": 4}}) != base
    assert _checksum({"config": {"logging": {"level": "debug"}}}) != base
    assert _checksum({"service": {"port": 9999}}) == base


def test_handler_code_change_rolls_pods() -> None:
    def handler_checksum(source: str) -> str:
        values = merge(
            VARIANTS["handler-configmap"], {"handlerCode": {"files": {"myhandler.py": source}}}
        )
        pod = one(render_objects(values), "Deployment")["spec"]["template"]
        return pod["metadata"]["annotations"]["checksum/handler"]

    assert handler_checksum(HANDLER_SOURCE) != handler_checksum(HANDLER_SOURCE + "\n# v2\n")


def test_termination_grace_period_outlasts_a_running_handler() -> None:
    objects = render_objects()
    grace = one(objects, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    # operatord drains for handlerTimeoutSeconds + 5 s, then releases the lease.
    assert grace >= rendered_config(objects)["handlerTimeoutSeconds"] + 10


def test_replicas_spread_over_nodes_unless_affinity_is_given() -> None:
    spec = one(render_objects(), "Deployment")["spec"]["template"]["spec"]
    term = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    custom = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["ops"]}]}
                ]
            }
        }
    }
    spec = one(render_objects({"affinity": custom}), "Deployment")["spec"]["template"]["spec"]
    assert spec["affinity"] == custom


def test_image_tag_defaults_to_app_version_and_digest_pins() -> None:
    with chart() as c:
        app_version = c.metadata["appVersion"]
    assert deployment_container(render_objects())["image"].endswith(f":{app_version}")
    pinned = deployment_container(render_objects(VARIANTS["everything-on"]))["image"]
    assert pinned == "ghcr.io/operatord/operatord@sha256:" + "a" * 64


# ---------------------------------------------------------------------------------------------
# the operatord config in the ConfigMap


def _check_config(config_path: Path, pythonpath: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(pythonpath))
    return subprocess.run(
        [sys.executable, "-m", "operatord", "check-config", "--config", str(config_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_rendered_config_passes_check_config_for_the_example_handler(tmp_path: Path) -> None:
    pytest.importorskip("operatord.config")
    config = rendered_config(render_objects())
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    # The image puts /app (holding examples/) on PYTHONPATH; the repository root plays /app.
    result = _check_config(path, ROOT)
    assert result.returncode == 0, result.stderr
    assert "examples.widgets:Widgets" in result.stdout


def test_check_config_rejects_a_handler_that_is_not_there(tmp_path: Path) -> None:
    pytest.importorskip("operatord.config")
    config = rendered_config(render_objects({"config": {"handler": "examples.nothere:Widgets"}}))
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = _check_config(path, ROOT)
    assert result.returncode != 0 and "examples.nothere" in result.stderr


def test_handler_from_configmap_is_mounted_and_importable(tmp_path: Path) -> None:
    pytest.importorskip("operatord.config")
    mount = tmp_path / "handler"
    values = merge(VARIANTS["handler-configmap"], {"handlerCode": {"mountPath": str(mount)}})
    objects = render_objects(values)
    code = one(objects, "ConfigMap", "-handler")
    container = deployment_container(objects)
    volumes = one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "handler", "mountPath": str(mount), "readOnly": True} in container[
        "volumeMounts"
    ]
    assert {"name": "handler", "configMap": {"name": code["metadata"]["name"]}} in volumes
    # What the kubelet would do: one file per ConfigMap key in the mount path.
    mount.mkdir()
    for name, source in code["data"].items():
        (mount / name).write_text(source)
    config = rendered_config(objects)
    assert config["pythonPath"] == [str(mount)]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = _check_config(path, tmp_path / "empty")
    assert result.returncode == 0, result.stderr


def kubelet_mount(objects: list[dict], mount: Path) -> None:
    """What the kubelet does with the handler volume: each ConfigMap key becomes a file in the
    mount directory, or, with `items`, the file at each item's path."""
    code = one(objects, "ConfigMap", "-handler")["data"]
    volumes = one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
    (volume,) = [v for v in volumes if v["name"] == "handler"]
    items = volume["configMap"].get("items") or [{"key": k, "path": k} for k in code]
    for item in items:
        target = mount / item["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(code[item["key"]])


def test_handler_package_is_mounted_at_its_paths_and_importable(tmp_path: Path) -> None:
    """issue 21: `dbop/handler.py` in handlerCode.files is a package module: stored under a
    ConfigMap key without '/', mounted back at its path, and importable by check-config."""
    pytest.importorskip("operatord.config")
    mount = tmp_path / "handler"
    values = merge(VARIANTS["handler-package"], {"handlerCode": {"mountPath": str(mount)}})
    objects = render_objects(values)
    code = one(objects, "ConfigMap", "-handler")
    assert set(code["data"]) == {"dbop.__init__.py", "dbop.handler.py"}
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "handler"]
    assert volume["configMap"]["items"] == [
        {"key": "dbop.__init__.py", "path": "dbop/__init__.py"},
        {"key": "dbop.handler.py", "path": "dbop/handler.py"},
    ]
    # the `helm test` pod mounts the same files at the same paths
    test_pod = one(objects, "Pod", "-test-config")
    (test_volume,) = [v for v in test_pod["spec"]["volumes"] if v["name"] == "handler"]
    assert test_volume["configMap"] == volume["configMap"]
    kubelet_mount(objects, mount)
    assert (mount / "dbop" / "handler.py").read_text() == HANDLER_SOURCE
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(rendered_config(objects)))
    result = _check_config(path, tmp_path / "empty")
    assert result.returncode == 0, result.stderr


def test_flat_handler_files_need_no_items() -> None:
    objects = render_objects(VARIANTS["handler-configmap"])
    volumes = one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
    (volume,) = [v for v in volumes if v["name"] == "handler"]
    assert "items" not in volume["configMap"]


def test_several_controllers_with_handlers_in_the_configmap_pass_check_config(
    tmp_path: Path,
) -> None:
    """Every controller's handler module ships in the handler ConfigMap (a package with two
    modules) and check-config imports them all."""
    pytest.importorskip("operatord.config")
    schema = json.loads((ROOT / "config" / "config.schema.json").read_text())
    mount = tmp_path / "handler"
    shop = "from operatord import SyncResponse\n\n\ndef sync(request):\n    return SyncResponse()\n"
    values = merge(
        SHOP_VALUES,
        {
            "handlerCode": {
                "enabled": True,
                "mountPath": str(mount),
                "files": {
                    "shop/__init__.py": "",
                    "shop/orders.py": shop + "\n\nOrders = sync\n",
                    "shop/carts.py": shop,
                },
            }
        },
    )
    objects = render_objects(values)
    kubelet_mount(objects, mount)
    config = rendered_config(objects)
    assert config["pythonPath"] == [str(mount)]
    validate_config(config)
    if "controllers" not in schema["properties"]:
        pytest.skip(
            "operatord check-config does not know `controllers` yet: needs issue 22's config "
            "change (config.py and config.schema.json)"
        )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = _check_config(path, tmp_path / "empty")
    assert result.returncode == 0, result.stderr
    assert "shop.orders:Orders" in result.stdout and "shop.carts:sync" in result.stdout


def test_existing_handler_configmap_is_mounted_without_creating_one() -> None:
    objects = render_objects(
        {
            "handlerCode": {"enabled": True, "existingConfigMap": "my-code"},
            "config": {"handler": "h:sync"},
        }
    )
    assert not find(objects, "ConfigMap", "-handler")
    volumes = one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "handler", "configMap": {"name": "my-code"}} in volumes


def test_custom_image_example_values_render_a_valid_config(tmp_path: Path) -> None:
    pytest.importorskip("operatord.config")
    config = rendered_config(render_objects(VARIANTS["custom-image"]))
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    # In the custom image the package is pip-installed; its source dir stands in for that here.
    result = _check_config(path, CUSTOM_IMAGE / "src")
    assert result.returncode == 0, result.stderr


DNS_LABEL = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def validate_config(config: dict) -> None:
    """Validate a rendered config against config/config.schema.json. While that schema does
    not know `controllers`, `namespaces` or `namespaceSelector` (issue 22's config change),
    those keys are checked against a local schema built from the schema's own definitions of
    the per-controller keys, and the rest against the schema itself."""
    schema = json.loads((ROOT / "config" / "config.schema.json").read_text())
    props = schema["properties"]
    rest = dict(config)
    if "controllers" in rest and "controllers" not in props:
        keys = ("handler", "pythonPath", "parent", "children", "related")
        keys += ("resyncSeconds", "handlerTimeoutSeconds")
        item = {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "handler", "parent"],
            "properties": {
                "name": {"type": "string", "pattern": DNS_LABEL, "maxLength": 63},
                **{k: props[k] for k in keys},
                "backoff": {**props["backoff"], "required": []},
            },
        }
        controllers = rest.pop("controllers")
        jsonschema.validate(controllers, {"type": "array", "minItems": 1, "items": item})
        names = [c["name"] for c in controllers]
        assert len(set(names)) == len(names), names
        # a file with `controllers` has no top-level handler and parent
        schema = {**schema, "required": [r for r in schema["required"] if r in ("name",)]}
    if "namespaces" in rest and "namespaces" not in props:
        pattern = r"^!?[a-z0-9*?]([-a-z0-9*?]*[a-z0-9*?])?$"
        ns_schema = {"type": "array", "items": {"type": "string", "pattern": pattern}}
        jsonschema.validate(rest.pop("namespaces"), ns_schema)
    if "namespaceSelector" in rest and "namespaceSelector" not in props:
        assert isinstance(rest.pop("namespaceSelector"), str)
    jsonschema.validate(rest, schema)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_rendered_config_matches_the_config_json_schema(variant: str) -> None:
    validate_config(rendered_config(render_objects(VARIANTS[variant])))


def test_config_validation_would_catch_a_broken_controller() -> None:
    config = rendered_config(render_objects(SHOP_VALUES))
    config["controllers"][0]["parent"]["plural"] = "orders"  # chart-only: never rendered
    with pytest.raises(jsonschema.ValidationError):
        validate_config(config)


def test_controllers_and_namespaces_render_as_the_config_file_states_them() -> None:
    config = rendered_config(render_objects(SHOP_VALUES))
    assert config["controllers"] == SHOP["controllers"]
    assert config["namespaces"] == SHOP["namespaces"]
    assert config["name"] == "shop-operator" and config["workers"] == 2
    # the single-controller keys give way to the list; `namespace` to `namespaces`
    for key in ("handler", "parent", "children", "related", "namespace"):
        assert key not in config, key
    # the daemon-wide keys and the defaults of the per-controller keys stay at the top
    assert config["backoff"]["initialSeconds"] == 0.5 and config["resyncSeconds"] == 600


def test_chart_only_keys_of_controllers_stay_out_of_the_config() -> None:
    controller = {
        "name": "orders",
        "handler": "shop.orders:Orders",
        "pythonPath": ["/opt/shop"],
        "parent": {"apiVersion": "shop.example.com/v1", "kind": "Order", "plural": "orderz"},
        "children": [
            {"apiVersion": "v1", "kind": "ConfigMap", "plural": "configmaps"},
            {"apiVersion": "apps/v1", "kind": "Deployment", "updateStrategy": "Apply"},
        ],
        "related": [{"apiVersion": "v1", "kind": "Namespace", "clusterScoped": True}],
        "resyncSeconds": 0,
        "handlerTimeoutSeconds": 5,
        "backoff": {"maxSeconds": 60, "jitter": 0},
    }
    (rendered,) = rendered_config(render_objects({"config": {"controllers": [controller]}}))[
        "controllers"
    ]
    assert rendered == {
        "name": "orders",
        "handler": "shop.orders:Orders",
        "pythonPath": ["/opt/shop"],
        "parent": {"apiVersion": "shop.example.com/v1", "kind": "Order"},
        "children": [
            {"apiVersion": "v1", "kind": "ConfigMap"},
            {"apiVersion": "apps/v1", "kind": "Deployment", "updateStrategy": "Apply"},
        ],
        "related": [{"apiVersion": "v1", "kind": "Namespace"}],
        "resyncSeconds": 0,
        "handlerTimeoutSeconds": 5,
        "backoff": {"maxSeconds": 60, "jitter": 0},
    }


def test_namespace_selector_replaces_namespace_in_the_config() -> None:
    config = rendered_config(render_objects(VARIANTS["namespace-selector"]))
    assert config["namespaceSelector"] == "team=shop" and "namespace" not in config


def test_config_values_reach_the_config_file() -> None:
    values = {
        "config": {
            "name": "acme",
            "pythonPath": ["/opt/extra"],
            "namespace": "team-a",
            "workers": 7,
            "inFlightPerWorker": 64,
            "workerMemoryLimitMB": 300,
            "resyncSeconds": 0,
            "handlerTimeoutSeconds": 12,
            "backoff": {"initialSeconds": 0.1, "maxSeconds": 60, "multiplier": 1.5, "jitter": 0},
            "leaderElection": {"leaseName": "acme-lock", "leaseNamespace": "kube-system"},
            "sharding": {"shards": 3},
            "logging": {"format": "console", "level": "debug"},
            "children": [{"apiVersion": "apps/v1", "kind": "Deployment", "plural": "deployments"}],
        }
    }
    config = rendered_config(render_objects(values))
    assert config == {
        "name": "acme",
        "handler": "examples.widgets:Widgets",
        "pythonPath": ["/opt/extra"],
        "parent": {"apiVersion": "example.com/v1", "kind": "Widget"},
        "children": [{"apiVersion": "apps/v1", "kind": "Deployment", "updateStrategy": "Replace"}],
        "namespace": "team-a",
        "workers": 7,
        "inFlightPerWorker": 64,
        "workerMemoryLimitMB": 300,
        "resyncSeconds": 0,
        "handlerTimeoutSeconds": 12,
        "backoff": {"initialSeconds": 0.1, "maxSeconds": 60, "multiplier": 1.5, "jitter": 0},
        "leaderElection": {
            "enabled": True,
            "leaseName": "acme-lock",
            "leaseNamespace": "kube-system",
            "leaseDurationSeconds": 15,
            "renewDeadlineSeconds": 10,
            "retryPeriodSeconds": 2,
        },
        "sharding": {"shards": 3},
        "metrics": {"port": 8080},
        "health": {"port": 8081},
        "logging": {"format": "console", "level": "debug"},
    }


def test_workers_null_leaves_the_cpu_count_default() -> None:
    assert "workers" not in rendered_config(render_objects({"config": {"workers": None}}))


# ---------------------------------------------------------------------------------------------
# RBAC: extraction, least privilege, coverage of what operatord asks for


@dataclass(frozen=True)
class Grant:
    """One permission: `namespace` None means every namespace (and cluster-scoped objects)."""

    namespace: str | None
    group: str
    resource: str  # "plural" or "plural/subresource"
    verb: str
    name: str | None = None  # resourceNames restriction


def rbac_grants(objects: list[dict], service_account: str, sa_namespace: str) -> set[Grant]:
    """Every permission the rendered Roles/ClusterRoles give the service account through the
    rendered bindings. Rules are expanded to one Grant per group x resource x verb x name."""
    roles = {
        (o["kind"], o["metadata"].get("namespace")): o
        for o in objects
        if o["kind"] in ("Role", "ClusterRole")
    }
    by_name = {(kind, ns, o["metadata"]["name"]): o for (kind, ns), o in roles.items()}
    grants = set()
    for binding in objects:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not any(
            s["kind"] == "ServiceAccount"
            and s["name"] == service_account
            and s["namespace"] == sa_namespace
            for s in binding["subjects"]
        ):
            continue
        ref = binding["roleRef"]
        binding_ns = binding["metadata"].get("namespace")
        role_ns = None if ref["kind"] == "ClusterRole" else binding_ns
        role = by_name.get((ref["kind"], role_ns, ref["name"]))
        assert role is not None, f"{binding['metadata']['name']} refers to a missing role"
        scope = binding_ns if binding["kind"] == "RoleBinding" else None
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        for name in rule.get("resourceNames") or [None]:
                            grants.add(Grant(scope, group, resource, verb, name))
    return grants


# A list or watch is named when its fieldSelector is exactly metadata.name=X (kube-apiserver's
# RequestInfo; the embedded server's audit log records that name).
UNNAMEABLE_VERBS = {"create", "deletecollection"}


def allowed(grants: Iterable[Grant], request: dict) -> bool:
    """Would the Kubernetes RBAC authorizer allow this request (as the API server records it)?"""
    resource = request["resource"]
    if request.get("subresource"):
        resource = f"{resource}/{request['subresource']}"
    for g in grants:
        if (g.group, g.resource, g.verb) != (request["apiGroup"], resource, request["verb"]):
            continue
        if g.namespace is not None and g.namespace != request.get("namespace"):
            continue
        if g.name is not None and (
            request["verb"] in UNNAMEABLE_VERBS or request.get("name") != g.name
        ):
            continue
        return True
    return False


def default_grants(values: dict | None = None) -> set[Grant]:
    objects = render_objects(values)
    sa = one(objects, "ServiceAccount")["metadata"]["name"]
    return rbac_grants(objects, sa, NAMESPACE)


# What operatord does with each type (read from operatord/apply.py, worker.py, election.py and
# checked end to end below); the chart must grant exactly this.
PARENT_VERBS = {"get", "list", "watch", "patch"}
STATUS_VERBS = {"patch"}
CHILD_VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}
LEASE_VERBS = {"get", "create", "update", "watch"}  # watch: a warm standby
EVENT_VERBS = {"create", "patch"}


def expected_grants(
    scope: str | None,
    parent: tuple[str, str],
    children: list[tuple[str, str]],
    lease: tuple[str, str] | None,
) -> set[Grant]:
    group, plural = parent
    out = {Grant(scope, group, plural, v) for v in PARENT_VERBS}
    out |= {Grant(scope, group, f"{plural}/status", v) for v in STATUS_VERBS}
    # blockOwnerDeletion on children needs this under OwnerReferencesPermissionEnforcement.
    out.add(Grant(scope, group, f"{plural}/finalizers", "update"))
    for child_group, child_plural in children:
        out |= {Grant(scope, child_group, child_plural, v) for v in CHILD_VERBS}
    out |= {Grant(scope, "", "events", v) for v in EVENT_VERBS}
    if lease is not None:
        lease_ns, lease_name = lease
        out.add(Grant(lease_ns, "coordination.k8s.io", "leases", "create"))
        out |= {
            Grant(lease_ns, "coordination.k8s.io", "leases", v, lease_name)
            for v in LEASE_VERBS - {"create"}
        }
    return out


def test_default_rbac_is_exactly_what_operatord_uses_cluster_wide() -> None:
    assert default_grants() == expected_grants(
        None,
        ("example.com", "widgets"),
        [("", "configmaps")],
        (NAMESPACE, "widget-operator-leader"),
    )
    objects = render_objects()
    assert one(objects, "ClusterRole") and one(objects, "ClusterRoleBinding")


def test_namespaced_rbac_uses_a_role_in_the_watched_namespace() -> None:
    objects = render_objects(VARIANTS["namespaced"])
    assert not find(objects, "ClusterRole") and not find(objects, "ClusterRoleBinding")
    role = one(objects, "Role", "operatord")
    assert role["metadata"]["namespace"] == "team-a"
    assert default_grants(VARIANTS["namespaced"]) == expected_grants(
        "team-a",
        ("example.com", "widgets"),
        [("", "configmaps")],
        (NAMESPACE, "widget-operator-leader"),
    )


def test_no_lease_permissions_without_leader_election() -> None:
    grants = default_grants(VARIANTS["leader-election-off"])
    assert not any(g.resource == "leases" for g in grants)


def test_lease_permissions_follow_lease_name_and_namespace() -> None:
    grants = default_grants(
        {"config": {"leaderElection": {"leaseName": "lock", "leaseNamespace": "infra"}}}
    )
    leases = {g for g in grants if g.resource == "leases"}
    assert leases == {
        Grant("infra", "coordination.k8s.io", "leases", "create"),
        Grant("infra", "coordination.k8s.io", "leases", "get", "lock"),
        Grant("infra", "coordination.k8s.io", "leases", "update", "lock"),
        Grant("infra", "coordination.k8s.io", "leases", "watch", "lock"),
    }


def test_custom_image_rbac_covers_several_child_types() -> None:
    assert default_grants(VARIANTS["custom-image"]) == expected_grants(
        None,
        ("acme.example.com", "websites"),
        [("apps", "deployments"), ("", "services")],
        (NAMESPACE, "website-operator-leader"),
    )


def test_rbac_has_no_wildcards_and_extra_rules_are_appended() -> None:
    for variant in VARIANTS.values():
        for role in find(render_objects(variant), "ClusterRole") + find(
            render_objects(variant), "Role"
        ):
            for rule in role["rules"]:
                for field in ("apiGroups", "resources", "verbs"):
                    assert "*" not in rule[field], (role["metadata"]["name"], rule)
    grants = default_grants(VARIANTS["everything-on"])
    assert Grant(None, "", "secrets", "get") in grants


@pytest.mark.parametrize(
    ("kind", "plural", "expected"),
    [
        ("Widget", "", "widgets"),
        ("Ingress", "", "ingresses"),
        ("NetworkPolicy", "", "networkpolicies"),
        ("Gateway", "", "gateways"),
        ("Box", "", "boxes"),
        ("Patch", "", "patches"),
        ("Endpoints", "", "endpoints"),
        ("Octopus", "octopodes", "octopodes"),
    ],
)
def test_plural_guess_and_override(kind: str, plural: str, expected: str) -> None:
    values = {
        "config": {"parent": {"apiVersion": "example.com/v1", "kind": kind, "plural": plural}}
    }
    parent_resources = {g.resource for g in default_grants(values) if g.group == "example.com"}
    assert parent_resources == {expected, f"{expected}/status", f"{expected}/finalizers"}


def test_core_group_children_map_to_the_empty_api_group() -> None:
    values = {
        "config": {
            "children": [
                {"apiVersion": "v1", "kind": "Secret"},
                {"apiVersion": "batch/v1", "kind": "Job"},
            ]
        }
    }
    children = {(g.group, g.resource) for g in default_grants(values) if g.verb == "delete"}
    assert children == {("", "secrets"), ("batch", "jobs")}


# The requests operatord makes for the example operator, as the embedded API server records them
# (one per verb and resource the engine uses; names and namespaces as in a real run).
ENGINE_REQUESTS = [
    {"verb": "list", "apiGroup": "example.com", "resource": "widgets", "namespace": None},
    {"verb": "watch", "apiGroup": "example.com", "resource": "widgets", "namespace": None},
    {
        "verb": "get",
        "apiGroup": "example.com",
        "resource": "widgets",
        "namespace": "apps",
        "name": "w",
    },
    {
        "verb": "patch",
        "apiGroup": "example.com",
        "resource": "widgets",
        "namespace": "apps",
        "name": "w",
    },
    {
        "verb": "patch",
        "apiGroup": "example.com",
        "resource": "widgets",
        "subresource": "status",
        "namespace": "apps",
        "name": "w",
    },
    {"verb": "list", "apiGroup": "", "resource": "configmaps", "namespace": None},
    {"verb": "watch", "apiGroup": "", "resource": "configmaps", "namespace": None},
    {"verb": "create", "apiGroup": "", "resource": "configmaps", "namespace": "apps"},
    {"verb": "update", "apiGroup": "", "resource": "configmaps", "namespace": "apps", "name": "w"},
    {"verb": "patch", "apiGroup": "", "resource": "configmaps", "namespace": "apps", "name": "w"},
    {"verb": "delete", "apiGroup": "", "resource": "configmaps", "namespace": "apps", "name": "w"},
    {"verb": "create", "apiGroup": "", "resource": "events", "namespace": "apps"},
    {
        "verb": "get",
        "apiGroup": "coordination.k8s.io",
        "resource": "leases",
        "namespace": NAMESPACE,
        "name": "widget-operator-leader",
    },
    {
        "verb": "create",
        "apiGroup": "coordination.k8s.io",
        "resource": "leases",
        "namespace": NAMESPACE,
    },
    {
        "verb": "update",
        "apiGroup": "coordination.k8s.io",
        "resource": "leases",
        "namespace": NAMESPACE,
        "name": "widget-operator-leader",
    },
]


def test_rbac_allows_every_request_the_engine_makes() -> None:
    grants = default_grants()
    denied = [r for r in ENGINE_REQUESTS if not allowed(grants, r)]
    assert denied == []


@pytest.mark.parametrize(
    "request_",
    [
        {"verb": "get", "apiGroup": "", "resource": "secrets", "namespace": "apps", "name": "s"},
        {
            "verb": "delete",
            "apiGroup": "example.com",
            "resource": "widgets",
            "namespace": "apps",
            "name": "w",
        },
        {
            "verb": "update",
            "apiGroup": "coordination.k8s.io",
            "resource": "leases",
            "namespace": NAMESPACE,
            "name": "someone-elses-lease",
        },
        {
            "verb": "get",
            "apiGroup": "coordination.k8s.io",
            "resource": "leases",
            "namespace": "kube-system",
            "name": "widget-operator-leader",
        },
        {"verb": "create", "apiGroup": "events.k8s.io", "resource": "events", "namespace": "apps"},
        {
            "verb": "update",
            "apiGroup": "example.com",
            "resource": "widgets",
            "namespace": "apps",
            "name": "w",
        },
        {
            "verb": "update",
            "apiGroup": "example.com",
            "resource": "widgets",
            "subresource": "status",
            "namespace": "apps",
            "name": "w",
        },
        {"verb": "delete", "apiGroup": "", "resource": "events", "namespace": "apps", "name": "e"},
        {
            "verb": "list",
            "apiGroup": "coordination.k8s.io",
            "resource": "leases",
            "namespace": NAMESPACE,
        },
    ],
)
def test_rbac_denies_what_the_engine_does_not_need(request_: dict) -> None:
    assert not allowed(default_grants(), request_)


def test_namespaced_rbac_denies_other_namespaces() -> None:
    grants = default_grants(VARIANTS["namespaced"])
    watch_here = {
        "verb": "watch",
        "apiGroup": "example.com",
        "resource": "widgets",
        "namespace": "team-a",
    }
    assert allowed(grants, watch_here)
    assert not allowed(grants, {**watch_here, "namespace": "team-b"})
    assert not allowed(grants, {**watch_here, "namespace": None})


# ---- several controllers and namespace sets


# one lease for the daemon, whatever its controllers: as today, in the release namespace
SHOP_LEASE = {
    Grant(NAMESPACE, "coordination.k8s.io", "leases", "create"),
    Grant(NAMESPACE, "coordination.k8s.io", "leases", "get", "shop-operator-leader"),
    Grant(NAMESPACE, "coordination.k8s.io", "leases", "update", "shop-operator-leader"),
    Grant(NAMESPACE, "coordination.k8s.io", "leases", "watch", "shop-operator-leader"),
}


def shop_grants(scope: str | None) -> set[Grant]:
    """The union of what the shop's two controllers need in one scope (no lease)."""
    out = expected_grants(scope, ("shop.example.com", "orders"), [("", "configmaps")], None)
    out |= expected_grants(
        scope, ("shop.example.com", "carts"), [("", "configmaps"), ("", "secrets")], None
    )
    return out  # the related Secret is a child of carts already: no narrower grant


def test_several_controllers_get_the_union_of_their_types_cluster_wide() -> None:
    objects = render_objects(SHOP_VALUES)
    expected = shop_grants(None)
    # globs and negations: namespaces come and go at run time, so they are watched
    expected |= {Grant(None, "", "namespaces", v) for v in ("list", "watch")}
    assert default_grants(SHOP_VALUES) == expected | SHOP_LEASE
    role = one(objects, "ClusterRole")
    # a child type two controllers share is one rule
    configmap_rules = [r for r in role["rules"] if r["resources"] == ["configmaps"]]
    assert len(configmap_rules) == 1
    assert not find(objects, "Role", "operatord")  # only the lease Role is namespaced


def test_literal_namespaces_get_a_role_each_and_nothing_cluster_wide() -> None:
    objects = render_objects(SHOP_LITERAL)
    roles = find(objects, "Role", "operatord")
    bindings = find(objects, "RoleBinding", "operatord")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["shop", "team-a"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["shop", "team-a"]
    assert not find(objects, "ClusterRole") and not find(objects, "ClusterRoleBinding")
    assert default_grants(SHOP_LITERAL) == (
        shop_grants("shop") | shop_grants("team-a") | SHOP_LEASE
    )
    grants = default_grants(SHOP_LITERAL)
    watch = {"verb": "watch", "apiGroup": "shop.example.com", "resource": "orders"}
    assert allowed(grants, {**watch, "namespace": "shop"})
    assert allowed(grants, {**watch, "namespace": "team-a"})
    assert not allowed(grants, {**watch, "namespace": "team-b"})
    assert not allowed(grants, {**watch, "namespace": None})  # no cluster-wide read
    assert not allowed(grants, {"verb": "list", "apiGroup": "", "resource": "namespaces"})


def test_one_literal_namespace_in_namespaces_renders_like_namespace() -> None:
    def rbac(values: dict) -> list[dict]:
        kinds = ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")
        return [o for o in render_objects(values) if o["kind"] in kinds]

    assert rbac({"config": {"namespaces": ["team-a"]}}) == rbac(VARIANTS["namespaced"])


@pytest.mark.parametrize(
    "namespaces",
    [["team-*"], ["a", "!b"], ["team-?"], ["!kube-system"]],
)
def test_globs_and_negations_grant_cluster_wide_and_watch_namespaces(namespaces: list) -> None:
    values = {"config": {"namespaces": namespaces}}
    objects = render_objects(values)
    assert one(objects, "ClusterRole") and one(objects, "ClusterRoleBinding")
    grants = default_grants(values)
    assert Grant(None, "", "namespaces", "list") in grants
    assert Grant(None, "", "namespaces", "watch") in grants
    assert Grant(None, "example.com", "widgets", "watch") in grants


def test_a_namespace_selector_grants_cluster_wide_and_watches_namespaces() -> None:
    grants = default_grants(VARIANTS["namespace-selector"])
    assert Grant(None, "", "namespaces", "watch") in grants
    assert Grant(None, "example.com", "widgets", "watch") in grants


def test_literal_namespaces_with_a_cluster_scoped_related_type() -> None:
    values = merge(SHOP_LITERAL, {})
    values["config"]["controllers"][1]["related"].append(
        {"apiVersion": "v1", "kind": "Namespace", "labelSelector": "shop"}
    )
    objects = render_objects(values)
    # a Role cannot grant a cluster-scoped type: the read-only -related ClusterRole does
    related = one(objects, "ClusterRole", "-related")
    assert [r["resources"] for r in related["rules"]] == [["namespaces"]]
    assert not find(objects, "ClusterRole", "operatord")


def test_aggregated_roles_cover_every_parent_type() -> None:
    objects = render_objects(merge(SHOP_VALUES, {"rbac": {"aggregateToDefaultRoles": True}}))
    view = one(objects, "ClusterRole", "-view")
    assert [r["resources"] for r in view["rules"]] == [
        ["orders", "orders/status"],
        ["carts", "carts/status"],
    ]
    edit = one(objects, "ClusterRole", "-edit")
    assert [r["resources"] for r in edit["rules"]] == [["orders"], ["carts"]]


# ---- end to end: operatord against the embedded API server, its requests against the RBAC


def _wait(predicate, timeout: float, what: str):
    return wait_for(predicate, timeout, 0.05, what)


# Permissions the chart grants that a short run of the example operator does not exercise, and
# why they stay: everything else granted must show up in the recorded requests.
NOT_EXERCISED_BY_THE_EXAMPLE = {
    ("example.com", "widgets/finalizers", "update"): "blockOwnerDeletion under the "
    "OwnerReferencesPermissionEnforcement admission plugin",
    ("example.com", "widgets", "get"): "re-read of a parent after a finalizer patch conflict",
    ("", "configmaps", "get"): "a child that exists already when it is created",
    ("", "configmaps", "patch"): "the Apply update strategy",
    ("", "configmaps", "delete"): "a child dropped from the desired set, or Recreate",
    ("", "events", "create"): "only when a sync fails",
    ("", "events", "patch"): "only when a sync fails again (the Event's count)",
    ("coordination.k8s.io", "leases", "watch"): "a warm standby watching the lease held by "
    "another replica (tests/e2e/test_warm_standby.py); a lone replica takes it at once",
}


@pytest.mark.parametrize("shards", [1, 4])
def test_end_to_end_rbac_covers_every_request_operatord_makes(tmp_path: Path, shards: int) -> None:
    from kubernetes import client
    from kubernetes import config as kube_config

    from operatord import testing

    objects = render_objects({"replicaCount": 1, "config": {"sharding": {"shards": shards}}})
    grants = rbac_grants(objects, one(objects, "ServiceAccount")["metadata"]["name"], NAMESPACE)
    config = rendered_config(objects)
    config["workers"] = 1
    config["pythonPath"] = [str(ROOT)]
    config["metrics"]["port"] = 0
    config["health"]["port"] = 0
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))

    with testing.ApiServer() as api:
        kubeconfig = str(api.kubeconfig)
        kclient = kube_config.new_client_from_config(config_file=kubeconfig)
        own: Counter = Counter()  # the test's own requests, subtracted from the record

        def mine(verb, group, resource, namespace=None, name=None, subresource=None):
            own[(verb, group, resource, subresource, namespace, name)] += 1

        crd = yaml.safe_load((ROOT / "examples" / "widget-crd.yaml").read_text())
        client.ApiextensionsV1Api(kclient).create_custom_resource_definition(crd)
        mine("create", "apiextensions.k8s.io", "customresourcedefinitions")
        core = client.CoreV1Api(kclient)
        for ns in (NAMESPACE, "apps"):
            core.create_namespace({"metadata": {"name": ns}})
            mine("create", "", "namespaces")
        custom = client.CustomObjectsApi(kclient)
        widget = {
            "apiVersion": "example.com/v1",
            "kind": "Widget",
            "metadata": {"name": "w", "namespace": "apps"},
            "spec": {"size": 2},
        }
        custom.create_namespaced_custom_object("example.com", "v1", "apps", "widgets", widget)
        mine("create", "example.com", "widgets", "apps")
        before = len(api.requests())

        env = dict(os.environ, POD_NAMESPACE=NAMESPACE, PYTHONPATH=str(ROOT))
        daemon = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "operatord",
                "run",
                "--config",
                str(config_path),
                "--kubeconfig",
                kubeconfig,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:

            def ready():
                mine("get", "example.com", "widgets", "apps", "w")
                w = custom.get_namespaced_custom_object("example.com", "v1", "apps", "widgets", "w")
                return (w.get("status") or {}).get("ready")

            _wait(ready, 60, "the Widget to become ready")
            custom.patch_namespaced_custom_object(
                "example.com", "v1", "apps", "widgets", "w", {"spec": {"size": 5}}
            )
            mine("patch", "example.com", "widgets", "apps", "w")

            def resized():
                mine("get", "", "configmaps", "apps", "w")
                return core.read_namespaced_config_map("w", "apps").data.get("size") == "5"

            _wait(resized, 60, "the ConfigMap to follow the Widget")
            custom.delete_namespaced_custom_object("example.com", "v1", "apps", "widgets", "w")
            mine("delete", "example.com", "widgets", "apps", "w")

            def gone():
                mine("list", "example.com", "widgets", "apps")
                items = custom.list_namespaced_custom_object("example.com", "v1", "apps", "widgets")
                return not items["items"]

            _wait(gone, 60, "the finalizer to be removed")
        finally:
            daemon.send_signal(signal.SIGTERM)
            output, _ = daemon.communicate(timeout=60)
        assert daemon.returncode == 0, output

        recorded = api.requests()[before:]
    operator_requests = []
    for r in recorded:
        key = (
            r["verb"],
            r["apiGroup"],
            r["resource"],
            r.get("subresource") or None,
            r.get("namespace") or None,
            r.get("name") or None,
        )
        if own[key]:
            own[key] -= 1
            continue
        if not r["resource"]:
            continue  # discovery (/api, /apis, /version): allowed to every authenticated user
        operator_requests.append(r)
    assert operator_requests, "the daemon made no API requests"
    denied = [r for r in operator_requests if not allowed(grants, r)]
    assert denied == [], denied
    used = {
        (
            r["apiGroup"],
            r["resource"] + (f"/{r['subresource']}" if r.get("subresource") else ""),
            r["verb"],
        )
        for r in operator_requests
    }
    granted = {(g.group, g.resource, g.verb) for g in grants}
    unexplained = granted - used - set(NOT_EXERCISED_BY_THE_EXAMPLE)
    assert unexplained == set(), f"granted but never used: {unexplained}"


def test_end_to_end_rbac_of_literal_namespaces_covers_every_request(tmp_path: Path) -> None:
    """`namespaces` of names only: operatord works with the per-namespace Roles alone (no
    request needs a cluster-wide grant), and a parent in another namespace is never touched."""
    schema = json.loads((ROOT / "config" / "config.schema.json").read_text())
    if "namespaces" not in schema["properties"]:
        pytest.skip(
            "operatord does not know `namespaces` yet: needs issue 22's config and engine "
            "change (per-namespace watches)"
        )
    from kubernetes import client
    from kubernetes import config as kube_config

    from operatord import testing

    watched = ["apps", "team-a"]
    values = {"replicaCount": 1, "config": {"namespaces": watched}}
    objects = render_objects(values)
    assert not find(objects, "ClusterRole") and not find(objects, "ClusterRoleBinding")
    grants = rbac_grants(objects, one(objects, "ServiceAccount")["metadata"]["name"], NAMESPACE)
    config = rendered_config(objects)
    config.update(workers=1, pythonPath=[str(ROOT)])
    config["metrics"]["port"] = 0
    config["health"]["port"] = 0
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))

    with testing.ApiServer() as api:
        kubeconfig = str(api.kubeconfig)
        kclient = kube_config.new_client_from_config(config_file=kubeconfig)
        crd = yaml.safe_load((ROOT / "examples" / "widget-crd.yaml").read_text())
        client.ApiextensionsV1Api(kclient).create_custom_resource_definition(crd)
        core = client.CoreV1Api(kclient)
        custom = client.CustomObjectsApi(kclient)
        for ns in (NAMESPACE, *watched, "outside"):
            core.create_namespace({"metadata": {"name": ns}})
        for ns in (*watched, "outside"):
            widget = {
                "apiVersion": "example.com/v1",
                "kind": "Widget",
                "metadata": {"name": "w", "namespace": ns},
                "spec": {"size": 2},
            }
            custom.create_namespaced_custom_object("example.com", "v1", ns, "widgets", widget)
        before = len(api.requests())
        env = dict(os.environ, POD_NAMESPACE=NAMESPACE, PYTHONPATH=str(ROOT))
        daemon = subprocess.Popen(
            [sys.executable, "-m", "operatord", "run", "--config", str(config_path)]
            + ["--kubeconfig", kubeconfig],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:

            def ready(ns: str) -> bool:
                w = custom.get_namespaced_custom_object("example.com", "v1", ns, "widgets", "w")
                return bool((w.get("status") or {}).get("ready"))

            for ns in watched:
                _wait(lambda ns=ns: ready(ns), 60, f"the Widget in {ns} to become ready")
        finally:
            daemon.send_signal(signal.SIGTERM)
            output, _ = daemon.communicate(timeout=60)
        assert daemon.returncode == 0, output
        recorded = api.requests()[before:]  # before the test reads the other namespace
        outside = custom.get_namespaced_custom_object(
            "example.com", "v1", "outside", "widgets", "w"
        )
        assert not outside.get("status") and not outside["metadata"].get("finalizers")
        assert core.list_namespaced_config_map("outside").items == []
    # Everything but discovery; the test's own polling GETs need the same grant as the daemon's.
    operator_requests = [r for r in recorded if r["resource"]]
    denied = [r for r in operator_requests if not allowed(grants, r)]
    assert denied == [], denied
    assert not [r for r in operator_requests if r.get("namespace") == "outside"]
    watches = {(r["resource"], r["namespace"]) for r in operator_requests if r["verb"] == "watch"}
    assert watches >= {(res, ns) for res in ("widgets", "configmaps") for ns in watched}


# ---- related types: read-only grants, and what a run with related objects asks for

READ_VERBS = {"get", "list", "watch"}


def test_related_types_are_granted_read_only_cluster_wide() -> None:
    values = {
        "config": {
            "related": [
                {"apiVersion": "v1", "kind": "Secret", "labelSelector": "app=web"},
                {"apiVersion": "example.com/v1", "kind": "Octopus", "plural": "octopodes"},
                {"apiVersion": "v1", "kind": "Namespace"},
            ]
        }
    }
    expected = expected_grants(
        None,
        ("example.com", "widgets"),
        [("", "configmaps")],
        (NAMESPACE, "widget-operator-leader"),
    )
    for group, plural in (("", "secrets"), ("example.com", "octopodes"), ("", "namespaces")):
        expected |= {Grant(None, group, plural, v) for v in READ_VERBS}
    assert default_grants(values) == expected
    objects = render_objects(values)
    assert not find(objects, "ClusterRole", "-related")  # the ClusterRole covers them already
    assert rendered_config(objects)["related"] == [
        {"apiVersion": "v1", "kind": "Secret", "labelSelector": "app=web"},
        {"apiVersion": "example.com/v1", "kind": "Octopus", "labelSelector": ""},
        {"apiVersion": "v1", "kind": "Namespace", "labelSelector": ""},
    ]


def test_related_types_cached_as_none_are_granted_get_only() -> None:
    values = {
        "config": {
            "related": [
                {"apiVersion": "v1", "kind": "Secret", "cache": "none"},
                {"apiVersion": "v1", "kind": "ConfigMap", "cache": "metadata"},
                {"apiVersion": "v1", "kind": "Namespace", "cache": "none"},
            ],
            "namespace": "team-a",
        }
    }
    grants = default_grants(values)
    assert {(g.resource, g.verb) for g in grants if g.resource == "secrets"} == {("secrets", "get")}
    # metadata still lists and watches (the leader's informer); configmaps are a child too
    assert {"get", "list", "watch"} <= {g.verb for g in grants if g.resource == "configmaps"}
    # a cluster-scoped type cached as none: get only, in the -related ClusterRole
    assert {(g.namespace, g.verb) for g in grants if g.resource == "namespaces"} == {(None, "get")}
    assert [r["cache"] for r in rendered_config(render_objects(values))["related"]] == [
        "none",
        "metadata",
        "none",
    ]


def test_related_types_in_a_namespaced_install() -> None:
    values = copy.deepcopy(VARIANTS["related"])
    values["config"]["related"].append(
        {"apiVersion": "example.com/v1", "kind": "Cluster", "clusterScoped": True}
    )
    grants = default_grants(values)
    expected = expected_grants(
        "team-a",
        ("example.com", "widgets"),
        [("", "configmaps")],
        (NAMESPACE, "widget-operator-leader"),
    )
    expected |= {Grant("team-a", "", "secrets", v) for v in READ_VERBS}
    # cluster-scoped related types need a ClusterRole, read only
    expected |= {Grant(None, "", "namespaces", v) for v in READ_VERBS}
    expected |= {Grant(None, "example.com", "clusters", v) for v in READ_VERBS}
    assert grants == expected
    objects = render_objects(values)
    assert one(objects, "ClusterRole", "-related") and one(
        objects, "ClusterRoleBinding", "-related"
    )


def test_end_to_end_rbac_covers_related_types(tmp_path: Path) -> None:
    """The Website example (a TLS Secret by name, Namespaces by label) in a namespaced install:
    every request operatord makes is granted, and it lists and watches both related types."""
    from kubernetes import client
    from kubernetes import config as kube_config

    from operatord import testing

    values = {
        "replicaCount": 1,
        "config": {
            "name": "website-operator",
            "handler": "examples.websites:Websites",
            "parent": {"apiVersion": "example.com/v1", "kind": "Website"},
            "children": [{"apiVersion": "v1", "kind": "ConfigMap"}],
            "related": [
                {"apiVersion": "v1", "kind": "Secret"},
                {"apiVersion": "v1", "kind": "Namespace", "labelSelector": "team"},
            ],
            "namespace": "apps",
        },
    }
    objects = render_objects(values)
    grants = rbac_grants(objects, one(objects, "ServiceAccount")["metadata"]["name"], NAMESPACE)
    config = rendered_config(objects)
    config.update(workers=1, pythonPath=[str(ROOT)])
    config["metrics"]["port"] = 0
    config["health"]["port"] = 0
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))

    with testing.ApiServer() as api:
        kubeconfig = str(api.kubeconfig)
        kclient = kube_config.new_client_from_config(config_file=kubeconfig)
        crd = yaml.safe_load((ROOT / "examples" / "website-crd.yaml").read_text())
        client.ApiextensionsV1Api(kclient).create_custom_resource_definition(crd)
        core = client.CoreV1Api(kclient)
        core.create_namespace({"metadata": {"name": NAMESPACE}})
        core.create_namespace({"metadata": {"name": "apps", "labels": {"team": "web"}}})
        crt = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg=="
        core.create_namespaced_secret(
            "apps", {"metadata": {"name": "www-tls"}, "data": {"tls.crt": crt}}
        )
        custom = client.CustomObjectsApi(kclient)
        website = {
            "apiVersion": "example.com/v1",
            "kind": "Website",
            "metadata": {"name": "www", "namespace": "apps"},
            "spec": {"host": "www.example.com", "tlsSecret": "www-tls", "team": "web"},
        }
        custom.create_namespaced_custom_object("example.com", "v1", "apps", "websites", website)
        before = len(api.requests())
        env = dict(os.environ, POD_NAMESPACE=NAMESPACE, PYTHONPATH=str(ROOT))
        daemon = subprocess.Popen(
            [sys.executable, "-m", "operatord", "run", "--config", str(config_path)]
            + ["--kubeconfig", kubeconfig],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:

            def synced():
                w = custom.get_namespaced_custom_object(
                    "example.com", "v1", "apps", "websites", "www"
                )
                st = w.get("status") or {}
                return st.get("tls") == "ready" and st.get("teamNamespaces") == ["apps"]

            _wait(synced, 60, "the Website to read its Secret and team Namespaces")
        finally:
            daemon.send_signal(signal.SIGTERM)
            output, _ = daemon.communicate(timeout=60)
        assert daemon.returncode == 0, output
        recorded = api.requests()[before:]
    # Everything but discovery; the test's own polling GETs of the Website are among them, and
    # they need the same grant as the daemon's.
    operator_requests = [r for r in recorded if r["resource"]]
    denied = [r for r in operator_requests if not allowed(grants, r)]
    assert denied == [], denied
    related_used = {
        (r["resource"], r["verb"])
        for r in operator_requests
        if r["resource"] in ("secrets", "namespaces")
    }
    # Read through streaming lists, which are watch requests; `list` stays granted for API
    # servers without them (the informers fall back to paged lists). Secrets are cached as
    # metadata by default: the worker gets the selected one.
    assert related_used == {("secrets", "watch"), ("secrets", "get"), ("namespaces", "watch")}
    granted = {(g.group, g.resource, g.verb) for g in grants}
    assert {("", "secrets", "list"), ("", "namespaces", "list")} <= granted


# ---------------------------------------------------------------------------------------------
# monitoring, availability, network


def test_servicemonitor_scrapes_the_metrics_service() -> None:
    objects = render_objects(VARIANTS["servicemonitor"])
    monitor = one(objects, "ServiceMonitor")
    service = one(objects, "Service", "-metrics")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kps"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert not find(render_objects(), "ServiceMonitor")


def test_metrics_service_targets_the_metrics_port_of_the_pods() -> None:
    objects = render_objects()
    service = one(objects, "Service", "-metrics")
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == "metrics"
    assert {"name": "metrics", "containerPort": 8080, "protocol": "TCP"} in deployment_container(
        objects
    )["ports"]


def test_pod_disruption_budget_is_optional() -> None:
    assert not find(render_objects(), "PodDisruptionBudget")
    pdb = one(render_objects(VARIANTS["everything-on"]), "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    pdb = one(
        render_objects({"podDisruptionBudget": {"enabled": True, "maxUnavailable": 1}}),
        "PodDisruptionBudget",
    )
    assert pdb["spec"] == {
        "maxUnavailable": 1,
        "selector": {
            "matchLabels": {
                "app.kubernetes.io/name": "operatord",
                "app.kubernetes.io/instance": RELEASE,
            }
        },
    }


def test_network_policy_allows_scrapes_probes_api_server_and_dns_only() -> None:
    assert not find(render_objects(), "NetworkPolicy")
    policy = one(render_objects(VARIANTS["everything-on"]), "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    metrics, health = policy["ingress"]
    assert metrics["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert metrics["from"] == VARIANTS["everything-on"]["networkPolicy"]["metricsFrom"]
    assert health["ports"] == [{"port": "health", "protocol": "TCP"}]
    api, dns = policy["egress"]
    assert {p["port"] for p in api["ports"]} == {443, 6443}
    assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}


def test_grafana_dashboard_configmap_for_the_sidecar() -> None:
    assert not find(render_objects(), "ConfigMap", "-dashboard")
    objects = render_objects(
        {"grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "Operators"}}}
    )
    dashboard = one(objects, "ConfigMap", "-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "Operators"}
    shipped = json.loads((CHART / "dashboards" / "operatord.json").read_text())
    assert json.loads(dashboard["data"]["operatord.json"]) == shipped
    kubernetes_validate.validate(dashboard, KUBE_VERSION, strict=True)


# ---------------------------------------------------------------------------------------------
# helm test hooks and NOTES


def test_helm_test_hooks_check_the_config_and_the_metrics_endpoint() -> None:
    objects = render_objects(VARIANTS["handler-configmap"])
    pods = {p["metadata"]["name"]: p for p in find(objects, "Pod")}
    assert set(pods) == {f"{RELEASE}-operatord-test-config", f"{RELEASE}-operatord-test-metrics"}
    for pod in pods.values():
        assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
        assert pod["spec"]["restartPolicy"] == "Never"
    check = pods[f"{RELEASE}-operatord-test-config"]["spec"]
    assert check["containers"][0]["args"] == [
        "check-config",
        "--config",
        "/etc/operatord/config.yaml",
    ]
    assert {v["name"] for v in check["volumes"]} == {"config", "tmp", "handler"}
    scrape = pods[f"{RELEASE}-operatord-test-metrics"]["spec"]["containers"][0]
    service = one(objects, "Service", "-metrics")["metadata"]["name"]
    assert f"http://{service}.{NAMESPACE}.svc:8080/metrics" in scrape["args"][0]
    compile(scrape["args"][0], "test-metrics", "exec")


def test_notes_describe_the_deployment() -> None:
    notes = render()["operatord/templates/NOTES.txt"]
    assert 'runs the operator "widget-operator"' in notes
    assert "example.com/v1 Widget" in notes and '"widgets"' in notes
    assert f"Lease {NAMESPACE}/widget-operator-leader" in notes
    assert f"helm test {RELEASE}" in notes
    notes = render(VARIANTS["namespaced"])["operatord/templates/NOTES.txt"]
    assert "namespace team-a (Role)" in notes


def test_notes_name_each_controller_and_the_watched_namespaces() -> None:
    def notes(values: dict) -> str:
        return next(t for p, t in render(values).items() if p.endswith("NOTES.txt"))

    text = notes(SHOP_LITERAL)
    assert "Controller: orders: shop.orders:Orders, parent shop.example.com/v1 Order" in text
    assert "Controller: carts: shop.carts:sync" in text and "child Secret" in text
    assert "Watching:  namespaces shop, team-a (a Role in each)" in text
    assert "Handler:" not in text and "CustomResourceDefinitions of the parent types" in text
    assert "(ClusterRole; Namespaces watched)" in notes(SHOP_VALUES)


def test_chart_readme_values_blocks_render_and_their_configs_validate() -> None:
    text = (CHART / "README.md").read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.S)]
    values_blocks = [b for b in blocks if isinstance(b, dict) and ("config" in b or "image" in b)]
    assert len(values_blocks) >= 3
    for values in values_blocks:
        objects = render_objects(values)
        validate_config(rendered_config(objects))


def test_chart_readme_documents_every_top_level_value() -> None:
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = [key for key in values if f"`{key}" not in readme]
    assert missing == []
    assert "helm install" in readme


def test_deploy_doc_shows_install_command_and_required_values() -> None:
    doc = (ROOT / "docs" / "deploy.md").read_text()
    assert "helm install" in doc
    for value in (
        "image.repository",
        "config.name",
        "config.handler",
        "config.parent",
        "config.children",
        "config.namespace",
        "handlerCode",
    ):
        assert value in doc, value


def test_sharded_replicas_get_the_config_a_pdb_and_shard_lease_rbac() -> None:
    objects = render_objects(VARIANTS["sharded"])
    assert rendered_config(objects)["sharding"] == {"shards": 8}
    assert one(objects, "Deployment")["spec"]["replicas"] == 3
    assert one(objects, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    leases = {g for g in default_grants(VARIANTS["sharded"]) if g.resource == "leases"}
    assert leases == {
        Grant(NAMESPACE, "coordination.k8s.io", "leases", verb)
        for verb in ("create", "get", "list", "update")
    }


def test_one_shard_keeps_the_leader_lease_config_and_no_pdb() -> None:
    objects = render_objects()
    assert rendered_config(objects)["sharding"] == {"shards": 1}
    assert not find(objects, "PodDisruptionBudget")
    single = render_objects({"replicaCount": 1, "config": {"sharding": {"shards": 4}}})
    assert not find(single, "PodDisruptionBudget")
