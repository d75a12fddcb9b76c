"""Selectors, paging, and watch semantics (history, 410, bookmarks, timeouts, selector moves)."""

import time

import pytest
from kubernetes import watch
from kubernetes.client import ApiException

from .conftest import raw


def make(core, ns, name, **labels):
    return core.create_namespaced_config_map(ns, {"metadata": {"name": name, "labels": labels}})


@pytest.mark.parametrize(
    "selector,expected",
    [
        ("app=web", ["a", "b"]),
        ("app==web", ["a", "b"]),
        ("app!=web", ["c", "d"]),
        ("tier in (fe, be)", ["a", "b"]),
        ("tier notin (fe)", ["b", "c", "d"]),
        ("tier", ["a", "b"]),
        ("!tier", ["c", "d"]),
        ("app=web,tier=be", ["b"]),
        ("n>3", ["d"]),
        ("n<3", ["c"]),
    ],
)
def test_label_selectors(core, ns, selector, expected):
    make(core, ns, "a", app="web", tier="fe")
    make(core, ns, "b", app="web", tier="be")
    make(core, ns, "c", app="db", n="1")
    make(core, ns, "d", n="7")
    names = [
        i.metadata.name for i in core.list_namespaced_config_map(ns, label_selector=selector).items
    ]
    assert names == expected


def test_bad_selector_is_400(core, ns):
    with pytest.raises(ApiException) as e:
        core.list_namespaced_config_map(ns, label_selector="a in b")
    assert e.value.status == 400
    with pytest.raises(ApiException) as e:
        core.list_namespaced_config_map(ns, field_selector="data.k=v")
    assert e.value.status == 400


def test_field_selectors(core, ns):
    make(core, ns, "a")
    make(core, ns, "b")
    assert [
        i.metadata.name
        for i in core.list_namespaced_config_map(ns, field_selector="metadata.name=b").items
    ] == ["b"]
    assert [
        i.metadata.name
        for i in core.list_namespaced_config_map(ns, field_selector="metadata.name!=b").items
    ] == ["a"]
    every = core.list_config_map_for_all_namespaces(field_selector=f"metadata.namespace={ns}").items
    assert {i.metadata.name for i in every} == {"a", "b"}


def test_limit_and_continue(core, ns):
    for i in range(7):
        make(core, ns, f"c{i}")
    seen, cont, pages = [], None, 0
    while True:
        page = core.list_namespaced_config_map(ns, limit=3, _continue=cont)
        seen += [i.metadata.name for i in page.items]
        pages += 1
        cont = page.metadata._continue
        if not cont:
            break
        assert page.metadata.remaining_item_count == 7 - len(seen)
    assert seen == [f"c{i}" for i in range(7)] and pages == 3


def test_continue_token_expires_after_compaction(api, core, ns):
    for i in range(3):
        make(core, ns, f"c{i}")
    page = core.list_namespaced_config_map(ns, limit=1)
    make(core, ns, "later")
    api.faults.compact()
    with pytest.raises(ApiException) as e:
        core.list_namespaced_config_map(ns, limit=1, _continue=page.metadata._continue)
    assert e.value.status == 410


def test_watch_from_resource_version_replays_history(core, ns):
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    make(core, ns, "a")
    core.patch_namespaced_config_map("a", ns, {"data": {"x": "1"}})
    core.delete_namespaced_config_map("a", ns)
    events = []
    for ev in watch.Watch().stream(
        core.list_namespaced_config_map, ns, resource_version=rv, timeout_seconds=1
    ):
        events.append(
            (ev["type"], ev["object"].metadata.name, ev["object"].kind, ev["object"].api_version)
        )
    assert events == [
        ("ADDED", "a", "ConfigMap", "v1"),
        ("MODIFIED", "a", "ConfigMap", "v1"),
        ("DELETED", "a", "ConfigMap", "v1"),
    ]


def test_watch_without_resource_version_starts_with_current_state(core, ns):
    make(core, ns, "a")
    make(core, ns, "b")
    names = [
        ev["object"].metadata.name
        for ev in watch.Watch().stream(core.list_namespaced_config_map, ns, timeout_seconds=1)
    ]
    assert names == ["a", "b"]


def test_watch_too_old_resource_version_is_410(api, core, ns):
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    make(core, ns, "a")
    api.faults.compact()
    with pytest.raises(ApiException) as e:
        list(
            watch.Watch().stream(
                core.list_namespaced_config_map, ns, resource_version=rv, timeout_seconds=2
            )
        )
    assert e.value.status == 410


def test_watch_error_event_is_expired_status(client, api, core, ns):
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    make(core, ns, "a")
    api.faults.compact()
    req = client.param_serialize(
        "GET",
        f"/api/v1/namespaces/{ns}/configmaps",
        query_params=[("watch", "true"), ("resourceVersion", rv)],
        header_params={"Accept": "application/json"},
        auth_settings=["BearerToken"],
    )
    import json

    resp = client.call_api(*req)
    line = json.loads(resp.read().splitlines()[0])
    assert (
        line["type"] == "ERROR"
        and line["object"]["code"] == 410
        and line["object"]["reason"] == "Expired"
    )


def test_history_is_bounded(client):
    import kubernetes

    from operatord.testing import ApiServer

    with ApiServer(history_size=5, in_process=True) as small:
        c = small.client()
        core = kubernetes.client.CoreV1Api(c)
        rv = core.list_namespaced_config_map("default").metadata.resource_version
        for i in range(10):
            core.create_namespaced_config_map("default", {"metadata": {"name": f"c{i}"}})
        with pytest.raises(ApiException) as e:
            list(
                watch.Watch().stream(
                    core.list_namespaced_config_map,
                    "default",
                    resource_version=rv,
                    timeout_seconds=1,
                )
            )
        assert e.value.status == 410
        c.close()


def test_bookmarks_carry_current_resource_version(core, ns):
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    make(core, ns, "a")
    latest = core.read_namespaced_config_map("a", ns).metadata.resource_version
    types, bookmark_rvs = [], []
    for ev in watch.Watch().stream(
        core.list_namespaced_config_map,
        ns,
        resource_version=rv,
        allow_watch_bookmarks=True,
        timeout_seconds=1,
    ):
        types.append(ev["type"])
        if ev["type"] == "BOOKMARK":
            bookmark_rvs.append(int(ev["raw_object"]["metadata"]["resourceVersion"]))
            assert ev["raw_object"]["kind"] == "ConfigMap"
    assert types[0] == "ADDED" and types[-1] == "BOOKMARK"  # a bookmark before the timeout close
    assert len(bookmark_rvs) >= 2 and min(bookmark_rvs) >= int(latest)


def test_timeout_seconds_closes_stream(core, ns):
    start = time.monotonic()
    assert list(watch.Watch().stream(core.list_namespaced_config_map, ns, timeout_seconds=1)) == []
    assert 0.9 <= time.monotonic() - start < 5


def test_objects_moving_across_selector(core, ns):
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    make(core, ns, "a", sel="no")
    core.patch_namespaced_config_map("a", ns, {"metadata": {"labels": {"sel": "yes"}}})
    core.patch_namespaced_config_map("a", ns, {"data": {"x": "1"}})
    core.patch_namespaced_config_map("a", ns, {"metadata": {"labels": {"sel": "no"}}})
    types = [
        ev["type"]
        for ev in watch.Watch().stream(
            core.list_namespaced_config_map,
            ns,
            label_selector="sel=yes",
            resource_version=rv,
            timeout_seconds=1,
        )
    ]
    assert types == ["ADDED", "MODIFIED", "DELETED"]


def test_watch_sees_live_events_across_namespaces(core, ns):
    import threading

    rv = core.list_config_map_for_all_namespaces().metadata.resource_version
    got = []

    def run():
        w = watch.Watch()
        for ev in w.stream(
            core.list_config_map_for_all_namespaces, resource_version=rv, timeout_seconds=5
        ):
            if ev["object"].metadata.namespace == ns:
                got.append(ev["object"].metadata.name)
                if len(got) == 3:
                    w.stop()

    t = threading.Thread(target=run)
    t.start()
    for i in range(3):
        make(core, ns, f"live{i}")
    t.join(10)
    assert got == ["live0", "live1", "live2"]


def test_list_resource_version_and_items_kind(client, core, ns):
    make(core, ns, "a")
    status, body = raw(client, "GET", f"/api/v1/namespaces/{ns}/configmaps")
    assert body["kind"] == "ConfigMapList" and body["metadata"]["resourceVersion"].isdigit()
    assert body["items"][0]["kind"] == "ConfigMap" and body["items"][0]["apiVersion"] == "v1"


def test_busy_stream_still_gets_bookmarks(core, ns):
    """Writes every few milliseconds never leave the stream idle; bookmarks still come."""
    import threading

    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            make(core, ns, f"busy{i}")
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    seen = {"BOOKMARK": 0, "ADDED": 0}
    w = watch.Watch()
    try:
        for ev in w.stream(
            core.list_namespaced_config_map,
            ns,
            resource_version=rv,
            allow_watch_bookmarks=True,
            timeout_seconds=10,
        ):
            seen[ev["type"]] = seen.get(ev["type"], 0) + 1
            if seen["BOOKMARK"] >= 2:
                w.stop()
    finally:
        stop.set()
        t.join()
    assert seen["BOOKMARK"] >= 2 and seen["ADDED"] > 10
