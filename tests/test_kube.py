"""operatord.kube.Kube against the embedded API server, over real HTTP."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest
import yaml

from operatord.apiserver import write_kubeconfig
from operatord.kube import (
    ApiError,
    ClientSettings,
    Connection,
    Kube,
    Resource,
    is_conflict,
    is_not_found,
)
from operatord.testing import ApiServer


class Recorder:
    """`on_request` observer: every finished attempt as (verb, code)."""

    def __init__(self):
        self.calls: list[tuple[str, int]] = []
        self._lock = threading.Lock()

    def __call__(self, verb: str, code: int, seconds: float) -> None:
        assert seconds >= 0
        with self._lock:
            self.calls.append((verb, code))

    def codes(self, verb: str) -> list[int]:
        with self._lock:
            return [c for v, c in self.calls if v == verb]


@pytest.fixture(scope="module")
def api():
    with ApiServer(bookmark_interval=0.5, history_size=200) as server:
        server.apply_crd("example.com", "v1", "Widget")
        server.apply_crd("example.com", "v1", "Gadget", namespaced=False)
        yield server


@pytest.fixture
def rec():
    return Recorder()


@pytest.fixture
def kube(api, rec):
    k = Kube(
        ClientSettings(kubeconfig=api.kubeconfig),
        on_request=rec,
        max_attempts=8,
        backoff_initial=0.01,
        backoff_max=0.1,
    )
    yield k
    api.faults.clear()
    k.close()


@pytest.fixture
def ns(kube):
    name = f"t-{uuid.uuid4().hex[:8]}"
    kube.create(kube.resource("v1", "Namespace"), {"metadata": {"name": name}})
    return name


def cm(name: str, **data) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


# ---- discovery ------------------------------------------------------------------------------


def test_discovery_resolves_core_grouped_and_crd_types_once(kube, rec):
    assert kube.resource("v1", "ConfigMap") == Resource("v1", "ConfigMap", "configmaps", True)
    assert kube.resource("v1", "Namespace") == Resource("v1", "Namespace", "namespaces", False)
    dep = kube.resource("apps/v1", "Deployment")
    assert (dep.plural, dep.namespaced, dep.group, dep.version) == (
        "deployments",
        True,
        "apps",
        "v1",
    )
    lease = kube.resource("coordination.k8s.io/v1", "Lease")
    assert lease.key == "leases.coordination.k8s.io" and lease.namespaced
    widget = kube.resource("example.com/v1", "Widget")
    assert (widget.plural, widget.namespaced) == ("widgets", True)
    gadget = kube.resource("example.com/v1", "Gadget")
    assert (gadget.plural, gadget.namespaced) == ("gadgets", False)
    assert (
        widget.path("ns1", "w", "status") == "/apis/example.com/v1/namespaces/ns1/widgets/w/status"
    )
    assert gadget.path("ignored", "g") == "/apis/example.com/v1/gadgets/g"
    n = len(rec.codes("discovery"))
    assert n == 4  # one per group-version: v1, apps/v1, coordination.k8s.io/v1, example.com/v1
    # Cached: asking again costs no request.
    for _ in range(3):
        kube.resource("v1", "ConfigMap")
        kube.resource("example.com/v1", "Widget")
    assert len(rec.codes("discovery")) == n


def test_unserved_type_is_404(kube):
    with pytest.raises(ApiError) as exc:
        kube.resource("v1", "Sprocket")  # group-version served, kind not
    assert is_not_found(exc.value)
    with pytest.raises(ApiError) as exc:
        kube.resource("nothere.example.com/v1", "Sprocket")  # group-version not served
    assert exc.value.status == 404


# ---- verbs ----------------------------------------------------------------------------------


def test_create_get_replace_and_list_pages_carry_api_version_and_kind(kube, ns, rec):
    res = kube.resource("v1", "ConfigMap")
    created = kube.create(res, cm("a", k="1"), ns)
    assert created["metadata"]["uid"] and created["data"] == {"k": "1"}
    got = kube.get(res, "a", ns)
    assert got["metadata"]["uid"] == created["metadata"]["uid"]
    got["data"] = {"k": "2"}
    replaced = kube.replace(res, got)
    assert replaced["data"] == {"k": "2"}
    # A stale resourceVersion is a 409 Conflict and is not retried.
    got["data"] = {"k": "3"}
    before = len(rec.codes("update"))
    with pytest.raises(ApiError) as exc:
        kube.replace(res, got)
    assert is_conflict(exc.value) and exc.value.reason == "Conflict"
    assert rec.codes("update")[before:] == [409]

    for i in range(6):
        kube.create(res, cm(f"p{i}", i=str(i)), ns)
    rec.calls.clear()
    items, rv = kube.list(res, ns, page_size=2)
    names = sorted(i["metadata"]["name"] for i in items)
    assert names == ["a", "p0", "p1", "p2", "p3", "p4", "p5"]
    assert int(rv) > 0
    assert rec.codes("list") == [200, 200, 200, 200]  # 7 items in pages of 2
    assert all(i["apiVersion"] == "v1" and i["kind"] == "ConfigMap" for i in items)
    selected, _ = kube.list(res, ns, field_selector="metadata.name=p3")
    assert [i["metadata"]["name"] for i in selected] == ["p3"]


def test_patch_merge_json_and_apply(kube, ns):
    res = kube.resource("v1", "ConfigMap")
    kube.create(res, cm("p", a="1"), ns)
    out = kube.patch(res, "p", {"data": {"b": "2"}}, ns)
    assert out["data"] == {"a": "1", "b": "2"}
    out = kube.patch(
        res, "p", [{"op": "replace", "path": "/data/a", "value": "9"}], ns, patch_type="json"
    )
    assert out["data"] == {"a": "9", "b": "2"}
    applied = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "s", "namespace": ns},
        "data": {"x": "1"},
    }
    out = kube.patch(res, "s", applied, ns, patch_type="apply", field_manager="mgr-a")
    assert out["data"] == {"x": "1"}
    assert [m["manager"] for m in out["metadata"]["managedFields"]] == ["mgr-a"]
    # Another manager changing an owned field conflicts unless forced.
    other = {**applied, "data": {"x": "2"}}
    with pytest.raises(ApiError) as exc:
        kube.patch(res, "s", other, ns, patch_type="apply", field_manager="mgr-b")
    assert exc.value.status == 409
    out = kube.patch(res, "s", other, ns, patch_type="apply", field_manager="mgr-b", force=True)
    assert out["data"] == {"x": "2"}
    # Patching a custom resource's status subresource.
    w = kube.resource("example.com/v1", "Widget")
    kube.create(
        w, {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}, ns
    )
    out = kube.patch(w, "w", {"status": {"ready": True}}, ns, subresource="status")
    assert out["status"] == {"ready": True}


def test_delete_with_uid_precondition(kube, ns):
    res = kube.resource("v1", "ConfigMap")
    first = kube.create(res, cm("d"), ns)
    kube.delete(res, "d", ns, uid=first["metadata"]["uid"])
    with pytest.raises(ApiError) as exc:
        kube.get(res, "d", ns)
    assert is_not_found(exc.value)
    second = kube.create(res, cm("d"), ns)  # same name, new object
    with pytest.raises(ApiError) as exc:
        kube.delete(res, "d", ns, uid=first["metadata"]["uid"])
    assert exc.value.status == 409
    assert kube.get(res, "d", ns)["metadata"]["uid"] == second["metadata"]["uid"]
    kube.delete(res, "d", ns, resource_version=second["metadata"]["resourceVersion"])
    with pytest.raises(ApiError) as exc:
        kube.delete(res, "d", ns)
    assert exc.value.status == 404


# ---- retries --------------------------------------------------------------------------------


def test_500s_are_retried_and_observed(api, kube, ns, rec):
    res = kube.resource("v1", "ConfigMap")
    # Seeded, so the same requests fail in every run: some calls need several attempts, none
    # needs more than the client's eight.
    api.faults.add_error(
        code=500, fraction=0.4, verbs=["create", "get"], resources=["configmaps"], seed=7
    )
    rec.calls.clear()
    for i in range(15):
        created = kube.create(res, cm(f"r{i}"), ns)
        assert kube.get(res, f"r{i}", ns)["metadata"]["uid"] == created["metadata"]["uid"]
    creates, gets = rec.codes("create"), rec.codes("get")
    assert creates.count(201) == 15 and gets.count(200) == 15
    assert creates.count(500) + gets.count(500) >= 10
    assert set(creates) <= {201, 500} and set(gets) <= {200, 500}


def test_429_honours_retry_after(api, kube, ns, rec):
    res = kube.resource("v1", "ConfigMap")
    api.faults.add_error(code=429, verbs=["list"], resources=["configmaps"], retry_after=1, count=1)
    start = time.monotonic()
    items, _ = kube.list(res, ns)
    elapsed = time.monotonic() - start
    assert items == []
    assert rec.codes("list") == [429, 200]
    # Our backoff would have retried within 0.1 s; the server asked for 1 s.
    assert elapsed >= 0.9


def test_retries_give_up_after_max_attempts(api, rec, ns):
    k = Kube(
        ClientSettings(kubeconfig=api.kubeconfig),
        on_request=rec,
        max_attempts=3,
        backoff_initial=0.01,
        backoff_max=0.02,
    )
    res = k.resource("v1", "ConfigMap")
    api.faults.add_error(code=503, verbs=["get"], resources=["configmaps"])
    try:
        with pytest.raises(ApiError) as exc:
            k.get(res, "whatever", ns)
    finally:
        api.faults.clear()
        k.close()
    assert exc.value.status == 503
    assert rec.codes("get") == [503, 503, 503]


def test_permanent_errors_are_not_retried(kube, ns, rec):
    res = kube.resource("v1", "ConfigMap")
    rec.calls.clear()
    with pytest.raises(ApiError) as exc:
        kube.get(res, "missing", ns)
    assert exc.value.status == 404 and exc.value.reason == "NotFound"
    assert exc.value.body.get("kind") == "Status"
    with pytest.raises(ApiError) as exc:
        kube.create(res, cm("Not_A_Valid_Name"), ns)
    assert exc.value.status == 422 and exc.value.reason == "Invalid"
    kube.create(res, cm("dup"), ns)
    with pytest.raises(ApiError) as exc:
        kube.create(res, cm("dup"), ns)
    assert exc.value.reason == "AlreadyExists"
    assert rec.codes("get") == [404]
    assert rec.codes("create") == [422, 201, 409]


def test_connection_refused_is_api_error_status_0(tmp_path, rec):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = write_kubeconfig(str(tmp_path / "kubeconfig"), f"http://127.0.0.1:{port}")
    k = Kube(
        ClientSettings(kubeconfig=path),
        on_request=rec,
        max_attempts=3,
        backoff_initial=0.01,
        backoff_max=0.02,
    )
    res = Resource("v1", "ConfigMap", "configmaps", True)
    start = time.monotonic()
    with pytest.raises(ApiError) as exc:
        k.get(res, "x", "default")
    assert exc.value.status == 0
    assert rec.codes("get") == [0, 0, 0]
    assert time.monotonic() - start < 5
    with pytest.raises(ApiError) as exc:
        next(k.watch(res, "default"))
    assert exc.value.status == 0
    k.close()


# ---- watch ----------------------------------------------------------------------------------


def test_watch_yields_events_from_a_resource_version(kube, ns):
    res = kube.resource("v1", "ConfigMap")
    _, rv = kube.list(res, ns)
    kube.create(res, cm("w1"), ns)
    kube.patch(res, "w1", {"data": {"a": "1"}}, ns)
    kube.delete(res, "w1", ns)
    events = []
    for event in kube.watch(res, ns, resource_version=rv, timeout_seconds=5):
        if event["type"] == "BOOKMARK":
            continue
        events.append(event)
        if len(events) == 3:
            break
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
    assert all(e["object"]["metadata"]["name"] == "w1" for e in events)
    assert all(e["object"]["kind"] == "ConfigMap" for e in events)


def test_watch_ends_cleanly_at_timeout_with_a_bookmark(kube, ns):
    res = kube.resource("v1", "ConfigMap")
    _, rv = kube.list(res, ns)
    start = time.monotonic()
    events = list(kube.watch(res, ns, resource_version=rv, timeout_seconds=1))
    assert time.monotonic() - start < 10
    assert events and events[-1]["type"] == "BOOKMARK"
    assert int(events[-1]["object"]["metadata"]["resourceVersion"]) >= int(rv)


def test_watch_from_a_compacted_resource_version_yields_410(api, kube, ns):
    res = kube.resource("v1", "ConfigMap")
    _, rv = kube.list(res, ns)
    kube.create(res, cm("c1"), ns)
    api.faults.compact()
    events = list(kube.watch(res, ns, resource_version=rv, timeout_seconds=5))
    assert events[0]["type"] == "ERROR"
    assert events[0]["object"]["code"] == 410
    assert events[0]["object"]["reason"] == "Expired"


def test_watch_open_failure_raises(api, kube, ns, rec):
    res = kube.resource("v1", "ConfigMap")
    api.faults.add_error(code=500, verbs=["watch"], resources=["configmaps"], count=1)
    with pytest.raises(ApiError) as exc:
        next(kube.watch(res, ns, timeout_seconds=1))
    assert exc.value.status == 500
    assert rec.codes("watch") == [500]


def test_dropped_watch_raises_connection_error(api, kube, ns):
    res = kube.resource("v1", "ConfigMap")
    kube.create(res, cm("x"), ns)
    stream = kube.watch(res, ns, timeout_seconds=30)
    first = next(stream)  # synthetic ADDED: the stream is open
    assert first["type"] == "ADDED"
    assert api.faults.drop_watches() >= 1
    with pytest.raises(ApiError) as exc:
        for _ in stream:
            pass
    assert exc.value.status == 0


def test_bearer_token_from_kubeconfig_is_sent_and_cached(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "s3cret-token"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    kube = Kube(ClientSettings(kubeconfig=str(kubeconfig)))
    first = kube._auth_headers()
    assert first == {"authorization": "Bearer s3cret-token"}
    assert kube._auth_headers() is first  # cached, not recomputed per request


def test_a_resolved_connection_reaches_the_same_server_without_the_kubernetes_package(api, kube):
    conn = kube.connection()
    assert conn.host == api.url and conn.headers.get("authorization", "").startswith("Bearer ")
    assert Connection.from_dict(conn.to_dict()) == conn
    lean = Kube(Connection.from_dict(conn.to_dict()))
    assert lean.api_client is None
    res = lean.resource("v1", "ConfigMap")
    name = f"lean-{uuid.uuid4().hex[:6]}"
    created = lean.create(res, {**cm(name, a="1"), "metadata": {"name": name}}, "default")
    assert lean.get(res, name, "default")["metadata"]["uid"] == created["metadata"]["uid"]
    lean.set_auth({"authorization": "Bearer rotated"})
    assert lean.connection().headers == {"authorization": "Bearer rotated"}
    lean.close()


def test_worker_processes_do_not_import_the_kubernetes_package():
    # Nor what only the leader needs: the Prometheus registry, urllib3 (watches, proxies).
    heavy = ("kubernetes", "jsonschema", "prometheus_client", "urllib3")
    code = (
        "import sys, operatord.worker, operatord.protocol, operatord.supervisor; "
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r}); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
