"""dryRun=All on every write verb: validation and defaulting run, nothing is stored, no
resourceVersion moves, no watch event is sent; the audit log tells dry runs apart."""

from __future__ import annotations

import json
import threading

import pytest
from kubernetes import watch
from kubernetes.client import ApiException

from .conftest import raw, wait_for

GROUP, VERSION, PLURAL = "dry.example.com", "v1", "gauges"
SCHEMA = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "properties": {
                "size": {"type": "integer", "default": 3},
                "mode": {"type": "string", "enum": ["fast", "slow"]},
            },
        },
        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    },
}


@pytest.fixture(scope="module")
def gauges(api):
    api.apply_crd(GROUP, VERSION, "Gauge", PLURAL, schema=SCHEMA)
    return api


def gauge(name: str, **spec) -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Gauge",
        "metadata": {"name": name},
        "spec": spec,
    }


def rv(api) -> int:
    return int(api.state()["resourceVersion"])


def test_create_update_patch_apply_delete_in_dry_run(api, gauges, custom, core, ns):
    real = custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, gauge("g1"))
    before = rv(api)
    api.clear_requests()
    events: list[dict] = []
    w = watch.Watch()
    stream = w.stream(
        custom.list_namespaced_custom_object,
        GROUP,
        VERSION,
        ns,
        PLURAL,
        resource_version=real["metadata"]["resourceVersion"],
        timeout_seconds=10,
    )

    def read() -> None:
        try:
            for e in stream:
                events.append(e)
                w.stop()  # one event is all this test needs
        except Exception:  # noqa: BLE001 - the stream closing under the reader
            pass

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    # create: defaulted by the schema, answered, not stored
    made = custom.create_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, gauge("g2", mode="fast"), dry_run="All"
    )
    assert made["spec"] == {"size": 3, "mode": "fast"} and made["metadata"]["uid"]
    with pytest.raises(ApiException) as missing:
        custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "g2")
    assert missing.value.status == 404
    # validation runs in a dry run too
    with pytest.raises(ApiException) as bad:
        custom.create_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, gauge("g3", mode="warp"), dry_run="All"
        )
    assert bad.value.status == 422
    # update (PUT), merge patch, JSON patch, server-side apply, status subresource
    body = dict(real, spec={"size": 5})
    put = custom.replace_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, "g1", body, dry_run="All"
    )
    assert put["spec"] == {"size": 5}
    assert put["metadata"]["resourceVersion"] == real["metadata"]["resourceVersion"]
    merged = custom.patch_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, "g1", {"spec": {"mode": "slow"}}, dry_run="All"
    )
    assert merged["spec"] == {"size": 3, "mode": "slow"}
    status, jp = raw(
        api.client(),
        "PATCH",
        f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/{PLURAL}/g1",
        [{"op": "replace", "path": "/spec/size", "value": 9}],
        query={"dryRun": "All"},
        ctype="application/json-patch+json",
    )
    assert status == 200 and jp["spec"]["size"] == 9
    status, applied = raw(
        api.client(),
        "PATCH",
        f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/{PLURAL}/g1",
        json.dumps(gauge("g1", size=7)),
        query={"dryRun": "All", "fieldManager": "dry", "force": "true"},
        ctype="application/apply-patch+yaml",
    )
    assert status == 200 and applied["spec"]["size"] == 7
    st = custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, ns, PLURAL, "g1", {"status": {"ok": True}}, dry_run="All"
    )
    assert st["status"] == {"ok": True}
    # delete: answered, the object stays
    custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "g1", dry_run="All")
    now = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "g1")
    assert now == real  # nothing stored: spec, status, resourceVersion, managedFields
    assert rv(api) == before  # no resourceVersion moved

    # the first event after the dry runs is the real write that follows them
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, "g1", {"spec": {"mode": "fast"}}
    )
    wait_for(lambda: events)
    assert [(e["type"], e["object"]["spec"]) for e in events[:1]] == [
        ("MODIFIED", {"size": 3, "mode": "fast"})
    ]
    writes = [r for r in api.requests() if r["verb"] in ("create", "update", "patch", "delete")]
    assert [r["dryRun"] for r in writes] == [True] * 8 + [False]


def test_built_in_types_default_in_a_dry_run(api, core, ns):
    secret = core.create_namespaced_secret(
        ns,
        {"metadata": {"name": "s"}, "stringData": {"token": "abc"}},
        dry_run="All",
    )
    assert secret.data == {"token": "YWJj"} and secret.type == "Opaque"
    core.create_namespaced_config_map(ns, {"metadata": {"name": "c"}, "data": {"k": "v"}})
    core.delete_namespaced_config_map("c", ns, dry_run="All")
    assert core.read_namespaced_config_map("c", ns).data == {"k": "v"}
    assert [s.metadata.name for s in core.list_namespaced_secret(ns).items] == []


def test_only_all_is_a_dry_run(api, ns):
    status, body = raw(
        api.client(),
        "POST",
        f"/api/v1/namespaces/{ns}/configmaps",
        {"metadata": {"name": "x"}},
        query={"dryRun": "Some"},
    )
    assert status == 422 and "Unsupported value" in body["message"]
    status, _ = raw(api.client(), "GET", f"/api/v1/namespaces/{ns}/configmaps/x")
    assert status == 404  # refused, not written


def test_kubectl_apply_dry_run_server(api, gauges, custom, kubectl, ns):
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, gauge("k1", size=1))
    before = rv(api)
    doc = json.dumps(dict(gauge("k1", size=2), metadata={"name": "k1", "namespace": ns}))
    out = kubectl("apply", "--dry-run=server", "-o", "json", "-f", "-", stdin=doc).stdout
    assert json.loads(out)["spec"] == {"size": 2}
    new = json.dumps(dict(gauge("k2"), metadata={"name": "k2", "namespace": ns}))
    out = kubectl("apply", "--dry-run=server", "-o", "json", "-f", "-", stdin=new).stdout
    assert json.loads(out)["spec"] == {"size": 3}  # defaulted by the server
    got = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "k1")
    assert got["spec"] == {"size": 1}
    with pytest.raises(ApiException):
        custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "k2")
    assert rv(api) == before
    bad = json.dumps(dict(gauge("k3", mode="warp"), metadata={"name": "k3", "namespace": ns}))
    refused = kubectl("apply", "--dry-run=server", "-f", "-", stdin=bad, check=False)
    assert refused.returncode != 0 and "Unsupported value" in refused.stderr
