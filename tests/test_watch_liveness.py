"""Watch liveness against a hung or refusing API server: the informer through a TCP proxy on
127.0.0.1 (tests/blackhole_proxy.py) to the embedded API server, over real HTTP.

The test process writes to the API server directly; only the informer goes through the proxy.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from blackhole_proxy import BlackholeProxy
from prometheus_client.parser import text_string_to_metric_families

from operatord.health import HealthServer
from operatord.informer import IDLE_CEILING_SECONDS, IDLE_FLOOR_SECONDS, Informer, watch_readiness
from operatord.kube import ApiError, ClientSettings, Kube
from operatord.metrics import Metrics
from operatord.testing import ApiServer
from operatord.testing.waiting import wait_for as _wait_for


def wait_for(predicate, timeout: float = 10.0, message: str = ""):
    return _wait_for(predicate, timeout, 0.02, message)


@pytest.fixture(scope="module")
def api():
    with ApiServer(bookmark_interval=1.0) as server:  # the default: a bookmark per idle second
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


def scrape(metrics: Metrics, name: str) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            if sample.name == name:
                out[sample.labels["resource"]] = sample.value
    return out


def test_the_liveness_bound_is_twice_the_bookmark_spacing_within_floor_and_ceiling(
    direct, ns, informers
):
    slow = ApiServer(bookmark_interval=4.0)
    with slow:
        k = Kube(ClientSettings(kubeconfig=slow.kubeconfig))
        try:
            k.create(k.resource("v1", "Namespace"), {"metadata": {"name": ns}})
            inf = informers(k, ns, Seen())
            assert inf.synced.wait(10)
            assert inf.liveness_bound() == IDLE_CEILING_SECONDS  # no bookmark seen yet
            wait_for(lambda: inf.bookmark_spacing is not None, 10, "a bookmark")
            assert 8.0 <= inf.liveness_bound() <= 10.0, inf.liveness_bound()
        finally:
            k.close()
    fast = informers(direct, ns, Seen())  # bookmarks every second: 2 s, raised to the floor
    wait_for(lambda: fast.bookmark_spacing is not None, 10, "a bookmark")
    assert fast.liveness_bound() == IDLE_FLOOR_SECONDS


def test_a_hung_server_is_detected_reported_and_recovered_from(
    direct, via_proxy, proxy, ns, informers
):
    seen = Seen()
    inf = informers(via_proxy, ns, seen)
    assert inf.synced.wait(10)
    wait_for(lambda: inf.bookmark_spacing is not None, 10, "a bookmark")
    bound = inf.liveness_bound()
    assert bound == IDLE_FLOOR_SECONDS
    health = HealthServer(0)
    metrics = Metrics()
    res = direct.resource("v1", "ConfigMap")
    assert health.evaluate("/readyz") == (200, "ok\n")

    proxy.hang()
    hung = time.monotonic()
    direct.create(res, cm("during-hang"), ns)
    # Torn down, reported stale and not ready after the bound (not after 330 s).
    wait_for(lambda: "idle" in seen.restarts, bound + 3, "an idle teardown")
    assert time.monotonic() - hung >= bound - 1.1  # the last bookmark came <= 1 s before
    wait_for(lambda: watch_readiness() is not None, 3, "stale watches")
    code, body = health.evaluate("/readyz")
    assert code == 503 and body.startswith("watches: stale watches: configmaps silent for"), body
    idle = scrape(metrics, "operatord_watch_idle_seconds")["configmaps"]
    assert idle > scrape(metrics, "operatord_watch_idle_limit_seconds")["configmaps"] == bound
    wait_for(lambda: time.monotonic() - hung > 8, 10, "an 8 s hang")
    assert not seen.has("during-hang")

    proxy.recover()
    back = time.monotonic()
    wait_for(lambda: seen.has("during-hang"), 10, "the change made during the hang")
    recovered_in = time.monotonic() - back
    assert recovered_in < bound + 3, recovered_in
    wait_for(lambda: health.evaluate("/readyz")[0] == 200, 3, "ready again")
    assert scrape(metrics, "operatord_watch_idle_seconds")["configmaps"] < bound
    direct.create(res, cm("after"), ns)
    wait_for(lambda: seen.has("after"), 5, "events after recovery")


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
    ):
        t0 = time.monotonic()
        with pytest.raises(ApiError) as exc:
            call()
        assert exc.value.status == 0
        assert time.monotonic() - t0 < 3
    stream = via_proxy.watch(res, ns, idle_timeout=1.0)
    t0 = time.monotonic()
    with pytest.raises(ApiError):
        next(iter(stream))
    assert time.monotonic() - t0 < 3
    default = Kube(ClientSettings(kubeconfig=via_proxy.settings.kubeconfig), max_attempts=1)
    assert default.default_timeout == 30.0  # the bound for requests that do not name one
    default.close()
