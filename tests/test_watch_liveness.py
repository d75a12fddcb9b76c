"""Watch liveness against a hung or refusing API server, or a dead connection to a healthy one:
the informer through a TCP proxy on 127.0.0.1 (tests/blackhole_proxy.py) to the embedded API
server, over real HTTP.

The server bookmarks only every 60 s (as kube-apiserver does), so no informer here ever sees a
bookmark: nothing below depends on the server's bookmark cadence. The test process writes to
the API server directly; only the informer goes through the proxy.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from blackhole_proxy import BlackholeProxy
from prometheus_client.parser import text_string_to_metric_families

from operatord.health import HealthServer
from operatord.informer import (
    CHECK_TIMEOUT_SECONDS,
    CHECK_WINDOW_SECONDS,
    Informer,
    check_counts,
    watch_readiness,
)
from operatord.kube import ApiError, ClientSettings, Kube
from operatord.metrics import Metrics
from operatord.testing import ApiServer
from operatord.testing.waiting import wait_for as _wait_for
from operatord.transport import HttpClient


def wait_for(predicate, timeout: float = 10.0, message: str = ""):
    return _wait_for(predicate, timeout, 0.02, message)


@pytest.fixture(scope="module")
def api():
    with ApiServer(bookmark_interval=60.0) as server:  # kube-apiserver's cadence
        yield server


@pytest.fixture(scope="module")
def direct(api):
    k = Kube(ClientSettings(kubeconfig=api.kubeconfig))
    yield k
    k.close()


@pytest.fixture
def proxy(api):
    p = BlackholeProxy(api.port)
    yield p
    p.close()


@pytest.fixture
def via_proxy(proxy, api, tmp_path):
    k = Kube(ClientSettings(kubeconfig=proxy.kubeconfig(api.kubeconfig, tmp_path / "kc")))
    yield k
    k.close()


@pytest.fixture
def ns(direct):
    name = f"l-{uuid.uuid4().hex[:8]}"
    direct.create(direct.resource("v1", "Namespace"), {"metadata": {"name": name}})
    return name


class Seen:
    def __init__(self):
        self.lock = threading.Lock()
        self.names: set[str] = set()
        self.restarts: list[str] = []

    def on_list(self, items):
        with self.lock:
            self.names |= {i["metadata"]["name"] for i in items}

    def on_event(self, etype, obj):
        with self.lock:
            self.names.add(obj["metadata"]["name"])

    def observe(self, metric, resource, label):
        if metric == "restart":
            with self.lock:
                self.restarts.append(label)

    def has(self, name: str) -> bool:
        with self.lock:
            return name in self.names


@pytest.fixture
def informers():
    started: list[Informer] = []

    def start(kube, ns, seen, **kw) -> Informer:
        inf = Informer(
            kube,
            kube.resource("v1", "ConfigMap"),
            namespace=ns,
            on_list=seen.on_list,
            on_event=seen.on_event,
            observe=seen.observe,
            # The watch phase under test: a streaming initial list is a watch of its own, which
            # would make "the watch is open" ambiguous right after sync.
            streaming_list=False,
            **kw,
        )
        inf.start()
        started.append(inf)
        return inf

    yield start
    for inf in started:
        inf.stop()
    for inf in started:
        inf.join(5)


def cm(name: str) -> dict:
    return {"metadata": {"name": name}, "data": {"k": "v"}}


def scrape(metrics: Metrics, name: str, **labels: str) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                out[sample.labels["resource"]] = sample.value
    return out


def checks(result: str) -> int:
    return check_counts().get(("configmaps", result), 0)


def watches(api, ns: str) -> int:
    """Watch requests on configmaps in ``ns`` in the API server's audit log."""
    return sum(
        1
        for r in api.requests()
        if r["verb"] == "watch" and r["resource"] == "configmaps" and r["namespace"] == ns
    )


SILENCE = 2.0  # health.watchSilenceSeconds, scaled down from the default 10 s


def test_a_silent_healthy_watch_costs_one_check_per_interval_and_stays_ready(
    api, direct, ns, informers
):
    seen = Seen()
    inf = informers(direct, ns, seen, silence_seconds=SILENCE)
    assert inf.synced.wait(10)
    assert inf.liveness_bound() == SILENCE + CHECK_TIMEOUT_SECONDS
    wait_for(lambda: inf._response is not None, 5, "the watch open")
    before, ok_before = watches(api, ns), checks("ok")
    t0 = time.monotonic()
    while time.monotonic() - t0 < 5 * SILENCE:  # no bookmark, no change: silence only
        assert watch_readiness() is None
        assert inf.idle_seconds() < SILENCE + CHECK_WINDOW_SECONDS + 1.0
        time.sleep(0.1)
    elapsed = time.monotonic() - t0
    made = watches(api, ns) - before
    # at most one check per interval (each starts >= SILENCE after the last one ended)
    assert 2 <= made <= elapsed / SILENCE + 1, made
    assert checks("ok") - ok_before == made
    assert seen.restarts == []  # the watch itself was never torn down
    direct.create(direct.resource("v1", "ConfigMap"), cm("still-flowing"), ns)
    wait_for(lambda: seen.has("still-flowing"), 5, "events on the checked watch")


def test_a_hung_server_is_detected_within_the_bound_without_any_bookmark(
    direct, via_proxy, proxy, ns, informers
):
    seen = Seen()
    inf = informers(via_proxy, ns, seen, silence_seconds=SILENCE)
    assert inf.synced.wait(10)
    wait_for(lambda: inf._response is not None, 5, "the watch open")
    health = HealthServer(0)
    metrics = Metrics()
    res = direct.resource("v1", "ConfigMap")
    assert health.evaluate("/readyz") == (200, "ok\n")
    unanswered = checks("unanswered")

    proxy.hang()
    hung = time.monotonic()
    direct.create(res, cm("during-hang"), ns)
    # Torn down and reported down within the bound: silence, then a check without an answer.
    wait_for(lambda: "idle" in seen.restarts, inf.liveness_bound() + 2, "an idle teardown")
    detected = time.monotonic() - hung
    assert SILENCE <= detected <= inf.liveness_bound() + 1.5, detected
    assert checks("unanswered") > unanswered
    code, body = health.evaluate("/readyz")
    assert code == 503 and body.startswith("watches: stale watches: configmaps silent for"), body
    assert "no answer from the API server" in body
    assert scrape(metrics, "operatord_watch_up")["configmaps"] == 0
    idle = scrape(metrics, "operatord_watch_idle_seconds")["configmaps"]
    assert idle > scrape(metrics, "operatord_watch_idle_limit_seconds")["configmaps"]
    wait_for(lambda: time.monotonic() - hung > 8, 10, "an 8 s hang")
    assert not seen.has("during-hang")
    assert watch_readiness() is not None  # still down: reconnects get no answer either

    proxy.recover()
    back = time.monotonic()
    wait_for(lambda: seen.has("during-hang"), 10, "the change made during the hang")
    recovered_in = time.monotonic() - back
    assert recovered_in < CHECK_TIMEOUT_SECONDS + 2, recovered_in
    wait_for(lambda: health.evaluate("/readyz")[0] == 200, 3, "ready again")
    assert scrape(metrics, "operatord_watch_up")["configmaps"] == 1
    direct.create(res, cm("after"), ns)
    wait_for(lambda: seen.has("after"), 5, "events after recovery")


def test_a_dead_connection_to_a_healthy_server_is_found_by_the_check(
    direct, via_proxy, proxy, ns, informers
):
    """The open watch's connection dies (a NAT entry dropped) while the server stays fine:
    the check, on a new connection, gets the event the watch missed."""
    seen = Seen()
    inf = informers(via_proxy, ns, seen, silence_seconds=SILENCE)
    assert inf.synced.wait(10)
    wait_for(lambda: inf._response is not None, 5, "the watch open")
    proxy.hang()
    proxy.recover()  # open connections stay dead, new ones are forwarded
    cut = time.monotonic()
    direct.create(direct.resource("v1", "ConfigMap"), cm("missed"), ns)
    wait_for(lambda: seen.has("missed"), SILENCE + CHECK_WINDOW_SECONDS + 4, "the missed event")
    assert time.monotonic() - cut <= SILENCE + CHECK_WINDOW_SECONDS + 3
    assert "stalled" in seen.restarts
    assert checks("behind") >= 1


def test_a_busy_server_keeps_the_watch_and_readiness(api, direct, ns, informers):
    """429/5xx answers to the check: the server answers, so nothing is torn down."""
    seen = Seen()
    inf = informers(direct, ns, seen, silence_seconds=1.0)
    assert inf.synced.wait(10)
    wait_for(lambda: inf._response is not None, 5, "the watch open")
    busy = checks("busy")
    api.faults.add_error(503, verbs=["watch"], resources=["configmaps"])
    try:
        wait_for(lambda: checks("busy") >= busy + 2, 10, "two checks answered 503")
        assert watch_readiness() is None
        assert seen.restarts == []
    finally:
        api.faults.clear()
    direct.create(direct.resource("v1", "ConfigMap"), cm("busy-after"), ns)
    wait_for(lambda: seen.has("busy-after"), 5, "the watch kept")


def test_reconnect_backoff_resets_as_soon_as_a_refusing_server_answers(
    direct, via_proxy, proxy, ns, informers
):
    seen = Seen()
    inf = informers(via_proxy, ns, seen, backoff_initial=1.0, backoff_max=30.0)
    assert inf.synced.wait(10)
    proxy.refuse()  # resets the open watch; every reconnect is refused
    wait_for(lambda: seen.restarts.count("error") >= 3, 15, "the backoff grows to 4 s and more")
    proxy.recover()
    back = time.monotonic()
    direct.create(direct.resource("v1", "ConfigMap"), cm("after-outage"), ns)
    wait_for(lambda: seen.has("after-outage"), 10, "the change after the outage")
    # The pending backoff (4-8 s by now) is cut short by the first answered probe.
    assert time.monotonic() - back < 3.0


def test_every_request_has_a_read_timeout(api, via_proxy, proxy, ns):
    res = via_proxy.resource("v1", "ConfigMap")
    proxy.hang()
    for call in (
        lambda: via_proxy.request("GET", "/version", timeout=1.0, retry=False),
        lambda: via_proxy.list(res, ns, timeout=1.0, retry=False),
        lambda: via_proxy.watch_window(res, ns, resource_version="1", timeout=1.0),
        lambda: next(iter(via_proxy.watch(res, ns, open_timeout=1.0))),
        lambda: next(iter(via_proxy.watch(res, ns, idle_timeout=1.0))),
    ):
        t0 = time.monotonic()
        with pytest.raises(ApiError) as exc:
            call()
        assert exc.value.status == 0
        assert time.monotonic() - t0 < 3
    default = Kube(ClientSettings(kubeconfig=via_proxy.settings.kubeconfig), max_attempts=1)
    assert default.default_timeout == 30.0  # the bound for requests that do not name one
    default.close()
    lean = HttpClient(f"http://127.0.0.1:{proxy.port}", default_timeout=1.0)
    t0 = time.monotonic()
    with pytest.raises(OSError):
        lean.request("GET", "/version", {}, timeout=None)  # no timeout named: the default
    assert time.monotonic() - t0 < 3
    lean.close()


def test_an_opened_watch_reads_with_its_stream_timeout_not_the_open_timeout(direct, ns):
    """A quiet watch is not cut by the short wait for its answer."""
    res = direct.resource("v1", "ConfigMap")
    t0 = time.monotonic()
    events = list(direct.watch(res, ns, timeout_seconds=3, open_timeout=1.0))
    assert time.monotonic() - t0 >= 2.5  # ended by the server, not by a 1 s read timeout
    assert [e for e in events if e["type"] != "BOOKMARK"] == []


def test_a_failed_request_drops_the_idle_connections_opened_before_it(api, proxy):
    """After a cut, pooled connections are as dead as the one that failed: the next request
    opens a new connection instead of failing on one of them."""
    lean = HttpClient(f"http://127.0.0.1:{proxy.port}")
    try:
        barrier = threading.Barrier(3)

        def fetch() -> None:
            barrier.wait()
            lean.request("GET", "/version", {}, timeout=5)

        threads = [threading.Thread(target=fetch) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(lean._idle) >= 2  # several kept-alive connections
        proxy.hang()
        with pytest.raises(OSError):
            lean.request("GET", "/version", {}, timeout=0.5)
        proxy.recover()
        # a POST is never resent: it gets an answer only on a new connection
        assert lean.request("POST", "/version", {}, b"{}", timeout=2).status >= 200
    finally:
        lean.close()
