"""A worker's in-flight limit follows the latency of its API requests (inFlightAdaptive)."""

from __future__ import annotations

import concurrent.futures

import pytest
from conftest import wait_for
from kubernetes import client
from widgets import create_widget, get_widget


def synced(kube, ns: str, name: str) -> bool:
    """The parent's current generation has been synced to ready."""
    obj = get_widget(kube, ns, name) or {}
    status = obj.get("status") or {}
    return bool(status.get("ready")) and any(
        c.get("type") == "Ready"
        and c.get("status") == "True"
        and c.get("observedGeneration") == obj["metadata"]["generation"]
        for c in status.get("conditions") or []
    )


def resize(kube, ns: str, name: str, size: int) -> None:
    client.CustomObjectsApi(kube).patch_namespaced_custom_object(
        "example.com", "v1", ns, "widgets", name, {"spec": {"size": size}}
    )


@pytest.mark.parametrize("adaptive", [True, False])
def test_requests_that_slow_down_shrink_the_limit_unless_it_is_fixed(
    operator, api, kube, ns, adaptive
):
    op = operator(namespace=ns, workers=1, inFlightPerWorker=16, inFlightAdaptive=adaptive)
    names = [f"w{i}" for i in range(80)]
    for name in names:  # an unloaded server: the requests' base latency is about a millisecond
        create_widget(kube, ns, name, size=1)
    for name in names:
        wait_for(lambda name=name: synced(kube, ns, name), 60, message=f"{name} synced")
    # Every request now takes 100 ms more: to the limit, requests queueing in the server.
    api.faults.set_latency(0.1)
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda name: resize(kube, ns, name, 2), names))
        for name in names:
            wait_for(lambda name=name: synced(kube, ns, name), 120, message=f"{name} resynced")
        limit = op.metric("operatord_in_flight_limit", worker="0")
    finally:
        api.faults.set_latency(0.0)
    if adaptive:  # about 1 ms against 100: nearly all of the limit looks queued
        assert 2 <= limit <= 8
    else:
        assert limit == 16
