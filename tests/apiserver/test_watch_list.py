"""Streaming lists (WatchList, KEP-3157) and PartialObjectMetadata content negotiation, through
the official client and kubectl, with the fault switches of servers without them."""

from __future__ import annotations

import json
import threading

import pytest
from kubernetes import watch
from kubernetes.client import ApiException

from .conftest import raw_http, wait_for

END = "k8s.io/initial-events-end"
PARTIAL = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
PARTIAL_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
STREAM = {
    "send_initial_events": True,
    "resource_version_match": "NotOlderThan",
    "allow_watch_bookmarks": True,
}


def make(core, ns: str, name: str, **data: str) -> dict:
    body = {"metadata": {"name": name, "labels": {"app": "x"}}, "data": data or {"k": "v"}}
    return core.create_namespaced_config_map(ns, body).to_dict()


def stream_until_end(core, ns: str, **kw) -> list[dict]:
    """The events of a streaming list up to and including the end-of-initial-events bookmark."""
    seen = []
    w = watch.Watch()
    for ev in w.stream(core.list_namespaced_config_map, ns, timeout_seconds=10, **STREAM, **kw):
        seen.append({"type": ev["type"], "object": ev["raw_object"]})
        annotations = ev["raw_object"]["metadata"].get("annotations") or {}
        if ev["type"] == "BOOKMARK" and annotations.get(END) == "true":
            w.stop()
    return seen


def request(client, path: str, accept: str, query=None):
    """One GET through the official client with this Accept header: (status, body)."""
    req = client.param_serialize(
        "GET",
        path,
        query_params=list((query or {}).items()),
        header_params={"Accept": accept},
        auth_settings=["BearerToken"],
    )
    try:
        resp = client.call_api(*req)
    except ApiException as e:  # pragma: no cover - call_api does not raise on status
        return e.status, json.loads(e.body)
    data = resp.read()
    return resp.status, data


def decoded(body: bytes | dict) -> dict:
    """A JSON body `raw_http` left undecoded (it does not decode answers to watch requests)."""
    return body if isinstance(body, dict) else json.loads(body)


def lines(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.decode().splitlines() if line.strip()]


# ---- streaming lists ----------------------------------------------------------------------


def test_streaming_list_sends_the_state_then_the_annotated_bookmark(core, ns):
    make(core, ns, "a")
    make(core, ns, "b")
    state_rv = core.list_namespaced_config_map(ns).metadata.resource_version
    events = stream_until_end(core, ns)
    assert [(e["type"], e["object"]["metadata"].get("name")) for e in events] == [
        ("ADDED", "a"),
        ("ADDED", "b"),
        ("BOOKMARK", None),
    ]
    bookmark = events[-1]["object"]
    assert bookmark["kind"] == "ConfigMap" and bookmark["apiVersion"] == "v1"
    assert bookmark["metadata"] == {
        "resourceVersion": state_rv,
        "annotations": {END: "true"},
    }


def test_streaming_list_continues_as_a_watch(core, ns):
    make(core, ns, "a")
    got: list[tuple[str, str]] = []
    done = threading.Event()

    def run():
        for ev in watch.Watch().stream(
            core.list_namespaced_config_map, ns, timeout_seconds=3, **STREAM
        ):
            meta = ev["raw_object"]["metadata"]
            label = meta.get("name") or ("END" if (meta.get("annotations") or {}).get(END) else "")
            if label:
                got.append((ev["type"], label))
            if len(got) == 3:
                break
        done.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    wait_for(lambda: ("BOOKMARK", "END") in got)
    make(core, ns, "later")
    assert done.wait(10)
    assert got == [("ADDED", "a"), ("BOOKMARK", "END"), ("ADDED", "later")]


def test_streaming_list_is_the_current_state_whatever_resource_version(core, ns):
    old_rv = core.list_namespaced_config_map(ns).metadata.resource_version
    make(core, ns, "a")
    core.patch_namespaced_config_map("a", ns, {"data": {"k": "changed"}})
    events = stream_until_end(core, ns, resource_version=old_rv)
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]  # not the history since old_rv
    assert events[0]["object"]["data"] == {"k": "changed"}


def test_streaming_list_honours_selectors(core, ns):
    make(core, ns, "a")
    core.create_namespaced_config_map(ns, {"metadata": {"name": "other"}})
    events = stream_until_end(core, ns, label_selector="app=x")
    assert [e["object"]["metadata"].get("name") for e in events] == ["a", None]


def test_without_bookmarks_there_is_no_end_marker(api, ns, core):
    make(core, ns, "a")
    path = (
        f"/api/v1/namespaces/{ns}/configmaps?watch=1&sendInitialEvents=true"
        "&resourceVersionMatch=NotOlderThan&timeoutSeconds=1"
    )
    status, _, body = raw_http(api, "GET", path)
    assert status == 200
    assert [e["type"] for e in lines(body)] == ["ADDED"]


def test_send_initial_events_false_starts_at_the_most_recent_version(api, core, ns):
    make(core, ns, "a")
    got: list[str] = []

    def run():
        for ev in watch.Watch().stream(
            core.list_namespaced_config_map,
            ns,
            timeout_seconds=2,
            send_initial_events=False,
            resource_version_match="NotOlderThan",
        ):
            got.append(f"{ev['type']} {ev['raw_object']['metadata']['name']}")
            break

    t = threading.Thread(target=run, daemon=True)
    t.start()
    wait_for(lambda: any(r["verb"] == "watch" and r["namespace"] == ns for r in api.requests()))
    make(core, ns, "b")
    t.join(10)
    assert got == ["ADDED b"]


def test_a_big_state_streams_completely_and_in_order(core, ns):
    names = [f"c{i:03d}" for i in range(200)]
    for n in names:
        make(core, ns, n, blob="x" * 2000)  # ~400 KB of events: more than one HTTP chunk
    events = stream_until_end(core, ns)
    assert [e["object"]["metadata"].get("name") for e in events] == [*names, None]


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        (
            "watch=1&sendInitialEvents=true&allowWatchBookmarks=true",
            "resourceVersionMatch",
            "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
        ),
        (
            "watch=1&resourceVersionMatch=NotOlderThan",
            "resourceVersionMatch",
            "Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents "
            "is provided",
        ),
        (
            "sendInitialEvents=true",
            "sendInitialEvents",
            "Forbidden: sendInitialEvents is forbidden for list",
        ),
        (
            "resourceVersionMatch=NotOlderThan",
            "resourceVersionMatch",
            "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
        ),
        (
            "resourceVersion=0&resourceVersionMatch=Exact",
            "resourceVersionMatch",
            'Forbidden: resourceVersionMatch "exact" is forbidden for resourceVersion "0"',
        ),
    ],
)
def test_invalid_list_options_are_422_like_the_real_server(api, ns, query, field, message):
    status, _, body = raw_http(api, "GET", f"/api/v1/namespaces/{ns}/configmaps?{query}")
    assert status == 422
    body = decoded(body)
    assert body["reason"] == "Invalid" and body["code"] == 422
    assert body["message"] == f'ListOptions.meta.k8s.io "" is invalid: {field}: {message}'
    assert body["details"] == {
        "group": "meta.k8s.io",
        "kind": "ListOptions",
        "causes": [{"reason": "FieldValueForbidden", "message": message, "field": field}],
    }


def test_several_violations_are_one_error(api, ns):
    path = f"/api/v1/namespaces/{ns}/configmaps?watch=1&resourceVersionMatch=Exact"
    status, _, body = raw_http(api, "GET", path)
    assert status == 422
    body = decoded(body)
    causes = [(c["reason"], c["field"]) for c in body["details"]["causes"]]
    assert causes == [
        ("FieldValueForbidden", "resourceVersionMatch"),
        ("FieldValueNotSupported", "resourceVersionMatch"),
    ]
    assert body["message"].startswith('ListOptions.meta.k8s.io "" is invalid: [')
    assert 'Unsupported value: "Exact": supported values: "NotOlderThan"' in body["message"]


def test_the_audit_log_records_the_request_uri(api, core, ns):
    stream_until_end(core, ns)
    [entry] = [r for r in api.requests() if r["verb"] == "watch" and r["namespace"] == ns]
    assert entry["code"] == 200
    assert "sendInitialEvents=true" in entry["requestURI"]
    assert "resourceVersionMatch=NotOlderThan" in entry["requestURI"]
    assert entry["requestURI"].startswith(f"/api/v1/namespaces/{ns}/configmaps?")


def test_a_refused_watch_is_recorded_once_with_its_code(api, ns):
    path = f"/api/v1/namespaces/{ns}/configmaps?watch=1&sendInitialEvents=true"
    raw_http(api, "GET", path)
    recorded = [r for r in api.requests() if r["verb"] == "watch" and r["namespace"] == ns]
    assert [r["code"] for r in recorded] == [422]


# ---- servers without WatchList ----------------------------------------------------------


def test_a_server_with_the_feature_gate_off_refuses_streaming_lists(api, core, ns):
    api.faults.without_watch_list("reject")
    with pytest.raises(ApiException) as e:
        stream_until_end(core, ns)
    assert e.value.status == 422
    body = json.loads(e.value.body)
    assert body["details"]["causes"] == [
        {
            "reason": "FieldValueForbidden",
            "message": "Forbidden: sendInitialEvents is forbidden for watch unless the WatchList "
            "feature gate is enabled",
            "field": "sendInitialEvents",
        }
    ]
    # a plain watch still works
    assert list(watch.Watch().stream(core.list_namespaced_config_map, ns, timeout_seconds=1)) == []


def test_a_server_that_ignores_send_initial_events_sends_a_plain_watch(api, core, ns):
    make(core, ns, "a")
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    api.faults.without_watch_list("ignore")
    assert api.faults.get()["withoutWatchList"] == "ignore"
    query = "watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan"
    query += "&allowWatchBookmarks=true&timeoutSeconds=1"
    base = f"/api/v1/namespaces/{ns}/configmaps?{query}"
    # from a resourceVersion: the changes after it only, and bookmarks without the annotation
    status, _, body = raw_http(api, "GET", f"{base}&resourceVersion={rv}")
    assert status == 200
    events = lines(body)
    assert {e["type"] for e in events} == {"BOOKMARK"}
    assert all("annotations" not in e["object"]["metadata"] for e in events)
    # without one: the legacy start (the state as ADDED events), still no end marker
    _, _, body = raw_http(api, "GET", base)
    events = lines(body)
    assert [e["type"] for e in events][0] == "ADDED"
    assert all("annotations" not in e["object"]["metadata"] for e in events[1:])
    api.faults.without_watch_list(None)
    assert stream_until_end(core, ns)[-1]["type"] == "BOOKMARK"


def test_the_fault_rejects_unknown_modes(api):
    status, _, body = raw_http(api, "PUT", "/_operatord/faults", {"withoutWatchList": "sometimes"})
    assert status == 400 and "withoutWatchList" in body["error"]


# ---- PartialObjectMetadata ----------------------------------------------------------------


def test_get_as_partial_object_metadata(client, core, ns):
    made = make(core, ns, "a", secret="do-not-show")
    status, data = request(client, f"/api/v1/namespaces/{ns}/configmaps/a", PARTIAL)
    assert status == 200
    obj = json.loads(data)
    assert list(obj) == ["kind", "apiVersion", "metadata"]
    assert obj["kind"] == "PartialObjectMetadata" and obj["apiVersion"] == "meta.k8s.io/v1"
    assert obj["metadata"]["uid"] == made["metadata"]["uid"]
    assert obj["metadata"]["labels"] == {"app": "x"}
    assert b"do-not-show" not in data


def test_list_as_partial_object_metadata_list_with_paging(client, core, ns):
    for n in ("a", "b", "c"):
        make(core, ns, n, secret="do-not-show")
    path = f"/api/v1/namespaces/{ns}/configmaps"
    status, data = request(client, path, PARTIAL_LIST + ",application/json", {"limit": 2})
    assert status == 200 and b"do-not-show" not in data
    page = json.loads(data)
    assert page["kind"] == "PartialObjectMetadataList" and page["apiVersion"] == "meta.k8s.io/v1"
    assert page["metadata"]["remainingItemCount"] == 1 and page["metadata"]["continue"]
    assert [i["metadata"]["name"] for i in page["items"]] == ["a", "b"]
    assert {i["kind"] for i in page["items"]} == {"PartialObjectMetadata"}
    query = {"limit": 2, "continue": page["metadata"]["continue"]}
    _, data = request(client, path, PARTIAL_LIST, query)
    assert [i["metadata"]["name"] for i in json.loads(data)["items"]] == ["c"]


def test_v1beta1_is_served_too(client, core, ns):
    make(core, ns, "a")
    accept = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1beta1"
    _, data = request(client, f"/api/v1/namespaces/{ns}/configmaps", accept)
    page = json.loads(data)
    assert page["apiVersion"] == "meta.k8s.io/v1beta1"
    assert page["items"][0]["apiVersion"] == "meta.k8s.io/v1beta1"


def test_custom_objects_as_partial_object_metadata(client, custom, widgets, ns):
    custom.create_namespaced_custom_object(
        "example.com",
        "v1",
        ns,
        "widgets",
        {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {}},
    )
    path = f"/apis/example.com/v1/namespaces/{ns}/widgets"
    _, data = request(client, path, PARTIAL_LIST)
    assert [i["metadata"]["name"] for i in json.loads(data)["items"]] == ["w"]
    status, data = request(client, path, PARTIAL + ",application/json")
    assert status == 406
    assert json.loads(data)["message"] == (
        "you requested PartialObjectMetadata, but the requested object is a list "
        "(*unstructured.UnstructuredList)"
    )


def test_the_transform_must_fit_the_answer(client, core, ns):
    make(core, ns, "a")
    # chosen before the server knows the answer is a list: the fallback does not rescue it
    status, data = request(client, f"/api/v1/namespaces/{ns}/configmaps", PARTIAL)
    body = json.loads(data)
    assert status == 406 and body["reason"] == "NotAcceptable"
    assert body["message"] == (
        "you requested PartialObjectMetadata, but the requested object is a list "
        "(*core.ConfigMapList)"
    )
    status, data = request(client, f"/api/v1/namespaces/{ns}/configmaps/a", PARTIAL_LIST)
    assert status == 406
    assert "requested object is not a list (*core.ConfigMap)" in json.loads(data)["message"]
    status, data = request(client, f"/api/v1/namespaces/{ns}/configmaps/missing", PARTIAL_LIST)
    assert status == 404


def test_watch_as_partial_object_metadata(client, core, ns):
    make(core, ns, "a", secret="do-not-show")
    query = {
        "watch": "true",
        "sendInitialEvents": "true",
        "resourceVersionMatch": "NotOlderThan",
        "allowWatchBookmarks": "true",
        "timeoutSeconds": "1",
    }
    status, data = request(client, f"/api/v1/namespaces/{ns}/configmaps", PARTIAL, query)
    assert status == 200 and b"do-not-show" not in data
    events = lines(data)
    assert {e["object"]["kind"] for e in events} == {"PartialObjectMetadata"}
    assert events[0]["type"] == "ADDED" and events[0]["object"]["metadata"]["name"] == "a"
    assert events[1]["type"] == "BOOKMARK"
    assert events[1]["object"]["metadata"]["annotations"] == {END: "true"}


def test_a_watch_as_a_list_ends_at_its_first_event(client, core, ns):
    make(core, ns, "a")
    query = {"watch": "true", "timeoutSeconds": "5"}
    status, data = request(client, f"/api/v1/namespaces/{ns}/configmaps", PARTIAL_LIST, query)
    assert status == 200 and data == b""


def test_accept_ranges_are_tried_in_q_order(client, core, ns):
    make(core, ns, "a")
    path = f"/api/v1/namespaces/{ns}/configmaps/a"
    _, data = request(client, path, f"application/json;q=0.5,{PARTIAL}")
    assert json.loads(data)["kind"] == "PartialObjectMetadata"
    _, data = request(client, path, f"application/vnd.kubernetes.protobuf,{PARTIAL}")
    assert json.loads(data)["kind"] == "PartialObjectMetadata"
    status, data = request(client, path, "application/vnd.kubernetes.protobuf")
    assert status == 406
    assert json.loads(data)["message"].startswith("only the following media types are accepted")
    _, data = request(client, path, "*/*")
    assert json.loads(data)["kind"] == "ConfigMap"
    _, data = request(client, path, "application/json;as=Widget;g=example.com;v=v1,*/*")
    assert json.loads(data)["kind"] == "ConfigMap"


def test_a_server_without_partial_object_metadata_falls_back(api, client, core, ns):
    make(core, ns, "a", secret="shown")
    api.faults.without_partial_metadata()
    path = f"/api/v1/namespaces/{ns}/configmaps"
    status, data = request(client, path, PARTIAL_LIST + ",application/json")
    assert status == 200
    assert json.loads(data)["kind"] == "ConfigMapList" and b"shown" in data
    status, data = request(client, path + "/a", PARTIAL + ",application/json")
    assert json.loads(data)["kind"] == "ConfigMap"
    status, data = request(client, path + "/a", PARTIAL)
    assert status == 406 and json.loads(data)["reason"] == "NotAcceptable"
    query = {"watch": "true", "timeoutSeconds": "1"}
    _, data = request(client, path, PARTIAL + ",application/json", query)
    assert lines(data)[0]["object"]["kind"] == "ConfigMap"
    api.faults.without_partial_metadata(False)
    _, data = request(client, path + "/a", PARTIAL)
    assert json.loads(data)["kind"] == "PartialObjectMetadata"


# ---- kubectl ------------------------------------------------------------------------------


def test_kubectl_raw_streaming_list(kubectl, core, ns):
    make(core, ns, "a")
    query = "watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan"
    query += "&allowWatchBookmarks=true&timeoutSeconds=1"
    out = kubectl("get", "--raw", f"/api/v1/namespaces/{ns}/configmaps?{query}").stdout
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert events[0]["type"] == "ADDED" and events[0]["object"]["metadata"]["name"] == "a"
    assert events[1]["type"] == "BOOKMARK"
    assert events[1]["object"]["metadata"]["annotations"] == {END: "true"}
    bad = kubectl(
        "get",
        "--raw",
        f"/api/v1/namespaces/{ns}/configmaps?watch=1&sendInitialEvents=true",
        check=False,
    )
    assert bad.returncode != 0
    assert "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan" in bad.stderr
