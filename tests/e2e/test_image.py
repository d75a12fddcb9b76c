"""The operatord image, built with `.ci/build-image` (`make image`) and run under the chart's pod
spec (tests/e2e/container.py) against the embedded API server: convergence, probes, metrics,
SIGTERM within the grace period, a standby taking over, the final stage's contents, and the
`examples/custom-image` route. Needs docker or podman (`make tools` installs podman as root);
without one the tests skip, and under CI=true they fail.
"""

from __future__ import annotations

import hashlib
import json
import sys
import uuid
from pathlib import Path

import container
import pytest
from conftest import install_crd, widget_crd
from container import Container, Engine, Unmodeled, build_image, engine_or_skip
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from widgets import create_widget, ready

from operatord.testing import free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
from test_helm import render_objects  # noqa: E402

NAMESPACE = "operators"  # the release namespace: the pods' POD_NAMESPACE, where the lease lives
# One tag per checkout, so that test runs in two worktrees on one machine do not retag each
# other's image.
IMAGE_REPOSITORY = "operatord"
IMAGE_TAG = "test-" + hashlib.sha256(str(REPO).encode()).hexdigest()[:8]
PARENTS = 100
HANDLER_MODULE = "image_widgets"  # only importable from the handlerCode mount
LEASE = {"leaseDurationSeconds": 4, "renewDeadlineSeconds": 3, "retryPeriodSeconds": 1}

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def engine() -> Engine:
    return engine_or_skip()


@pytest.fixture(scope="module")
def image(engine: Engine) -> str:
    return build_image(engine, f"{IMAGE_REPOSITORY}:{IMAGE_TAG}")


@pytest.fixture(scope="module")
def release_namespace(kube) -> str:
    try:
        client.CoreV1Api(kube).create_namespace({"metadata": {"name": NAMESPACE}})
    except ApiException as exc:
        if exc.status != 409:
            raise
    return NAMESPACE


@pytest.fixture
def pods(engine, api, tmp_path):
    """A factory: ``pods(values, name)`` renders the chart with ``values`` (plus free ports)
    and returns the Deployment's pod as a `Container`; all are removed at teardown."""
    made: list[Container] = []

    def make(values: dict, name: str) -> Container:
        config = values.setdefault("config", {})
        config["metrics"] = {"port": free_port()}
        config["health"] = {"port": free_port()}
        objects = render_objects(values, namespace=NAMESPACE)
        pod = Container(
            engine,
            objects,
            kubeconfig=api.kubeconfig,
            workdir=tmp_path,
            pod_name=f"{name}-{uuid.uuid4().hex[:6]}",
            namespace=NAMESPACE,
        )
        made.append(pod)
        return pod

    yield make
    for pod in made:
        pod.remove()


def widget_values() -> dict:
    """The chart's defaults, with the example Widget handler shipped through handlerCode."""
    return {
        "image": {"repository": IMAGE_REPOSITORY, "tag": IMAGE_TAG},
        "config": {"handler": f"{HANDLER_MODULE}:Widgets", "leaderElection": dict(LEASE)},
        "handlerCode": {
            "enabled": True,
            "files": {f"{HANDLER_MODULE}.py": (REPO / "examples" / "widgets.py").read_text()},
        },
    }


def lease_holder(kube, name: str) -> str:
    lease = client.CoordinationV1Api(kube).read_namespaced_lease(name, NAMESPACE)
    return lease.spec.holder_identity or ""


def test_pod_converges_serves_probes_and_metrics_stops_on_sigterm_and_hands_over(
    kube, image, pods, release_namespace, ns
):
    first, second = pods(widget_values(), "ops-a"), pods(widget_values(), "ops-b")
    assert first.image == f"{IMAGE_REPOSITORY}:{IMAGE_TAG}"
    # What the runner derived from the Deployment (a check that the pod spec was applied).
    assert "--read-only" in first.argv and "--cap-drop=ALL" in first.argv
    assert ["--user", "65532:65532"] == first.argv[first.argv.index("--user") :][:2]
    assert any(a.startswith("/tmp:rw,size=67108864") for a in first.argv)  # tmpSizeLimit 64Mi
    assert first.argv[-3:] == ["run", "--config", "/etc/operatord/config.yaml"]

    startup = first.start().wait_ready(timeout=90)
    print(f"start to ready: {startup:.2f}s")
    wait_for(lambda: first.metric("operatord_leader") == 1, 30, message="first pod leads")
    second.start().wait_ready(timeout=90)  # a standby is ready too
    assert second.metric("operatord_leader") == 0
    assert lease_holder(kube, "widget-operator-leader").startswith(first.name)

    for i in range(PARENTS):
        create_widget(kube, ns, f"w{i}", size=i, message="image")
    wait_for(
        lambda: all(ready(kube, ns, f"w{i}") for i in range(PARENTS)),
        120,
        message=f"{PARENTS} Widgets ready",
    )
    cm = client.CoreV1Api(kube).read_namespaced_config_map("w7", ns)
    assert cm.data == {"size": "7", "message": "image"}
    assert first.get(first.health_port, "/readyz") == (200, "ok\n")
    assert first.metric("operatord_syncs_total", result="ok") >= PARENTS
    print(f"leader memory after {PARENTS} parents: {first.memory()}")

    # The leader dies without a word: the standby takes the lease and works.
    first.kill()
    wait_for(
        lambda: second.metric("operatord_leader") == 1,
        LEASE["leaseDurationSeconds"] + 20,
        message="standby took over",
    )
    assert lease_holder(kube, "widget-operator-leader").startswith(second.name)
    create_widget(kube, ns, "after-takeover", size=1)
    wait_for(lambda: ready(kube, ns, "after-takeover"), 30, message="new leader syncs")
    assert second.get(second.health_port, "/readyz") == (200, "ok\n")

    # SIGTERM, as the kubelet sends it: the leader drains and exits 0 within the grace period.
    code, seconds = second.stop()
    print(f"SIGTERM to exit: {seconds:.2f}s (grace {second.grace}s)")
    assert code == 0, second.logs()[-3000:]
    assert seconds < second.grace
    assert lease_holder(kube, "widget-operator-leader") == ""  # released on the way out


# What the final stage may hold besides operatord's run-time dependency closure: pip, so that
# an image built FROM it can `pip install` the user's handler.
CLOSURE = r"""
import importlib.metadata as md, json, os, shutil
from pip._vendor.packaging.requirements import Requirement
from pip._vendor.packaging.utils import canonicalize_name as canon

def requires(dist, extras):
    for text in md.distribution(dist).requires or []:
        req = Requirement(text)
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in extras or {""}):
            yield req

closure, todo = set(), [("operatord", set())]
while todo:
    name, extras = todo.pop()
    for req in requires(name, extras):
        key = (canon(req.name), frozenset(req.extras))
        if key not in closure:
            closure.add(key)
            todo.append((req.name, set(req.extras)))
installed = sorted(canon(d.metadata["Name"]) for d in md.distributions())
compilers = [c for c in ("gcc", "cc", "c++", "clang", "x86_64-linux-gnu-gcc") if shutil.which(c)]
caches = [p for p in ("/root/.cache/pip", "/app/.cache", "/tmp/pip") if os.path.exists(p)]
print(json.dumps({"closure": sorted({n for n, _ in closure}), "installed": installed,
                  "compilers": compilers, "caches": caches}))
"""


def test_final_stage_holds_the_runtime_dependencies_and_pip_only(engine, image):
    out = engine.run(
        "run",
        "--rm",
        "--pull=never",
        *engine.ulimits(),
        "--entrypoint",
        "python",
        image,
        "-c",
        CLOSURE,
    )
    found = json.loads(out.stdout)
    assert "kubernetes" in found["closure"] and "structlog" in found["closure"]
    assert set(found["installed"]) == {*found["closure"], "operatord", "pip"}, found
    assert found["compilers"] == [] and found["caches"] == []


def test_custom_image_example_builds_and_runs_its_handler(
    engine, image, kube, pods, release_namespace, ns
):
    """examples/custom-image: FROM the image just built, the user's package installed, run
    with the example's own chart values."""
    import yaml

    values = yaml.safe_load((REPO / "examples" / "custom-image" / "values.yaml").read_text())
    values["replicaCount"] = 1
    pod = pods(values, "websites")
    build_image(
        engine,
        pod.image,  # the image the values name, as a user would tag it
        context=REPO / "examples" / "custom-image",
        build_args={"OPERATORD_IMAGE": image},
    )
    install_crd(kube, widget_crd(group="acme.example.com", kind="Website", plural="websites"))
    pod.start().wait_ready(timeout=90)
    body = {
        "apiVersion": "acme.example.com/v1",
        "kind": "Website",
        "metadata": {"name": "shop"},
        "spec": {"replicas": 2},
    }
    client.CustomObjectsApi(kube).create_namespaced_custom_object(
        "acme.example.com", "v1", ns, "websites", body
    )

    def children() -> bool:
        try:
            deployment = client.AppsV1Api(kube).read_namespaced_deployment("shop", ns)
            client.CoreV1Api(kube).read_namespaced_service("shop", ns)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return deployment.spec.replicas == 2

    wait_for(children, 60, message="the Website's Deployment and Service")
    code, _ = pod.stop()
    assert code == 0, pod.logs()[-3000:]


# ---- the runner itself (no engine needed) ---------------------------------------------------


def test_runner_refuses_pod_spec_fields_it_does_not_model(tmp_path):
    """A chart change the runner cannot reproduce fails here instead of going untested."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("{}")
    values = widget_values()
    values["initContainers"] = [{"name": "wait", "image": "busybox"}]
    with pytest.raises(Unmodeled, match="initContainers"):
        Container(
            Engine("podman"),
            render_objects(values, namespace=NAMESPACE),
            kubeconfig=str(kubeconfig),
            workdir=tmp_path,
            pod_name="x",
            namespace=NAMESPACE,
        )
    values = widget_values()
    values["securityContext"] = {"runAsNonRoot": True, "privileged": False}
    with pytest.raises(Unmodeled, match="privileged"):
        Container(
            Engine("podman"),
            render_objects(values, namespace=NAMESPACE),
            kubeconfig=str(kubeconfig),
            workdir=tmp_path,
            pod_name="y",
            namespace=NAMESPACE,
        )


def test_missing_engine_fails_under_ci_and_skips_otherwise(monkeypatch):
    monkeypatch.setattr(container, "find_engine", lambda: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no container engine"):
        container.engine_or_skip()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no container engine"):
        container.engine_or_skip()
