"""ShardLeases (replica shards held through Leases) against the embedded API server over HTTP.

Short durations (lease 2 s, renew deadline 1.5 s, retry 0.25 s); every wait polls a condition
with a deadline.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

import pytest

from operatord.config import Config
from operatord.election import LeaderElector
from operatord.kube import ClientSettings, Kube
from operatord.shardleases import ShardLeases, member_lease_name
from operatord.testing import ApiServer
from operatord.testing.waiting import wait_for as _wait_for

LD, RD, RP = 2.0, 1.5, 0.25


def wait_for(cond: Callable[[], object], timeout: float = 20.0, what: str = "condition"):
    return _wait_for(cond, timeout, 0.02, what)


@pytest.fixture(scope="module")
def api():
    with ApiServer() as server:
        yield server


@pytest.fixture
def name():
    return f"op-{uuid.uuid4().hex[:8]}"


def config(name: str, shards: int) -> Config:
    return Config.from_dict(
        {
            "name": name,
            "handler": "m:h",
            "parent": {"apiVersion": "v1", "kind": "ConfigMap"},
            "leaderElection": {
                "leaseDurationSeconds": LD,
                "renewDeadlineSeconds": RD,
                "retryPeriodSeconds": RP,
            },
            "sharding": {"shards": shards},
        }
    )


class Replica:
    """A ShardLeases loop with recording callbacks; `drain_ok` decides what draining returns."""

    def __init__(self, api, name: str, shards: int, identity: str):
        self.kube = Kube(ClientSettings(kubeconfig=api.kubeconfig))
        self.owned: set[int] = set()
        self.events: list[tuple[str, int]] = []
        self.drain_ok = True
        self.drained: list[int] = []
        self.leases = ShardLeases(
            self.kube,
            config(name, shards),
            namespace="default",
            identity=identity,
            on_acquired=lambda k: self._note("acquired", k),
            on_lost=lambda k: self._note("lost", k),
            on_released=lambda k: self._note("released", k),
            drain=self._drain,
        )
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.leases.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def _note(self, what: str, k: int) -> None:
        self.events.append((what, k))
        if what == "acquired":
            self.owned.add(k)
        else:
            self.owned.discard(k)

    def _drain(self, k: int) -> bool:
        self.drained.append(k)
        return self.drain_ok

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.leases.shutdown()
        self.kube.close()


@pytest.fixture
def replicas(api, name):
    started: list[Replica] = []

    def start(shards: int, identity: str) -> Replica:
        r = Replica(api, name, shards, identity)
        started.append(r)
        return r

    yield start
    for r in started:
        r.close()


def holders(api, name: str, shards: int) -> list[str]:
    kube = Kube(ClientSettings(kubeconfig=api.kubeconfig))
    try:
        out = []
        for k in range(shards):
            lease = kube.request(
                "GET", f"/apis/coordination.k8s.io/v1/namespaces/default/leases/{name}-shard-{k}"
            )
            out.append(lease["spec"].get("holderIdentity") or "")
        return out
    finally:
        kube.close()


def test_one_replica_takes_every_shard_and_its_fences(replicas, api, name):
    a = replicas(4, "a")
    wait_for(lambda: a.owned == {0, 1, 2, 3}, what="all shards held")
    assert holders(api, name, 4) == ["a"] * 4
    now = time.monotonic()
    for k in range(4):
        assert now < a.leases.valid_until(k) <= now + RD
    assert a.leases.held() == {0, 1, 2, 3}


def test_a_second_replica_gets_its_fair_share_by_voluntary_release_after_drain(replicas, api, name):
    a = replicas(4, "a")
    wait_for(lambda: len(a.owned) == 4, what="a holds everything")
    b = replicas(4, "b")
    wait_for(lambda: len(a.owned) == 2 and len(b.owned) == 2, what="2 + 2")
    assert sorted(holders(api, name, 4)) == ["a", "a", "b", "b"]
    released = [k for what, k in a.events if what == "released"]
    assert sorted(released) == sorted(a.drained) and len(released) == 2
    assert not [e for e in a.events + b.events if e[0] == "lost"]
    # Once released, a's fence of those shards is gone.
    for k in released:
        assert a.leases.valid_until(k) == 0.0
    assert a.leases.live_replicas == 2 and a.leases.share == 2


def test_a_shard_that_does_not_drain_is_kept(replicas, api, name):
    a = replicas(2, "a")
    wait_for(lambda: len(a.owned) == 2, what="a holds both")
    a.drain_ok = False
    b = replicas(2, "b")
    wait_for(lambda: len(a.drained) >= 2, what="a tried to drain twice")
    assert a.owned == {0, 1} and not b.owned
    assert holders(api, name, 2) == ["a", "a"]
    assert time.monotonic() < min(a.leases.valid_until(k) for k in (0, 1))
    a.drain_ok = True
    wait_for(lambda: len(a.owned) == 1 and len(b.owned) == 1, what="1 + 1 after the drain")


def test_the_shards_of_a_replica_that_stops_renewing_are_taken_within_the_lease(
    replicas, api, name
):
    a = replicas(4, "a")
    b = replicas(4, "b")
    wait_for(lambda: len(a.owned) == 2 and len(b.owned) == 2, what="2 + 2")
    # b's process "dies": its loop and renewals stop, nothing is released.
    b.stop.set()
    b.thread.join(5)
    for sh in b.leases.shards:
        sh.stop.set()
    for sh in b.leases.shards:
        if sh.thread is not None:
            sh.thread.join(5)
    last_renewal = time.monotonic()
    wait_for(lambda: len(a.owned) == 4, what="a took b's shards")
    assert time.monotonic() - last_renewal <= LD + RP + 1.0
    assert holders(api, name, 4) == ["a"] * 4


def test_membership_counts_live_replicas_only(replicas, api, name):
    a = replicas(3, "a")
    b = replicas(3, "b")
    wait_for(lambda: a.leases.live_replicas == 2, what="a counts b")
    b.close()  # releases its membership lease
    wait_for(lambda: a.leases.live_replicas == 1, what="a counts itself only")
    wait_for(lambda: len(a.owned) == 3, what="a holds everything again")


def test_member_lease_names_are_valid_and_stable():
    assert member_lease_name("op", "host_1a2b") == member_lease_name("op", "host_1a2b")
    assert member_lease_name("op", "host_1a2b").startswith("op-replica-")
    assert "_" not in member_lease_name("op", "host_1a2b")


def test_an_elector_fed_by_a_list_expires_the_lease_from_the_first_observation(api, name):
    kube = Kube(ClientSettings(kubeconfig=api.kubeconfig))
    try:
        holder = LeaderElector(
            kube,
            name=name,
            namespace="default",
            identity="h",
            lease_duration=LD,
            renew_deadline=RD,
            retry_period=RP,
        )
        assert holder.try_acquire_or_renew()
        other = LeaderElector(
            kube,
            name=name,
            namespace="default",
            identity="o",
            lease_duration=LD,
            renew_deadline=RD,
            retry_period=RP,
        )
        assert other.available() and other.expires_in() is None  # never observed
        lease = kube.request(
            "GET", f"/apis/coordination.k8s.io/v1/namespaces/default/leases/{name}"
        )
        other.observe(lease)
        assert not other.available()
        assert 0 < other.expires_in() <= LD
        wait_for(other.available, LD + 1, "expired")
        assert other.try_acquire_or_renew()
    finally:
        kube.close()
