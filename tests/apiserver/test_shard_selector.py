"""shardSelector on lists and watches (KEP-5866) and its shardInfo echo; the fault that turns
the feature off."""

from __future__ import annotations

import json
import threading

import pytest

from operatord.apiserver.shardselector import fnv1a64 as server_hash
from operatord.shards import fnv1a64, range_selector, shard_of

from .conftest import raw

HALF = "shardRange(object.metadata.uid, '0x0000000000000000', '0x8000000000000000')"


def make(core, ns, n):
    return [
        core.create_namespaced_config_map(ns, {"metadata": {"name": f"cm-{i}"}}).metadata.uid
        for i in range(n)
    ]


def listed(client, ns, selector, **query):
    status, body = raw(
        client,
        "GET",
        f"/api/v1/namespaces/{ns}/configmaps",
        query={"shardSelector": selector, **query},
    )
    assert status == 200, body
    return body


def test_the_server_hash_is_the_client_hash():
    for text in ("", "a", "foobar", "0b1f4c3e-6d0a-4a39-9d1e-3f3c1f6e0a11"):
        assert server_hash(text) == fnv1a64(text)


def test_list_keeps_exactly_the_uids_in_range_and_echoes_the_selector(client, core, ns):
    uids = make(core, ns, 24)
    body = listed(client, ns, HALF)
    got = {i["metadata"]["uid"] for i in body["items"]}
    assert got == {u for u in uids if fnv1a64(u) < 1 << 63}
    assert body["metadata"]["shardInfo"] == {"selector": HALF}


@pytest.mark.parametrize("shards", [3, 8])
def test_shard_ranges_partition_a_list(client, core, ns, shards):
    uids = make(core, ns, 30)
    seen: list[str] = []
    for k in range(shards):
        items = listed(client, ns, range_selector([k], shards))["items"]
        assert all(shard_of(i["metadata"]["uid"], shards) == k for i in items)
        seen += [i["metadata"]["uid"] for i in items]
    assert sorted(seen) == sorted(uids)


def test_ranges_join_with_or(client, core, ns):
    uids = make(core, ns, 24)
    selector = range_selector([0, 2], 4)
    assert "||" in selector
    got = {i["metadata"]["uid"] for i in listed(client, ns, selector)["items"]}
    assert got == {u for u in uids if shard_of(u, 4) in (0, 2)}


def test_namespace_field_and_label_selector_combine(client, core, ns):
    make(core, ns, 3)
    core.create_namespaced_config_map(ns, {"metadata": {"name": "lab", "labels": {"a": "b"}}})
    h = fnv1a64(ns)
    inside = f"shardRange(object.metadata.namespace, '0x{h:x}', '0x{h + 1:x}')"
    outside = f"shardRange(object.metadata.namespace, '0x0', '0x{h:x}')"
    assert len(listed(client, ns, inside)["items"]) == 4
    assert listed(client, ns, outside)["items"] == []
    names = [
        i["metadata"]["name"] for i in listed(client, ns, inside, labelSelector="a=b")["items"]
    ]
    assert names == ["lab"]


def test_paging_keeps_the_selector(client, core, ns):
    uids = make(core, ns, 20)
    got, cont = [], None
    while True:
        query = {"limit": 3}
        if cont:
            query["continue"] = cont
        body = listed(client, ns, HALF, **query)
        assert body["metadata"]["shardInfo"] == {"selector": HALF}
        got += [i["metadata"]["uid"] for i in body["items"]]
        cont = body["metadata"].get("continue")
        if not cont:
            break
    assert sorted(got) == sorted(u for u in uids if fnv1a64(u) < 1 << 63)


@pytest.mark.parametrize(
    "selector",
    [
        "shardRange(object.metadata.name, '0x0', '0x10')",  # unsupported field
        "shardRange(object.metadata.uid, '0x0')",
        "shardRange(object.metadata.uid, '10', '0x20')",  # no 0x
        "shardRange(object.metadata.uid, '0x20', '0x10')",  # start > end
        "shardRange(object.metadata.uid, '0x0', '0x10000000000000001')",  # beyond 2^64
        "shardRange(object.metadata.uid, '0x0', '0x8') && shardRange(object.metadata.uid, '0x0', '0x8')",
    ],
)
def test_malformed_selectors_are_bad_requests(client, ns, selector):
    status, body = raw(
        client, "GET", f"/api/v1/namespaces/{ns}/configmaps", query={"shardSelector": selector}
    )
    assert status == 400
    assert body["reason"] == "BadRequest"
    assert "shardSelector" in body["message"]


def test_watch_delivers_only_the_selected_range(api, client, core, ns):
    status, body = raw(client, "GET", f"/api/v1/namespaces/{ns}/configmaps")
    rv = body["metadata"]["resourceVersion"]
    seen: list[str] = []
    done = threading.Event()

    def watch():
        import http.client

        conn = http.client.HTTPConnection(api.host, api.port, timeout=10)
        from urllib.parse import quote

        conn.request(
            "GET",
            f"/api/v1/namespaces/{ns}/configmaps?watch=true&resourceVersion={rv}"
            f"&timeoutSeconds=3&shardSelector={quote(HALF)}",
        )
        resp = conn.getresponse()
        for line in resp:
            event = json.loads(line)
            if event["type"] == "ADDED":
                seen.append(event["object"]["metadata"]["uid"])
        done.set()

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    uids = make(core, ns, 24)
    assert done.wait(15)
    assert sorted(seen) == sorted(u for u in uids if fnv1a64(u) < 1 << 63)


def test_the_fault_turns_the_feature_off(api, client, core, ns):
    uids = make(core, ns, 10)
    api.faults.ignore_shard_selector()
    assert api.faults.get()["ignoreShardSelector"] is True
    body = listed(client, ns, HALF)
    assert "shardInfo" not in body["metadata"]
    assert sorted(i["metadata"]["uid"] for i in body["items"]) == sorted(uids)
    # a malformed selector is ignored as well, as a server without the feature does
    assert listed(client, ns, "nonsense")["items"]
    api.faults.ignore_shard_selector(False)
    assert listed(client, ns, HALF)["metadata"]["shardInfo"] == {"selector": HALF}
