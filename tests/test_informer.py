"""operatord.informer.Informer against the embedded API server, over real HTTP."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from operatord.informer import Informer, check_counts
from operatord.kube import ClientSettings, Kube
from operatord.testing import ApiServer
from operatord.testing.waiting import wait_for as _wait_for


def wait_for(predicate, timeout: float = 10.0, message: str = ""):
    return _wait_for(predicate, timeout, 0.02, message)


class Mirror:
    """What the informer delivered: lists, events, restarts, and the state they add up to."""

    def __init__(self):
        self.lock = threading.Lock()
        self.log: list[tuple] = []  # ("list", names) | (event type, name, resourceVersion)
        self.lists: list[dict[str, dict]] = []
        self.events: list[tuple[str, str, str]] = []
        self.restarts: list[tuple[float, str]] = []
        self.state: dict[str, dict] = {}

    def on_list(self, items: list[dict]) -> None:
        with self.lock:
            snapshot = {i["metadata"]["name"]: i for i in items}
            self.lists.append(snapshot)
            self.log.append(("list", sorted(snapshot)))
            self.state = dict(snapshot)

    def on_event(self, etype: str, obj: dict) -> None:
        assert obj["apiVersion"] == "v1" and obj["kind"] == "ConfigMap"
        with self.lock:
            name = obj["metadata"]["name"]
            entry = (etype, name, obj["metadata"]["resourceVersion"])
            self.events.append(entry)
            self.log.append(entry)
            if etype == "DELETED":
                self.state.pop(name, None)
            else:
                self.state[name] = obj

    def observe(self, metric: str, resource: str, label: str) -> None:
        assert resource == "configmaps"
        if metric == "restart":
            with self.lock:
                self.restarts.append((time.monotonic(), label))

    def reasons(self) -> list[str]:
        with self.lock:
            return [r for _, r in self.restarts]

    def rvs(self) -> list[str]:
        with self.lock:
            return [rv for _, _, rv in self.events]

    def data(self) -> dict[str, dict]:
        with self.lock:
            return {n: o.get("data") or {} for n, o in self.state.items()}


@pytest.fixture(scope="module")
def api():
    # Rare bookmarks: an informer's resourceVersion only moves with its own events, which lets
    # the compaction test put it behind the history on purpose.
    with ApiServer(bookmark_interval=60) as server:
        yield server


@pytest.fixture(scope="module")
def kube(api):
    k = Kube(
        ClientSettings(kubeconfig=api.kubeconfig),
        max_attempts=2,
        backoff_initial=0.01,
        backoff_max=0.02,
    )
    yield k
    k.close()


@pytest.fixture
def res(kube):
    return kube.resource("v1", "ConfigMap")


@pytest.fixture
def ns(kube, api):
    name = f"t-{uuid.uuid4().hex[:8]}"
    kube.create(kube.resource("v1", "Namespace"), {"metadata": {"name": name}})
    yield name
    api.faults.clear()


@pytest.fixture
def start(kube, res):
    started: list[Informer] = []

    def make(ns: str, mirror: Mirror, kube=kube, **kw) -> Informer:
        kw.setdefault("backoff_initial", 0.05)
        kw.setdefault("backoff_max", 0.4)
        inf = Informer(
            kube,
            res,
            namespace=ns,
            on_list=mirror.on_list,
            on_event=mirror.on_event,
            observe=mirror.observe,
            **kw,
        )
        inf.start()
        started.append(inf)
        return inf

    yield make
    for inf in started:
        inf.stop()
    for inf in started:
        inf.join(5)


def cm(name: str, **data) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def server_state(kube, res, ns) -> dict[str, dict]:
    items, _ = kube.list(res, ns)
    return {i["metadata"]["name"]: i.get("data") or {} for i in items}


def test_list_then_events_in_order(kube, res, ns, start):
    for i in range(3):
        kube.create(res, cm(f"pre{i}"), ns)
    mirror = Mirror()
    inf = start(ns, mirror)
    assert inf.synced.wait(10)
    written = [
        ("ADDED", kube.create(res, cm("a", v="1"), ns)),
        ("MODIFIED", kube.patch(res, "a", {"data": {"v": "2"}}, ns)),
        ("MODIFIED", kube.patch(res, "pre0", {"data": {"v": "3"}}, ns)),
    ]
    # a ConfigMap's DELETE answers a Status (as on a real cluster); the embedded server's
    # resourceVersion counts commits, so the deletion is the next one
    deleted_rv = str(int(written[-1][1]["metadata"]["resourceVersion"]) + 1)
    assert kube.delete(res, "pre1", ns)["status"] == "Success"
    written.append(("DELETED", {"metadata": {"name": "pre1", "resourceVersion": deleted_rv}}))
    written.append(("ADDED", kube.create(res, cm("b"), ns)))
    expected = [(t, o["metadata"]["name"], o["metadata"]["resourceVersion"]) for t, o in written]
    wait_for(lambda: len(mirror.events) >= len(expected), message="5 events")
    assert mirror.log == [("list", ["pre0", "pre1", "pre2"]), *expected]
    assert mirror.data() == server_state(kube, res, ns)
    assert inf.resource_version == expected[-1][2]


def test_dropped_watches_resume_without_missing_or_duplicating(api, kube, res, ns, start):
    mirror = Mirror()
    inf = start(ns, mirror)
    assert inf.synced.wait(10)
    written = []
    for i in range(30):
        written.append(kube.create(res, cm(f"c{i}"), ns)["metadata"]["resourceVersion"])
        if i % 10 == 5:
            wait_for(lambda: api.state()["watches"] > 0, message="a watch to drop")
            api.faults.drop_watches()
    wait_for(lambda: written[-1] in mirror.rvs(), message="the last write delivered")
    assert mirror.rvs() == written  # each exactly once, in order
    assert len(mirror.lists) == 1  # resumed, not relisted
    assert mirror.reasons().count("closed") >= 3
    assert mirror.data() == server_state(kube, res, ns)


def test_repeatedly_dropped_watches_do_not_delay_events(api, kube, res, ns, start):
    mirror = Mirror()
    inf = start(ns, mirror, backoff_max=5.0)
    assert inf.synced.wait(10)
    api.faults.drop_watches_after(0.2)
    api.faults.drop_watches()  # the open watch predates the rule
    worst = 0.0
    for i in range(8):
        dropped = len(mirror.restarts)
        rv = kube.create(res, cm(f"d{i}"), ns)["metadata"]["resourceVersion"]
        t0 = time.monotonic()
        wait_for(lambda rv=rv: rv in mirror.rvs(), message=f"d{i} delivered")
        worst = max(worst, time.monotonic() - t0)
        wait_for(lambda d=dropped: len(mirror.restarts) > d, message="the next dropped watch")
    api.faults.drop_watches_after(None)
    assert len(set(mirror.rvs())) == len(mirror.rvs()) == 8
    # A watch that made progress resets the backoff: no delivery waits for a grown delay.
    assert worst < 1.0, worst
    assert mirror.reasons().count("closed") >= 8


def test_compaction_forces_a_relist_with_the_complete_state(api, kube, res, ns, start):
    for i in range(3):
        kube.create(res, cm(f"k{i}", v="0"), ns)
    mirror = Mirror()
    inf = start(ns, mirror)
    assert inf.synced.wait(10)
    behind = inf.resource_version
    # Keep the informer disconnected while things change and the history is compacted.
    api.faults.add_error(code=500, verbs=["watch"], resources=["configmaps"])
    api.faults.drop_watches()
    wait_for(lambda: "error" in mirror.reasons(), message="a failed re-watch")
    kube.create(res, cm("k3", v="new"), ns)
    kube.patch(res, "k0", {"data": {"v": "changed"}}, ns)
    kube.delete(res, "k1", ns)
    api.faults.compact()
    assert inf.resource_version == behind
    api.faults.clear()
    wait_for(lambda: len(mirror.lists) == 2, message="a relist")
    assert "expired" in mirror.reasons()
    expected = server_state(kube, res, ns)
    assert expected == {"k0": {"v": "changed"}, "k2": {"v": "0"}, "k3": {"v": "new"}}
    assert {n: o.get("data") for n, o in mirror.lists[1].items()} == expected
    # And it keeps watching from the relist.
    rv = kube.create(res, cm("k4"), ns)["metadata"]["resourceVersion"]
    wait_for(lambda: rv in mirror.rvs(), message="an event after the relist")
    assert mirror.data() == server_state(kube, res, ns)


def test_errors_back_off_and_recover(api, kube, res, ns, start):
    kube.create(res, cm("e0"), ns)
    api.faults.add_error(code=500, verbs=["list"], resources=["configmaps"])
    mirror = Mirror()
    inf = start(ns, mirror, backoff_initial=0.05, backoff_max=0.4, streaming_list=False)
    wait_for(lambda: len(mirror.restarts) >= 6, message="6 failed lists")
    assert not inf.synced.is_set() and mirror.lists == []
    assert set(mirror.reasons()) == {"error"}
    times = [t for t, _ in mirror.restarts[:6]]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    # 0.05, 0.1, 0.2, 0.4, 0.4 (±20%) plus the failed list itself.
    assert gaps[0] < 0.2 and gaps[3] > 0.3 and gaps[4] < 1.0, gaps
    api.faults.clear()
    assert inf.synced.wait(5)
    assert list(mirror.lists[0]) == ["e0"]
    rv = kube.create(res, cm("e1"), ns)["metadata"]["resourceVersion"]
    wait_for(lambda: rv in mirror.rvs(), message="events after recovery")


def test_a_silent_healthy_watch_is_checked_and_kept(kube, res, ns, start):
    mirror = Mirror()
    before = check_counts().get(("configmaps", "ok"), 0)
    inf = start(ns, mirror, silence_seconds=0.5)
    assert inf.synced.wait(10)
    wait_for(
        lambda: check_counts().get(("configmaps", "ok"), 0) >= before + 2,
        message="two passed liveness checks",
    )
    assert mirror.restarts == []  # checked, never torn down
    rv = kube.create(res, cm("i0"), ns)["metadata"]["resourceVersion"]
    wait_for(lambda: rv in mirror.rvs(), message="an event on the same watch")


def test_stop_ends_the_thread_even_on_a_quiet_watch(kube, res, ns, start):
    mirror = Mirror()
    inf = start(ns, mirror)
    assert inf.synced.wait(10)
    wait_for(lambda: inf._response is not None, message="the watch is open")
    t0 = time.monotonic()
    inf.stop()
    inf.join(5)
    assert not inf._thread.is_alive()
    assert time.monotonic() - t0 < 2
    assert mirror.restarts == []  # stopping is not a restart


def test_repeated_429s_are_paced_by_retry_after_not_by_a_growing_backoff(api, kube, res, ns, start):
    mirror = Mirror()
    inf = start(ns, mirror, backoff_initial=0.5, backoff_max=30)
    assert inf.synced.wait(10)
    api.faults.add_error(
        code=429, verbs=["watch"], resources=["configmaps"], retry_after=1, count=5
    )
    api.faults.drop_watches()
    t0 = time.monotonic()
    rv = kube.create(res, cm("paced"), ns)["metadata"]["resourceVersion"]
    # Five refusals, each waited out for its 1 s: about 5 s. A backoff doubling from 0.5 s
    # under them would wait 1 + 1 + 2 + 4 + 8 s.
    wait_for(lambda: rv in mirror.rvs(), 30, message="the event after five paced refusals")
    assert mirror.reasons().count("error") == 5
    assert time.monotonic() - t0 < 10


def test_a_429_on_opening_the_watch_waits_for_retry_after(api, kube, res, ns, start):
    mirror = Mirror()
    inf = start(ns, mirror, backoff_initial=0.05)
    assert inf.synced.wait(10)
    api.faults.add_error(code=429, verbs=["watch"], resources=["configmaps"], retry_after=1)
    api.faults.drop_watches()
    wait_for(lambda: "error" in mirror.reasons(), message="a refused re-watch")
    refused = mirror.restarts[-1][0]
    api.faults.clear()
    rv = kube.create(res, cm("r0"), ns)["metadata"]["resourceVersion"]
    wait_for(lambda: rv in mirror.rvs(), message="the event after the pause")
    delivered = time.monotonic()
    assert mirror.reasons().count("error") == 1  # waited 1 s instead of retrying every 0.05 s
    assert delivered - refused >= 0.7


# ---- streaming initial lists and metadata-only informers ----------------------------------


@pytest.fixture
def fresh_kube(api):
    """An API client of its own: what an informer learns about the server (no streaming lists)
    is remembered per client, so tests of the fallbacks must not share one."""
    k = Kube(ClientSettings(kubeconfig=api.kubeconfig), max_attempts=2, backoff_initial=0.01)
    yield k
    k.close()


def requests_in(api, ns: str) -> list[dict]:
    """The informers' requests (lists and watches) of ConfigMaps in `ns`, oldest first."""
    return [
        r
        for r in api.requests()
        if r["namespace"] == ns and r["resource"] == "configmaps" and r["verb"] in ("list", "watch")
    ]


def test_the_initial_list_is_a_streaming_list(api, kube, res, ns, start):
    for i in range(3):
        kube.create(res, cm(f"s{i}", v=str(i)), ns)
    mirror = Mirror()
    inf = start(ns, mirror)
    assert inf.synced.wait(10)
    assert inf.last_list_streamed is True
    rv = kube.create(res, cm("after"), ns)["metadata"]["resourceVersion"]
    wait_for(lambda: rv in mirror.rvs(), message="an event after the streaming list")
    assert mirror.events == [("ADDED", "after", rv)]  # none of the listed objects again
    # the audit log: a streaming list, then the watch from its bookmark; no list
    first, *rest = requests_in(api, ns)
    assert first["verb"] == "watch" and "sendInitialEvents=true" in first["requestURI"]
    assert "resourceVersionMatch=NotOlderThan" in first["requestURI"]
    assert [r["verb"] for r in rest] == ["watch"] and "sendInitialEvents" not in rest[0][
        "requestURI"
    ]
    full = server_state_objects(kube, res, ns)
    del full["after"]
    assert mirror.lists == [full]  # exactly what a list returns


def server_state_objects(kube, res, ns) -> dict[str, dict]:
    items, _ = kube.list(res, ns)
    return {i["metadata"]["name"]: i for i in items}


def test_a_failed_streaming_list_is_retried_as_one(api, kube, res, ns, start):
    kube.create(res, cm("t0"), ns)
    api.faults.add_error(code=500, verbs=["watch"], resources=["configmaps"], count=2)
    mirror = Mirror()
    inf = start(ns, mirror)
    assert inf.synced.wait(10)
    assert mirror.reasons() == ["error", "error"]
    assert inf.last_list_streamed is True  # a 500 is no reason to give up streaming
    assert list(mirror.lists[0]) == ["t0"]


def test_a_server_that_refuses_streaming_lists_is_listed_in_pages(api, fresh_kube, res, ns, start):
    fresh_kube.create(res, cm("r0"), ns)
    api.faults.without_watch_list("reject")
    mirror = Mirror()
    inf = start(ns, mirror, kube=fresh_kube)
    assert inf.synced.wait(10)
    assert inf.last_list_streamed is False and list(mirror.lists[0]) == ["r0"]
    assert mirror.restarts == []  # the refusal is a finding, not a failure
    wait_for(lambda: len(requests_in(api, ns)) >= 3, message="the watch after the list")
    calls = [(r["verb"], r["code"]) for r in requests_in(api, ns)]
    assert calls[:3] == [("watch", 422), ("list", 200), ("watch", 200)]
    rv = fresh_kube.create(res, cm("r1"), ns)["metadata"]["resourceVersion"]
    wait_for(lambda: rv in mirror.rvs(), message="events after the paged list")
    # remembered for the type: another informer on the same client does not ask again
    api.faults.without_watch_list(None)
    again = start(ns, Mirror(), kube=fresh_kube)
    assert again.synced.wait(10) and again.last_list_streamed is False
    refused = [r for r in requests_in(api, ns) if "sendInitialEvents" in r["requestURI"]]
    assert len(refused) == 1


def test_a_server_that_ignores_send_initial_events_is_detected_by_its_silence(
    api, fresh_kube, res, ns, start
):
    for i in range(2):
        fresh_kube.create(res, cm(f"q{i}"), ns)
    api.faults.without_watch_list("ignore")
    mirror = Mirror()
    t0 = time.monotonic()
    # the module's server sends bookmarks once a minute: only the silence can tell
    inf = start(ns, mirror, kube=fresh_kube, initial_events_timeout=0.5)
    assert inf.synced.wait(10)
    assert time.monotonic() - t0 < 5
    assert inf.last_list_streamed is False
    assert mirror.log[0] == ("list", ["q0", "q1"]) and len(mirror.lists) == 1
    rv = fresh_kube.create(res, cm("q2"), ns)["metadata"]["resourceVersion"]
    wait_for(lambda: rv in mirror.rvs(), message="events after the fallback")
    assert [e[1] for e in mirror.events] == ["q2"]


def test_a_server_that_ignores_send_initial_events_is_detected_by_a_plain_bookmark():
    with ApiServer(bookmark_interval=0.2, in_process=True) as server:
        k = Kube(ClientSettings(kubeconfig=server.kubeconfig), max_attempts=2)
        try:
            res = k.resource("v1", "ConfigMap")
            k.create(res, cm("b0"), "default")
            server.faults.without_watch_list("ignore")
            mirror = Mirror()
            inf = Informer(
                k,
                res,
                namespace="default",
                on_list=mirror.on_list,
                on_event=mirror.on_event,
                initial_events_timeout=30,  # not the silence: the bookmark tells
            )
            inf.start()
            try:
                assert inf.synced.wait(5)
                assert inf.last_list_streamed is False
                assert list(mirror.lists[0]) == ["b0"]
                assert [r["verb"] for r in server.requests() if r["resource"] == "configmaps"][
                    1:3
                ] == ["watch", "list"]
            finally:
                inf.stop()
                inf.join(5)
        finally:
            k.close()


MARKER = "s3cr3t-marker-value"


def test_metadata_only_informer_never_delivers_data(api, kube, res, ns, start):
    kube.create(res, cm("m0", token=MARKER), ns)
    mirror = Mirror()
    inf = start(ns, mirror, metadata_only=True)
    assert inf.synced.wait(10)
    assert inf.server_metadata is True and inf.last_list_streamed is True
    kube.patch(res, "m0", {"metadata": {"labels": {"seen": "yes"}}, "data": {"more": MARKER}}, ns)
    rv = kube.create(res, cm("m1", token=MARKER), ns)["metadata"]["resourceVersion"]
    wait_for(lambda: rv in mirror.rvs(), message="metadata-only events")
    delivered = [*mirror.lists[0].values(), *mirror.state.values()]
    assert all(set(o) == {"apiVersion", "kind", "metadata"} for o in delivered)
    assert {(o["apiVersion"], o["kind"]) for o in delivered} == {("v1", "ConfigMap")}
    assert mirror.state["m0"]["metadata"]["labels"] == {"seen": "yes"}
    assert MARKER not in repr(mirror.lists) + repr(mirror.state)
    watches = [r for r in requests_in(api, ns) if r["verb"] == "watch"]
    assert watches and all(r["code"] == 200 for r in watches)


def test_metadata_only_paged_list(kube, res, ns, start):
    kube.create(res, cm("p0", token=MARKER), ns)
    mirror = Mirror()
    inf = start(ns, mirror, metadata_only=True, streaming_list=False)
    assert inf.synced.wait(10)
    assert inf.server_metadata is True and inf.last_list_streamed is False
    assert set(mirror.lists[0]["p0"]) == {"apiVersion", "kind", "metadata"}
    assert MARKER not in repr(mirror.lists)


@pytest.mark.parametrize("streaming", [True, False])
def test_metadata_only_without_server_support_strips_objects_itself(
    api, kube, res, ns, start, streaming
):
    kube.create(res, cm("f0", token=MARKER), ns)
    api.faults.without_partial_metadata()
    mirror = Mirror()
    inf = start(ns, mirror, metadata_only=True, streaming_list=streaming)
    assert inf.synced.wait(10)
    assert inf.server_metadata is False and inf.last_list_streamed is streaming
    rv = kube.create(res, cm("f1", token=MARKER), ns)["metadata"]["resourceVersion"]
    wait_for(lambda: rv in mirror.rvs(), message="events without server support")
    delivered = [*mirror.lists[0].values(), *mirror.state.values()]
    assert all(set(o) == {"apiVersion", "kind", "metadata"} for o in delivered)
    assert MARKER not in repr(mirror.lists) + repr(mirror.state)


@pytest.mark.parametrize("streaming", [True, False])
def test_transform_runs_on_every_object_as_it_arrives(kube, res, ns, start, streaming):
    kube.create(res, cm("x0", big="1"), ns)
    seen: list[str] = []

    def trim(obj: dict) -> dict:
        seen.append(obj["metadata"]["name"])
        obj.pop("data", None)
        obj["metadata"].pop("managedFields", None)
        return obj

    mirror = Mirror()
    inf = start(ns, mirror, transform=trim, streaming_list=streaming)
    assert inf.synced.wait(10) and inf.last_list_streamed is streaming
    rv = kube.create(res, cm("x1", big="2"), ns)["metadata"]["resourceVersion"]
    wait_for(lambda: rv in mirror.rvs(), message="a transformed event")
    assert seen == ["x0", "x1"]
    delivered = [*mirror.lists[0].values(), *mirror.state.values()]
    assert all("data" not in o and "managedFields" not in o["metadata"] for o in delivered)


def test_transform_can_be_left_to_listed_objects(kube, res, ns, start):
    kube.create(res, cm("y0", big="1"), ns)
    seen: list[str] = []

    def mark(obj: dict) -> dict:
        seen.append(obj["metadata"]["name"])
        return {**obj, "marked": True}

    mirror = Mirror()
    inf = start(ns, mirror, transform=mark, transform_events=False)
    assert inf.synced.wait(10)
    rv = kube.create(res, cm("y1", big="2"), ns)["metadata"]["resourceVersion"]
    wait_for(lambda: rv in mirror.rvs(), message="an untransformed event")
    assert seen == ["y0"]
    assert mirror.lists[0]["y0"]["marked"] and "marked" not in mirror.state["y1"]
    assert mirror.state["y1"]["kind"] == "ConfigMap"  # events are still typed
