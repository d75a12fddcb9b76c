"""The echo of a worker's write never re-queues its parent, whatever the order in which the
informer thread (store the event, route it) and the dispatcher thread (store the result's
writes, release the parent) interleave. Driven through the daemon's real event handlers."""

from __future__ import annotations

import threading

import pytest

from operatord import protocol
from operatord.config import Config
from operatord.kube import ClientSettings
from operatord.manager import Manager
from operatord.metrics import Metrics
from operatord.protocol import SyncResult
from operatord.testing import ApiServer

DEADLINE = 10.0


@pytest.fixture(scope="module")
def api():
    with ApiServer() as server:
        yield server


@pytest.fixture
def manager(api):
    config = Config.from_dict(
        {
            "name": "echo",
            "handler": "m:f",
            "parent": {"apiVersion": "example.com/v1", "kind": "Widget"},
            "children": [{"apiVersion": "v1", "kind": "ConfigMap"}],
            "leaderElection": {"enabled": False},
            "workers": 1,
        }
    )
    mgr = Manager(config, ClientSettings(kubeconfig=api.kubeconfig), Metrics(controller="echo"))
    yield mgr
    mgr.kube.close()


class WatchedLock:
    """A lock that sets ``contended`` when a second thread starts waiting for it."""

    def __init__(self, contended: threading.Event) -> None:
        self.lock = threading.Lock()
        self.contended = contended

    def __enter__(self):
        if not self.lock.acquire(blocking=False):
            self.contended.set()
            self.lock.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.lock.release()


def widget(rv: str, status: dict | None = None) -> dict:
    return {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w", "namespace": "ns", "uid": "u-w", "resourceVersion": rv},
        "spec": {"size": 1},
        "status": status or {},
    }


def configmap(rv: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "w",
            "namespace": "ns",
            "resourceVersion": rv,
            "labels": {"operatord.io/parent-uid": "u-w"},
        },
    }


def in_flight(mgr: Manager):
    """The one controller with parent ``w`` cached and handed out to a worker."""
    ctl = mgr.controllers[0]
    mgr.cache.upsert_parent(widget("1"))
    ctl.enqueue("u-w")
    item = ctl.queue(0).get(timeout=0)
    assert item is not None and item.key == "u-w"
    task = ctl.task("u-w", 0)
    assert task is not None
    return ctl, task.parent


def race(mgr: Manager, deliver, complete) -> None:
    """The informer thread has stored the echo but not routed it yet when the result arrives;
    it routes it once the result's thread is done or is waiting for it."""
    moved_on = threading.Event()  # the result's thread finished, or waits for the lock
    lock = WatchedLock(moved_on)
    mgr._observing = lock
    for ctl in mgr.controllers:
        ctl.observing = lock
    stored = threading.Event()
    real_route = mgr._route
    real_enqueue = mgr.controllers[0].enqueue

    def hold_then(route, *args, **kw):
        stored.set()
        assert moved_on.wait(DEADLINE), "the result's thread neither finished nor waited"
        return route(*args, **kw)

    mgr._route = lambda *a, **kw: hold_then(real_route, *a, **kw)
    mgr.controllers[0].enqueue = lambda *a, **kw: hold_then(real_enqueue, *a, **kw)
    informer = threading.Thread(target=deliver)
    informer.start()
    assert stored.wait(DEADLINE)

    def result() -> None:
        complete()
        moved_on.set()

    dispatcher = threading.Thread(target=result)
    dispatcher.start()
    informer.join(DEADLINE)
    dispatcher.join(DEADLINE)
    assert not informer.is_alive() and not dispatcher.is_alive()


def complete(ctl, snapshot: dict, written: dict):
    """The worker's result for ``w``: synced, having written ``written``."""
    result = SyncResult(
        uid="u-w", outcome=protocol.OK, written=({"action": "upsert", "object": written},)
    )
    return lambda: ctl.completed(result, snapshot, 0)


def test_the_echo_of_a_status_write_does_not_resync(manager):
    ctl, snapshot = in_flight(manager)
    written = widget("2", {"ok": True})
    race(
        manager,
        lambda: manager._on_parent_event(ctl, "MODIFIED", dict(written)),
        complete(ctl, snapshot, written),
    )
    assert not ctl.in_flight("u-w")
    assert ctl.queue(0).get(timeout=0) is None, "the echo of our own status write re-synced"


def test_the_echo_of_a_child_write_does_not_resync(manager):
    ctl, snapshot = in_flight(manager)
    written = configmap("3")
    race(
        manager,
        lambda: manager._on_child_event("ADDED", dict(written)),
        complete(ctl, snapshot, written),
    )
    assert ctl.queue(0).get(timeout=0) is None, "the echo of our own child write re-synced"


def test_a_foreign_change_during_the_race_still_resyncs(manager):
    ctl, snapshot = in_flight(manager)
    written = widget("2", {"ok": True})
    foreign = widget("3", {"ok": True})
    foreign["spec"] = {"size": 2}
    race(
        manager,
        lambda: manager._on_parent_event(ctl, "MODIFIED", foreign),
        complete(ctl, snapshot, written),
    )
    item = ctl.queue(0).get(timeout=0)
    assert item is not None and item.key == "u-w", "a change by someone else must be synced"
