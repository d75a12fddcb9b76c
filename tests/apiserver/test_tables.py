"""The Table format kubectl asks for: a CRD's additionalPrinterColumns and the built-in types'
usual columns, through kubectl and plain HTTP."""

import json

import pytest

from operatord.apiserver.tables import human_duration

from .conftest import raw_http

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"

COLUMNS = [
    {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
    },
    {"name": "Ratio", "type": "number", "jsonPath": ".spec.ratio", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


@pytest.fixture(scope="module")
def sprockets(api):
    crd = api.apply_crd("tables.example.com", "v1", "Sprocket")
    crd["spec"]["versions"][0]["additionalPrinterColumns"] = COLUMNS
    status, _, body = raw_http(
        api,
        "PUT",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/sprockets.tables.example.com",
        crd,
    )
    assert status == 200, body
    return crd


def sprocket(api, ns, name, **spec):
    body = {
        "apiVersion": "tables.example.com/v1",
        "kind": "Sprocket",
        "metadata": {"name": name, "labels": {"app": "x"}},
        "spec": spec,
    }
    status, _, out = raw_http(
        api, "POST", f"/apis/tables.example.com/v1/namespaces/{ns}/sprockets", body
    )
    assert status == 201, out
    return out


def test_kubectl_get_prints_the_printer_columns(kubectl, api, sprockets, ns):
    sprocket(api, ns, "s1", size=3, ratio=0.5)
    path = f"/apis/tables.example.com/v1/namespaces/{ns}/sprockets/s1/status"
    status, _, _ = raw_http(
        api,
        "PATCH",
        path,
        {"status": {"conditions": [{"type": "Ready", "status": "True"}]}},
        "application/merge-patch+json",
    )
    assert status == 200
    sprocket(api, ns, "s2")
    out = kubectl("get", "sprockets", "-n", ns).stdout.splitlines()
    assert out[0].split() == ["NAME", "SIZE", "READY", "AGE"]
    assert out[1].split()[:3] == ["s1", "3", "True"]
    # the server sends null cells (as the real one does); kubectl leaves them blank
    assert out[2].split()[0] == "s2" and len(out[2].split()) == 2
    wide = kubectl("get", "sprockets", "-n", ns, "-o", "wide").stdout.splitlines()
    assert wide[0].split() == ["NAME", "SIZE", "READY", "RATIO", "AGE"]
    assert wide[1].split()[:4] == ["s1", "3", "True", "0.5"]


def test_the_table_body(api, sprockets, ns):
    sprocket(api, ns, "s1", size=2)
    path = f"/apis/tables.example.com/v1/namespaces/{ns}/sprockets"
    status, _, t = raw_http(api, "GET", path, headers={"Accept": TABLE})
    assert status == 200
    assert t["kind"] == "Table" and t["apiVersion"] == "meta.k8s.io/v1"
    assert t["metadata"]["resourceVersion"]
    names = [c["name"] for c in t["columnDefinitions"]]
    assert names == ["Name", "Size", "Ready", "Ratio", "Age"]
    assert t["columnDefinitions"][0]["format"] == "name"
    assert t["columnDefinitions"][3]["priority"] == 1
    [row] = t["rows"]
    assert row["cells"][:4] == ["s1", 2, None, None]
    assert row["cells"][4].endswith("s")  # a human duration, e.g. "0s"
    assert row["object"]["kind"] == "PartialObjectMetadata"
    assert row["object"]["metadata"]["labels"] == {"app": "x"}
    _, _, t = raw_http(api, "GET", path + "?includeObject=Object", headers={"Accept": TABLE})
    assert t["rows"][0]["object"]["spec"] == {"size": 2}
    _, _, t = raw_http(api, "GET", path + "/s1?includeObject=None", headers={"Accept": TABLE})
    assert t["rows"] == [{"cells": t["rows"][0]["cells"]}] and t["rows"][0]["cells"][0] == "s1"
    _, _, plain = raw_http(api, "GET", path)
    assert plain["kind"] == "SprocketList"


def test_a_crd_without_columns_shows_name_and_age(kubectl, widgets, custom, ns):
    custom.create_namespaced_custom_object(
        "example.com",
        "v1",
        ns,
        "widgets",
        {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}},
    )
    out = kubectl("get", "widgets", "-n", ns).stdout.splitlines()
    assert out[0].split() == ["NAME", "AGE"] and out[1].split()[0] == "w"


def test_builtin_columns(kubectl, core, ns):
    kubectl("create", "configmap", "c1", "-n", ns, "--from-literal=a=b", "--from-literal=c=d")
    kubectl("create", "secret", "generic", "s1", "-n", ns, "--from-literal=a=b")
    kubectl("create", "deployment", "d1", "-n", ns, "--image=nginx")
    kubectl("create", "service", "clusterip", "svc1", "-n", ns, "--tcp=80:8080")
    out = kubectl("get", "configmap", "c1", "-n", ns).stdout.splitlines()
    assert out[0].split() == ["NAME", "DATA", "AGE"] and out[1].split()[:2] == ["c1", "2"]
    out = kubectl("get", "secret", "s1", "-n", ns).stdout.splitlines()
    assert out[0].split() == ["NAME", "TYPE", "DATA", "AGE"]
    assert out[1].split()[:3] == ["s1", "Opaque", "1"]
    out = kubectl("get", "deployment", "d1", "-n", ns, "-o", "wide").stdout.splitlines()
    assert out[0].split() == [
        "NAME",
        "READY",
        "UP-TO-DATE",
        "AVAILABLE",
        "AGE",
        "CONTAINERS",
        "IMAGES",
        "SELECTOR",
    ]
    assert out[1].split()[:4] == ["d1", "0/1", "0", "0"]
    assert out[1].split()[5:] == ["nginx", "nginx", "app=d1"]
    out = kubectl("get", "service", "svc1", "-n", ns).stdout.splitlines()
    assert out[0].split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    cells = out[1].split()
    assert cells[0:2] == ["svc1", "ClusterIP"] and cells[3:5] == ["<none>", "80/TCP"]
    out = kubectl("get", "namespace", ns).stdout.splitlines()
    assert out[0].split() == ["NAME", "STATUS", "AGE"] and out[1].split()[:2] == [ns, "Active"]


def test_watch_as_table_sends_columns_once(api, sprockets, ns):
    sprocket(api, ns, "a", size=1)
    sprocket(api, ns, "b", size=2)
    path = f"/apis/tables.example.com/v1/namespaces/{ns}/sprockets?watch=1&timeoutSeconds=1"
    status, _, body = raw_http(api, "GET", path, headers={"Accept": TABLE})
    assert status == 200
    events = [json.loads(line) for line in body.decode().splitlines()]
    assert [e["type"] for e in events] == ["ADDED", "ADDED"]
    first, second = (e["object"] for e in events)
    assert first["kind"] == second["kind"] == "Table"
    assert "columnDefinitions" in first and "columnDefinitions" not in second
    assert [r["cells"][:2] for r in first["rows"] + second["rows"]] == [["a", 1], ["b", 2]]


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (5, "5s"),
        (119, "119s"),
        (200, "3m20s"),
        (600, "10m"),
        (3 * 3600 + 300, "3h5m"),
        (30 * 3600, "30h"),
        (3 * 86400 + 4 * 3600, "3d4h"),
        (100 * 86400, "100d"),
        (3 * 365 * 86400 + 10 * 86400, "3y10d"),
        (10 * 365 * 86400, "10y"),
    ],
)
def test_ages_read_like_kubectl(seconds, shown):
    assert human_duration(seconds) == shown
