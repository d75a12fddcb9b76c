"""Object semantics and verbs of built-in types through the official client."""

import base64

import kubernetes
import pytest
from kubernetes.client import ApiException

from .conftest import cm, raw


def test_create_sets_server_fields(core, ns):
    out = core.create_namespaced_config_map(ns, cm("a"))
    md = out.metadata
    assert md.uid and md.creation_timestamp and md.namespace == ns
    assert int(md.resource_version) > 0
    assert out.api_version == "v1" and out.kind == "ConfigMap"


def test_create_returns_201(client, ns):
    status, body = raw(client, "POST", f"/api/v1/namespaces/{ns}/configmaps", cm("c201"))
    assert status == 201 and body["metadata"]["name"] == "c201"


def test_resource_version_is_global_and_monotonic(core, ns, client):
    a = core.create_namespaced_config_map(ns, cm("a"))
    b = core.create_namespaced_secret(ns, {"metadata": {"name": "s"}, "stringData": {"x": "y"}})
    c = core.patch_namespaced_config_map("a", ns, {"data": {"k": "w"}})
    rvs = [int(o.metadata.resource_version) for o in (a, b, c)]
    assert rvs == sorted(rvs) and len(set(rvs)) == 3


def test_generate_name(core, ns):
    out = core.create_namespaced_config_map(ns, {"metadata": {"generateName": "gen-"}})
    assert out.metadata.name.startswith("gen-") and len(out.metadata.name) == 9


def test_get_list_replace_delete(core, ns):
    core.create_namespaced_config_map(ns, cm("a"))
    got = core.read_namespaced_config_map("a", ns)
    got.data = {"k": "changed"}
    replaced = core.replace_namespaced_config_map("a", ns, got)
    assert replaced.data == {"k": "changed"}
    assert int(replaced.metadata.resource_version) > int(got.metadata.resource_version)
    items = core.list_namespaced_config_map(ns).items
    assert [i.metadata.name for i in items] == ["a"]
    assert items[0].kind == "ConfigMap" and items[0].api_version == "v1"
    deleted = core.delete_namespaced_config_map("a", ns)
    assert deleted["status"] == "Success" and deleted["details"]["name"] == "a"
    with pytest.raises(ApiException) as e:
        core.read_namespaced_config_map("a", ns)
    assert e.value.status == 404


def test_delete_answers_a_status_or_the_object_per_type(client, core, custom, widgets, ns):
    """As the Kubernetes OpenAPI spec says: ConfigMap, Secret, Deployment, Lease, CRD and custom
    objects answer a Status; Pod, Service and ServiceAccount the deleted object."""
    c = core.create_namespaced_config_map(ns, cm("d"))
    status, body = raw(client, "DELETE", f"/api/v1/namespaces/{ns}/configmaps/d")
    assert status == 200
    assert body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": "d", "kind": "configmaps", "uid": c.metadata.uid},
    }
    w = custom.create_namespaced_custom_object(
        "example.com",
        "v1",
        ns,
        "widgets",
        {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}},
    )
    status, body = raw(client, "DELETE", f"/apis/example.com/v1/namespaces/{ns}/widgets/w")
    assert status == 200 and body["kind"] == "Status"
    assert body["details"] == {
        "name": "w",
        "group": "example.com",
        "kind": "widgets",
        "uid": w["metadata"]["uid"],
    }
    apps = kubernetes.client.AppsV1Api(client)
    apps.create_namespaced_deployment(
        ns,
        {
            "metadata": {"name": "dep"},
            "spec": {
                "selector": {"matchLabels": {"a": "b"}},
                "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": []}},
            },
        },
    )
    gone = apps.delete_namespaced_deployment("dep", ns)
    assert gone["status"] == "Success" and gone["details"]["group"] == "apps"
    assert gone["details"]["kind"] == "deployments"
    core.create_namespaced_service(
        ns, {"metadata": {"name": "svc"}, "spec": {"ports": [{"port": 80}]}}
    )
    svc = core.delete_namespaced_service("svc", ns)
    assert svc.kind == "Service" and svc.metadata.name == "svc"  # the client's spec agrees
    core.create_namespaced_pod(ns, {"metadata": {"name": "p"}, "spec": {"containers": []}})
    pod = core.delete_namespaced_pod("p", ns)
    assert pod.kind == "Pod" and pod.metadata.name == "p"
    core.create_namespaced_service_account(ns, {"metadata": {"name": "sa"}})
    sa = core.delete_namespaced_service_account("sa", ns)
    assert sa.kind == "ServiceAccount"


def test_kubectl_deletes_every_kind(kubectl, ns):
    for args in (
        ("configmap", "c"),
        ("deployment", "d", "--image=nginx"),
        ("service", "clusterip", "s", "--tcp=80:80"),
        ("serviceaccount", "sa"),
    ):
        kubectl("create", *args, "-n", ns)
    out = kubectl(
        "delete", "configmap/c", "deployment/d", "service/s", "serviceaccount/sa", "-n", ns
    ).stdout
    assert out.split("\n")[:4] == [
        'configmap "c" deleted',
        'deployment.apps "d" deleted',
        'service "s" deleted',
        'serviceaccount "sa" deleted',
    ]


def test_no_op_write_changes_nothing(core, ns):
    a = core.create_namespaced_config_map(ns, cm("a"))
    again = core.replace_namespaced_config_map("a", ns, a)
    assert again.metadata.resource_version == a.metadata.resource_version
    p = core.patch_namespaced_config_map("a", ns, {"data": {"k": "v"}})
    assert p.metadata.resource_version == a.metadata.resource_version


def test_generation_bumped_only_by_spec(client, ns):
    apps = kubernetes.client.AppsV1Api(client)
    dep = {
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]},
            },
        },
    }
    d = apps.create_namespaced_deployment(ns, dep)
    assert d.metadata.generation == 1
    d = apps.patch_namespaced_deployment("web", ns, {"metadata": {"labels": {"x": "y"}}})
    assert d.metadata.generation == 1
    d = apps.patch_namespaced_deployment("web", ns, {"spec": {"replicas": 3}})
    assert d.metadata.generation == 2
    d = apps.patch_namespaced_deployment_status("web", ns, {"status": {"replicas": 3}})
    assert d.metadata.generation == 2 and d.status.replicas == 3


def test_errors_are_status_bodies(core, ns, client):
    core.create_namespaced_config_map(ns, cm("a"))
    status, body = raw(client, "POST", f"/api/v1/namespaces/{ns}/configmaps", cm("a"))
    assert (status, body["kind"], body["reason"], body["code"]) == (
        409,
        "Status",
        "AlreadyExists",
        409,
    )
    assert body["details"] == {"name": "a", "kind": "configmaps"}
    status, body = raw(client, "GET", f"/api/v1/namespaces/{ns}/configmaps/missing")
    assert (status, body["reason"], body["message"]) == (
        404,
        "NotFound",
        'configmaps "missing" not found',
    )


def test_stale_resource_version_conflicts(core, ns):
    a = core.create_namespaced_config_map(ns, cm("a"))
    core.patch_namespaced_config_map("a", ns, {"data": {"k": "new"}})
    a.data = {"k": "stale"}
    with pytest.raises(ApiException) as e:
        core.replace_namespaced_config_map("a", ns, a)
    assert e.value.status == 409 and '"reason":"Conflict"' in e.value.body.replace(" ", "")


@pytest.mark.parametrize(
    "meta",
    [
        {},
        {"name": "Bad_Name"},
        {"name": "ok", "labels": {"a": "bad value!"}},
        {"name": "ok", "labels": {"-bad-key": "v"}},
    ],
)
def test_invalid_objects_are_422(client, ns, meta):
    status, body = raw(client, "POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": meta})
    assert status == 422 and body["reason"] == "Invalid" and body["details"]["causes"]


def test_missing_namespace_is_404(core):
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map("no-such-ns", cm("a"))
    assert e.value.status == 404


def test_secret_string_data_is_encoded(core, ns):
    s = core.create_namespaced_secret(
        ns, {"metadata": {"name": "s"}, "stringData": {"pw": "hunter2"}}
    )
    assert s.type == "Opaque" and base64.b64decode(s.data["pw"]) == b"hunter2"


def test_service_gets_cluster_ip(core, ns):
    svc = core.create_namespaced_service(
        ns, {"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}}
    )
    assert svc.spec.cluster_ip and svc.spec.type == "ClusterIP"


def test_builtin_kinds_round_trip(client, ns):
    core = kubernetes.client.CoreV1Api(client)
    core.create_namespaced_service_account(ns, {"metadata": {"name": "sa"}})
    pod = core.create_namespaced_pod(
        ns, {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
    )
    assert pod.status.phase == "Pending"
    core.create_namespaced_event(
        ns,
        {
            "metadata": {"name": "e1"},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": ns},
            "reason": "R",
            "message": "m",
        },
    )
    ev = kubernetes.client.EventsV1Api(client).create_namespaced_event(
        ns,
        {
            "metadata": {"name": "e2"},
            "eventTime": "2024-01-02T03:04:05.123456Z",
            "reportingController": "x",
            "reportingInstance": "y",
            "action": "A",
            "reason": "R",
            "type": "Normal",
        },
    )
    assert ev.event_time.microsecond == 123456
    sts = kubernetes.client.AppsV1Api(client).create_namespaced_stateful_set(
        ns,
        {
            "metadata": {"name": "db"},
            "spec": {
                "serviceName": "db",
                "selector": {"matchLabels": {"a": "b"}},
                "template": {
                    "metadata": {"labels": {"a": "b"}},
                    "spec": {"containers": [{"name": "c", "image": "x"}]},
                },
            },
        },
    )
    assert sts.metadata.generation == 1
    assert [p.metadata.name for p in core.list_namespaced_pod(ns).items] == ["p"]


def test_dry_run_does_not_persist(client, core, ns):
    status, body = raw(
        client, "POST", f"/api/v1/namespaces/{ns}/configmaps", cm("dry"), query={"dryRun": "All"}
    )
    assert status == 201 and body["metadata"]["name"] == "dry"
    with pytest.raises(ApiException):
        core.read_namespaced_config_map("dry", ns)
