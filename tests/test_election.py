"""LeaderElector against the embedded API server over real HTTP.

Durations are short (lease 2s, renew deadline 1.5s, retry 0.2s) and every wait polls a condition
with a deadline.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable

import pytest
from blackhole_proxy import BlackholeProxy

from operatord.election import (
    LeaderElector,
    deadline_fresh,
    default_identity,
    default_namespace,
    rfc3339_micro,
)
from operatord.kube import ApiError, ClientSettings, Kube
from operatord.metrics import Metrics
from operatord.testing import ApiServer
from operatord.testing.waiting import wait_for as _wait_for

LD, RD, RP = 2.0, 1.5, 0.2
SLACK = 0.6  # scheduling and HTTP latency allowance on a loaded CI machine
NS = "default"
MICRO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def wait_for(cond: Callable[[], object], timeout: float = 15.0, what: str = "condition"):
    return _wait_for(cond, timeout, 0.01, what)


def lease_path(name: str) -> str:
    return f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/{name}"


@pytest.fixture(scope="module")
def api():
    with ApiServer() as server:
        yield server


@pytest.fixture
def kube(api):
    k = Kube(ClientSettings(kubeconfig=api.kubeconfig))
    yield k
    k.close()


@pytest.fixture
def lease_name():
    return f"op-{uuid.uuid4().hex[:8]}-leader"


class Candidate:
    """An elector running in a thread, with timestamps of its callbacks."""

    def __init__(self, kube, name: str, identity: str, **kw):
        self.started_at: float | None = None
        self.stopped_at: float | None = None
        self.result: bool | None = None
        self.stop = threading.Event()
        self.elector = LeaderElector(
            kube,
            name=name,
            namespace=NS,
            identity=identity,
            lease_duration=kw.pop("lease_duration", LD),
            renew_deadline=kw.pop("renew_deadline", RD),
            retry_period=kw.pop("retry_period", RP),
            on_started_leading=self._started,
            on_stopped_leading=self._stopped,
            **kw,
        )
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _started(self):
        self.started_at = time.monotonic()

    def _stopped(self):
        self.stopped_at = time.monotonic()

    def _run(self):
        self.result = self.elector.run(self.stop)

    def halt(self, timeout: float = 10) -> None:
        """Stop renewing without releasing (as if the process froze or was killed)."""
        self.stop.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive()


def read_lease(kube, name: str) -> dict:
    return kube.request("GET", lease_path(name))


def test_exactly_one_leads_and_the_standby_takes_over_after_the_lease_expires(kube, lease_name):
    a = Candidate(kube, lease_name, "a")
    b = Candidate(kube, lease_name, "b")
    try:
        wait_for(lambda: a.elector.is_leader or b.elector.is_leader, what="a leader")
        leader, standby = (a, b) if a.elector.is_leader else (b, a)
        # for a few renewal periods, exactly one of them leads
        deadline = time.monotonic() + 5 * RP
        while time.monotonic() < deadline:
            assert leader.elector.is_leader and not standby.elector.is_leader
            assert standby.started_at is None
        lease = read_lease(kube, lease_name)
        assert lease["spec"]["holderIdentity"] == leader.elector.identity
        assert lease["spec"]["leaseTransitions"] == 0
        assert lease["spec"]["leaseDurationSeconds"] == 2
        assert MICRO.match(lease["spec"]["renewTime"]) and MICRO.match(lease["spec"]["acquireTime"])

        leader.halt()
        halted = time.monotonic()
        assert leader.result is True and leader.stopped_at is None  # a stop is not a loss
        wait_for(lambda: standby.started_at, timeout=LD + RP + 5, what="takeover")
        took = standby.started_at - halted
        assert LD - RP - 0.1 <= took <= LD + RP + SLACK, took
        lease = read_lease(kube, lease_name)
        assert lease["spec"]["holderIdentity"] == standby.elector.identity
        assert lease["spec"]["leaseTransitions"] == 1
    finally:
        a.halt()
        b.halt()


def test_release_hands_over_within_a_retry_period(kube, lease_name):
    a = Candidate(kube, lease_name, "a")
    wait_for(lambda: a.elector.is_leader, what="a leads")
    b = Candidate(kube, lease_name, "b")
    try:
        wait_for(lambda: b.elector.holder == "a", what="b sees a")
        a.halt()
        assert a.elector.release() is True
        released = time.monotonic()
        assert a.elector.release() is False  # the holder is no longer us
        wait_for(lambda: b.started_at, timeout=5, what="b takes the released lease")
        assert b.started_at - released <= RP * 1.1 + SLACK
        spec = read_lease(kube, lease_name)["spec"]
        assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 1
    finally:
        a.halt()
        b.halt()


def test_release_clears_the_holder_only_when_we_hold_it(kube, lease_name):
    a = Candidate(kube, lease_name, "a")
    wait_for(lambda: a.elector.is_leader, what="a leads")
    a.halt()
    outsider = LeaderElector(
        kube, name=lease_name, namespace=NS, identity="z", lease_duration=LD,
        renew_deadline=RD, retry_period=RP,
    )  # fmt: skip
    assert outsider.release() is False
    assert read_lease(kube, lease_name)["spec"]["holderIdentity"] == "a"
    assert a.elector.release() is True
    spec = read_lease(kube, lease_name)["spec"]
    assert spec["holderIdentity"] == ""
    assert spec["leaseDurationSeconds"] == 1
    assert spec["leaseTransitions"] == 0
    assert MICRO.match(spec["renewTime"])


def test_a_forged_lease_that_is_never_renewed_is_taken_over(kube, lease_name):
    # Another host's lease, with a wall-clock renewTime far in the future: it must not matter.
    kube.request(
        "POST",
        f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases",
        body={
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": lease_name, "namespace": NS},
            "spec": {
                "holderIdentity": "ghost",
                "leaseDurationSeconds": 2,
                "acquireTime": "2099-01-01T00:00:00.000000Z",
                "renewTime": "2099-01-01T00:00:00.000000Z",
                "leaseTransitions": 5,
            },
        },
    )
    began = time.monotonic()
    a = Candidate(kube, lease_name, "a")
    try:
        wait_for(lambda: a.elector.holder == "ghost", what="a observes the ghost")
        wait_for(lambda: a.started_at, timeout=LD + 5, what="takeover of the ghost's lease")
        assert 2 - 0.05 <= a.started_at - began <= 2 + RP + SLACK
        spec = read_lease(kube, lease_name)["spec"]
        assert spec["holderIdentity"] == "a"
        assert spec["leaseTransitions"] == 6
        assert spec["acquireTime"] != "2099-01-01T00:00:00.000000Z"
    finally:
        a.halt()


def test_a_standby_wakes_when_the_observed_lease_expires_not_at_its_next_poll(kube, lease_name):
    # With a 0.9s retry period, polls fall at ~0.9s and ~1.8s after the first read, then ~2.7s:
    # only a wake-up scheduled at the expiry (2s after observing) takes over close to 2s.
    kube.request(
        "POST",
        f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases",
        body={
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": lease_name, "namespace": NS},
            "spec": {"holderIdentity": "ghost", "leaseDurationSeconds": 2},
        },
    )
    began = time.monotonic()
    a = Candidate(kube, lease_name, "a", retry_period=0.9)
    try:
        wait_for(lambda: a.started_at, timeout=10, what="takeover")
        assert 2 - 0.05 <= a.started_at - began <= 2 + 0.35
    finally:
        a.halt()


def test_a_lease_renewed_by_its_holder_is_never_taken(kube, lease_name):
    holder = Candidate(kube, lease_name, "holder")
    wait_for(lambda: holder.elector.is_leader, what="holder leads")
    rival = Candidate(kube, lease_name, "rival")
    try:
        deadline = time.monotonic() + 2 * LD  # two full lease durations
        while time.monotonic() < deadline:
            assert rival.started_at is None
            assert holder.elector.is_leader
            time.sleep(0.02)  # poll the invariant until the deadline
        assert read_lease(kube, lease_name)["spec"]["leaseTransitions"] == 0
    finally:
        holder.halt()
        rival.halt()


class ConcurrentWriter:
    """Passes requests through to a real Kube; before the elector's first PUT, another client
    really updates the lease, so that PUT meets a genuine 409 from the server."""

    def __init__(self, kube: Kube):
        self.kube = kube
        self.conflicts_made = 0
        self.armed = True

    def request(self, method, path, **kw):
        if method == "PUT" and self.armed:
            self.armed = False
            lease = self.kube.request("GET", path)
            lease["metadata"].setdefault("labels", {})["touched-by"] = "someone-else"
            self.kube.request("PUT", path, body=lease)
            self.conflicts_made += 1
        return self.kube.request(method, path, **kw)


def test_a_conflict_is_resolved_by_re_reading(kube, lease_name):
    a = LeaderElector(
        kube, name=lease_name, namespace=NS, identity="a", lease_duration=LD,
        renew_deadline=RD, retry_period=RP,
    )  # fmt: skip
    assert a.try_acquire_or_renew()  # creates the lease
    before = read_lease(kube, lease_name)
    racing = ConcurrentWriter(kube)
    a.kube = racing
    assert a.try_acquire_or_renew() is True  # the renewal PUT got a 409, re-read, renewed
    assert racing.conflicts_made == 1
    after = read_lease(kube, lease_name)
    assert after["metadata"]["labels"]["touched-by"] == "someone-else"  # not overwritten
    assert after["spec"]["renewTime"] != before["spec"]["renewTime"]
    assert after["spec"]["holderIdentity"] == "a"
    with pytest.raises(ApiError) as err:  # a stale resourceVersion really conflicts
        kube.request("PUT", lease_path(lease_name), body=before)
    assert err.value.status == 409


def test_the_leader_stops_at_once_when_someone_else_holds_the_lease(kube, lease_name):
    metrics = Metrics()
    a = Candidate(kube, lease_name, "a", metrics=metrics)
    try:
        wait_for(lambda: a.elector.is_leader, what="a leads")
        assert b"operatord_leader 1.0" in metrics.render()
        assert b"operatord_leader_transitions_total 1.0" in metrics.render()
        # another writer takes the lease (retrying on a conflict with a's renewals)
        wait_for(lambda: _overwrite_holder(kube, lease_name, "usurper"), what="usurp")
        usurped = time.monotonic()
        wait_for(lambda: a.stopped_at, timeout=5, what="on_stopped_leading")
        assert a.stopped_at - usurped <= RP * 2 + SLACK
        a.thread.join(5)
        assert a.result is False
        assert not a.elector.is_leader
        assert "usurper" in a.elector.liveness()
        assert b"operatord_leader 0.0" in metrics.render()
        assert read_lease(kube, lease_name)["spec"]["holderIdentity"] == "usurper"
        assert a.elector.release() is False  # never clears someone else's lease
    finally:
        a.halt()


def _overwrite_holder(kube, name: str, holder: str) -> bool:
    lease = read_lease(kube, name)
    lease["spec"]["holderIdentity"] = holder
    lease["spec"]["renewTime"] = rfc3339_micro()
    try:
        kube.request("PUT", lease_path(name), body=lease)
    except ApiError as exc:
        if exc.status == 409:
            return False
        raise
    return True


def test_the_leader_gives_up_when_renewals_fail_past_the_deadline(lease_name):
    server = ApiServer()
    server.__enter__()
    stopped = False
    try:
        k = Kube(ClientSettings(kubeconfig=server.kubeconfig), default_timeout=1.0)
        a = Candidate(k, lease_name, "a")
        wait_for(lambda: a.elector.is_leader, what="a leads")
        assert a.elector.liveness() is None
        server.__exit__(None, None, None)  # the API server goes away: every renewal fails
        stopped = True
        wait_for(lambda: a.stopped_at, timeout=RD + 5, what="on_stopped_leading")
        last = a.elector.last_renewal
        assert a.stopped_at - last <= RD + SLACK
        assert a.stopped_at - last >= RD - 0.05
        assert not a.elector.is_leader
        assert "leadership lost" in a.elector.liveness()
        a.halt()
        assert a.result is False
    finally:
        if not stopped:
            server.__exit__(None, None, None)


@pytest.fixture
def own_api():
    """A private API server for tests that inject faults."""
    with ApiServer() as server:
        yield server


def test_the_watchdog_gives_up_on_time_while_a_renewal_hangs(own_api, lease_name):
    k = Kube(ClientSettings(kubeconfig=own_api.kubeconfig))
    a = Candidate(k, lease_name, "a")
    try:
        wait_for(lambda: a.elector.is_leader, what="a leads")
        own_api.faults.set_latency(10.0)  # every request now hangs far past the deadline
        wait_for(lambda: a.stopped_at, timeout=RD + 5, what="on_stopped_leading")
        assert RD - 0.05 <= a.stopped_at - a.elector.last_renewal <= RD + SLACK
        assert not a.elector.is_leader
    finally:
        own_api.faults.set_latency(0.0)
        a.halt()


def test_failures_shorter_than_the_renew_deadline_are_ridden_out(own_api, lease_name):
    k = Kube(ClientSettings(kubeconfig=own_api.kubeconfig))
    a = Candidate(k, lease_name, "a")
    try:
        wait_for(lambda: a.elector.is_leader, what="a leads")
        own_api.faults.add_error(500, resources=["leases"], count=3)  # ~3 retry periods
        wait_for(lambda: own_api.faults.get()["errors"][0]["count"] == 0, what="faults used")
        renewed_after = time.monotonic()
        wait_for(lambda: a.elector.last_renewal > renewed_after, what="a renewal after faults")
        assert a.stopped_at is None and a.elector.is_leader
        own_api.faults.add_error(500, resources=["leases"])  # now they never stop
        wait_for(lambda: a.stopped_at, timeout=RD + 5, what="on_stopped_leading")
        assert a.stopped_at - a.elector.last_renewal <= RD + SLACK
    finally:
        a.halt()


def test_on_started_leading_failure_gives_up_leadership(kube, lease_name):
    def boom():
        raise RuntimeError("controller failed to start")

    lost = threading.Event()
    el = LeaderElector(
        kube, name=lease_name, namespace=NS, identity="a", lease_duration=LD,
        renew_deadline=RD, retry_period=RP, on_started_leading=boom,
        on_stopped_leading=lost.set,
    )  # fmt: skip
    assert el.run(threading.Event()) is False
    assert lost.is_set() and "controller failed to start" in el.lost_reason


def test_settings_are_validated_and_identity_is_unique():
    with pytest.raises(ValueError):
        LeaderElector(None, name="x", namespace="d", identity="i", lease_duration=1,
                      renew_deadline=2, retry_period=0.1)  # fmt: skip
    with pytest.raises(ValueError):
        LeaderElector(None, name="x", namespace="d", identity="i", lease_duration=15,
                      renew_deadline=2, retry_period=2)  # fmt: skip
    a, b = default_identity(), default_identity()
    assert a != b and re.match(r"^.+_[0-9a-f]{12}$", a)
    assert MICRO.match(rfc3339_micro())


def test_default_namespace_prefers_the_pod_namespace(monkeypatch):
    monkeypatch.setenv("POD_NAMESPACE", "operators")
    assert default_namespace() == "operators"
    monkeypatch.delenv("POD_NAMESPACE")
    monkeypatch.setattr("operatord.election._SERVICE_ACCOUNT_NAMESPACE", "/nonexistent/ns")
    assert default_namespace() == "default"


# -- freshness: the deadline every dispatch and worker write checks ----------------------------


def test_freshness_is_the_last_renewal_sent_plus_the_renew_deadline(own_api, lease_name):
    k = Kube(ClientSettings(kubeconfig=own_api.kubeconfig))
    idle = LeaderElector(
        k, name=lease_name, namespace=NS, identity="idle", lease_duration=LD,
        renew_deadline=RD, retry_period=RP,
    )  # fmt: skip
    assert not idle.is_fresh() and idle.lease_valid_until() == 0.0  # never led
    a = Candidate(k, lease_name, "a")
    try:
        wait_for(lambda: a.elector.is_leader, what="a leads")
        assert a.elector.is_fresh()
        assert deadline_fresh(a.elector.lease_valid_until())
        # Renewals move the deadline forward, always to last_renewal + renew_deadline.
        first = a.elector.lease_valid_until()
        wait_for(lambda: a.elector.lease_valid_until() > first, what="a renewal")
        with a.elector._lock:  # both move together under the lock at each renewal
            valid_until, last = a.elector.lease_valid_until(), a.elector.last_renewal
        assert valid_until == last + RD
        assert valid_until - time.monotonic() <= RD
    finally:
        a.halt()
    # A stopped elector is not fresh, even though its last renewal is recent.
    assert not a.elector.is_fresh() and a.elector.lease_valid_until() == 0.0


def test_freshness_is_lost_at_the_deadline_while_renewals_fail(own_api, lease_name):
    k = Kube(ClientSettings(kubeconfig=own_api.kubeconfig))
    stale_at: list[float] = []

    def sample(stop: threading.Event) -> None:
        # A worker-like thread that only ever calls is_fresh(): it must see the loss itself.
        while not stop.is_set():
            if not a.elector.is_fresh():
                stale_at.append(time.monotonic())
                return
            stop.wait(0.002)  # sampling period of the observer, not a wait for a condition

    a = Candidate(k, lease_name, "a")
    stop = threading.Event()
    try:
        wait_for(lambda: a.elector.is_leader, what="a leads")
        sampler = threading.Thread(target=sample, args=(stop,), daemon=True)
        sampler.start()
        own_api.faults.add_error(500, resources=["leases"])  # renewals fail from now on
        wait_for(lambda: stale_at, timeout=RD + 5, what="freshness lost")
        valid_until = a.elector.last_renewal + RD
        # Not a moment early, and not waiting for a poll: within a few ms of the deadline.
        assert valid_until <= stale_at[0] <= valid_until + 0.25, (stale_at[0], valid_until)
        assert not deadline_fresh(valid_until)
        wait_for(lambda: a.stopped_at, timeout=5, what="on_stopped_leading")
    finally:
        stop.set()
        own_api.faults.clear()
        a.halt()


def test_freshness_is_lost_while_a_renewal_hangs(own_api, lease_name):
    k = Kube(ClientSettings(kubeconfig=own_api.kubeconfig))
    a = Candidate(k, lease_name, "a")
    try:
        wait_for(lambda: a.elector.is_leader, what="a leads")
        own_api.faults.set_latency(10.0)  # the renewal request is on the wire, unanswered
        hung_at = time.monotonic()
        wait_for(lambda: not a.elector.is_fresh(), timeout=RD + 2, what="freshness lost")
        assert time.monotonic() - hung_at <= RD + SLACK
        assert a.elector.lease_valid_until() <= a.elector.last_renewal + RD
    finally:
        own_api.faults.set_latency(0.0)
        a.halt()


def test_a_renewal_is_dated_when_its_write_was_sent_not_when_it_was_answered(own_api, lease_name):
    k = Kube(ClientSettings(kubeconfig=own_api.kubeconfig))
    elector = LeaderElector(
        k,
        name=lease_name,
        namespace=NS,
        identity="a",
        lease_duration=LD,
        renew_deadline=RD,
        retry_period=RP,
    )
    assert elector.try_acquire_or_renew()
    latency = 0.4
    own_api.faults.set_latency(latency)  # each request (GET, then PUT) is answered 0.4 s late
    try:
        assert elector.try_acquire_or_renew()
        answered = time.monotonic()
    finally:
        own_api.faults.set_latency(0.0)
    # The PUT was sent before its 0.4 s wait; the answer's arrival must not extend the lease.
    assert elector.last_renewal <= answered - latency + 0.05


def ghost_lease(kube, name: str, duration: int) -> None:
    """A lease held by "ghost", who never renews it."""
    kube.request(
        "POST",
        f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases",
        body={
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"holderIdentity": "ghost", "leaseDurationSeconds": duration},
        },
    )


def test_a_lease_request_on_a_dead_connection_costs_half_the_renew_deadline(
    api, lease_name, tmp_path
):
    # The default timings (15/10/2): one request into a connection that went silent gives up
    # after 5 s, not 10, and the next one goes out on a fresh connection.
    proxy = BlackholeProxy(api.port)
    k = Kube(ClientSettings(kubeconfig=proxy.kubeconfig(api.kubeconfig, tmp_path / "kc")))
    le = LeaderElector(
        k,
        name=lease_name,
        namespace=NS,
        identity="a",
        lease_duration=15,
        renew_deadline=10,
        retry_period=2,
    )
    try:
        assert le.request_timeout == 5.0
        assert le.try_acquire_or_renew()
        proxy.hang()
        began = time.monotonic()
        assert not le.try_acquire_or_renew()
        assert 5.0 - 0.05 <= time.monotonic() - began <= 5.0 + SLACK
        proxy.recover()
        began = time.monotonic()
        assert le.try_acquire_or_renew()
        assert time.monotonic() - began < 1.0
    finally:
        k.close()
        proxy.close()


def test_request_timeouts_stay_below_the_renew_deadline():
    def timeout(duration: float, deadline: float, retry: float) -> float:
        return LeaderElector(
            None,
            name="x",
            namespace=NS,
            identity="i",
            lease_duration=duration,
            renew_deadline=deadline,
            retry_period=retry,
        ).request_timeout

    assert timeout(15, 10, 2) == 5.0
    assert timeout(4, 3, 1) == 1.5
    assert timeout(1, 0.8, 0.5) == 0.5  # never below 0.5 s


def test_a_standby_whose_poll_hung_at_the_expiry_takes_over_half_a_renew_deadline_late(
    api, kube, lease_name, tmp_path
):
    # Lease 4 s, renew deadline 3 s, retry 1 s: request timeout 1.5 s. The path to the API
    # server swallows traffic from 3.3 s to 4.2 s after the ghost's lease was observed, so the
    # standby's poll at the expiry (4 s) goes into a connection that stays dead. It times out
    # at 5.5 s and the next poll (a retry period later) takes the lease: about 6.6 s. With the
    # renew deadline as the timeout it would hang until 7 s and take over at about 8.1 s.
    ghost_lease(kube, lease_name, 4)
    proxy = BlackholeProxy(api.port)
    k = Kube(ClientSettings(kubeconfig=proxy.kubeconfig(api.kubeconfig, tmp_path / "kc")))
    began = time.monotonic()
    b = Candidate(k, lease_name, "b", lease_duration=4, renew_deadline=3, retry_period=1)
    try:
        wait_for(lambda: b.elector.holder == "ghost", what="b observes the ghost")
        wait_for(lambda: time.monotonic() - began >= 3.3, timeout=5, what="3.3 s")
        proxy.hang()
        wait_for(lambda: time.monotonic() - began >= 4.2, timeout=5, what="4.2 s")
        proxy.recover()
        wait_for(lambda: b.started_at, timeout=10, what="takeover")
        assert 4 - 0.05 <= b.started_at - began <= 4 + 1.5 + 1.1 + SLACK
    finally:
        b.halt()
        k.close()
        proxy.close()


def test_a_watching_standby_sees_each_renewal_when_it_is_made(kube, lease_name):
    # The ghost renews every 0.3 s, then stops. A standby polling every 1 s notices the last
    # renewal up to 1.1 s late and takes over up to 3.1 s after it; one that watches the lease
    # takes over 2 s (the lease duration) after it.
    ghost_lease(kube, lease_name, 2)
    b = Candidate(kube, lease_name, "b", retry_period=1.0, watch=True)
    try:
        wait_for(lambda: b.elector.holder == "ghost", what="b observes the ghost")
        last = time.monotonic()
        for _ in range(8):
            due = last + 0.3
            wait_for(lambda due=due: time.monotonic() >= due, what="0.3 s")
            lease = read_lease(kube, lease_name)
            lease["spec"]["renewTime"] = rfc3339_micro()
            last = time.monotonic()
            kube.request("PUT", lease_path(lease_name), body=lease)
            assert b.started_at is None
        wait_for(lambda: b.started_at, timeout=10, what="takeover")
        assert 2 - 0.05 <= b.started_at - last <= 2 + 0.35
    finally:
        b.halt()
