"""Reliability: `operatord run` converges against the embedded API server under injected faults.

One operator serves the whole module (each test has its own namespace); faults are cleared
after every test. Convergence means: every parent ready for its current generation, exactly one
ConfigMap child per parent with the right data and owner, and no storm of 409s.
"""

from __future__ import annotations

import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import Operator, wait_for
from kubernetes import client
from kubernetes.client.exceptions import ApiException

GROUP, VERSION, PLURAL = "example.com", "v1", "widgets"
PARENT_UID = "operatord.io/parent-uid"
N = 20


@pytest.fixture(scope="module")
def op(api, kube, tmp_path_factory):
    operator = Operator(api, tmp_path_factory.mktemp("reliability")).start()
    yield operator
    code = operator.stop()
    if code not in (0, -9, 1):
        print(operator.output()[-5000:])


@pytest.fixture
def ns(api, kube, op):
    name = f"r-{uuid.uuid4().hex[:8]}"
    retrying(lambda: client.CoreV1Api(kube).create_namespace({"metadata": {"name": name}}))
    api.clear_requests()
    yield name
    api.faults.clear()
    if op.proc.poll() is not None:
        print(op.output()[-5000:])
        pytest.fail("the operator exited")


def retrying(call, timeout: float = 30.0):
    """The test's own writes also meet the injected faults: retry 5xx/429 with a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except ApiException as exc:
            if exc.status not in (429, 500, 503) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)  # retry until the deadline


def custom(kube):
    return client.CustomObjectsApi(kube)


def create_widgets(kube, ns, count: int, threads: int = 1, **spec) -> None:
    def one(i: int) -> None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Widget",
            "metadata": {"name": f"w{i}"},
            "spec": {"size": i, **spec},
        }
        retrying(
            lambda: custom(kube).create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
        )

    if threads == 1:
        for i in range(count):
            one(i)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, range(count)))


def set_size(kube, ns, name: str, size: int) -> None:
    retrying(
        lambda: custom(kube).patch_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, name, {"spec": {"size": size}}
        )
    )


def converged(kube, ns, count: int) -> bool:
    """All parents ready for their generation, each with exactly its one right ConfigMap."""
    widgets = custom(kube).list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]
    if len(widgets) != count:
        return False
    for w in widgets:
        st = w.get("status") or {}
        if (
            st.get("ready") is not True
            or st.get("observedGeneration") != w["metadata"]["generation"]
        ):
            return False
    cms = client.CoreV1Api(kube).list_namespaced_config_map(ns, label_selector=PARENT_UID).items
    by_uid = {w["metadata"]["uid"]: w for w in widgets}
    if sorted(c.metadata.labels[PARENT_UID] for c in cms) != sorted(by_uid):
        return False  # a missing or duplicate child
    for c in cms:
        w = by_uid[c.metadata.labels[PARENT_UID]]
        if c.metadata.name != w["metadata"]["name"]:
            return False
        if c.data != {"size": str(w["spec"]["size"])}:
            return False
        (ref,) = c.metadata.owner_references
        if ref.uid != w["metadata"]["uid"]:
            return False
    return True


def audit(api, ns, **match) -> list[dict]:
    return [
        r
        for r in api.requests()
        if r["namespace"] == ns and all(r[k] == v for k, v in match.items())
    ]


def conflicts(api, ns) -> int:
    return len(audit(api, ns, code=409))


def restarts(op, reason: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{op.metrics_port}/metrics", timeout=5).read()
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith("operatord_watch_restarts_total{") and f'reason="{reason}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_converges_with_500s_on_a_quarter_of_writes(api, kube, ns, op):
    api.faults.add_error(code=500, fraction=0.25, verbs=["create", "update", "patch", "delete"])
    create_widgets(kube, ns, N)
    wait_for(lambda: converged(kube, ns, N), 60, 0.3, "parents converge under 500s")
    failed = audit(api, ns, code=500)
    assert len(failed) >= 10, "the faults were not exercised"
    assert {r["resource"] for r in failed} >= {"configmaps", "widgets"}
    assert conflicts(api, ns) <= 5
    # Creates that failed with 500 never committed, so retrying them makes no duplicates:
    assert len(audit(api, ns, resource="configmaps", verb="create", code=201)) == N


def test_converges_with_429_on_lists_and_watches(api, kube, ns, op):
    # The next 3 watches are refused for sure, then half of all lists and watches.
    api.faults.add_error(code=429, verbs=["watch"], retry_after=1, count=3)
    api.faults.add_error(code=429, fraction=0.5, verbs=["list", "watch"], retry_after=1)
    api.faults.compact()  # informers behind the history must relist through the 429s too
    api.faults.drop_watches()  # every informer has to watch again
    create_widgets(kube, ns, N)
    wait_for(lambda: converged(kube, ns, N), 60, 0.3, "parents converge under 429s")
    # The operator's informers list and watch cluster-wide (namespace "").
    throttled = [r for r in api.requests() if r["code"] == 429 and r["namespace"] == ""]
    assert len([r for r in throttled if r["verb"] == "watch"]) >= 3
    assert conflicts(api, ns) <= 5


def test_converges_with_watches_dropped_repeatedly(api, kube, ns, op):
    api.faults.drop_watches_after(0.5)
    api.faults.drop_watches()
    before = restarts(op, "closed")
    create_widgets(kube, ns, N)
    wait_for(lambda: converged(kube, ns, N), 60, 0.3, "parents converge with dropped watches")
    # Changes must get through too, promptly, however many watches were dropped before.
    worst = 0.0
    for rnd in range(5):
        closed = restarts(op, "closed")
        for i in range(0, N, 4):
            set_size(kube, ns, f"w{i}", 100 * (rnd + 1) + i)
        t0 = time.monotonic()
        wait_for(lambda: converged(kube, ns, N), 60, 0.1, f"spec changes converge ({rnd})")
        worst = max(worst, time.monotonic() - t0)
        wait_for(lambda c=closed: restarts(op, "closed") > c + 1, 10, 0.1, "more dropped watches")
    assert restarts(op, "closed") - before >= 10
    assert worst < 5.0, f"a round of changes took {worst:.1f} s to converge"
    assert conflicts(api, ns) <= 5
    assert len(audit(api, ns, resource="configmaps", verb="create", code=201)) == N


def test_converges_when_history_is_compacted_while_parents_change(api, kube, ns, op):
    create_widgets(kube, ns, N)
    wait_for(lambda: converged(kube, ns, N), 60, 0.3, "parents converge")
    before = restarts(op, "expired")
    # Keep the parent informer away for a moment (its next two re-watches are refused: about
    # 0.6 s of backoff) while parents change and the history is compacted: it has to resume
    # from a forgotten resourceVersion, get 410 and relist, however quickly it kept up before.
    api.faults.add_error(code=500, verbs=["watch"], resources=["widgets.example.com"], count=2)
    for rnd in range(3):
        api.faults.drop_watches()
        for i in range(N):
            set_size(kube, ns, f"w{i}", 1000 * (rnd + 1) + i)
            if i % 7 == 3:
                api.faults.compact()
    wait_for(lambda: converged(kube, ns, N), 30, 0.3, "parents converge after compactions")
    assert restarts(op, "expired") > before, "no informer had to relist"
    assert conflicts(api, ns) <= 10
    assert len(audit(api, ns, resource="configmaps", verb="create", code=201)) == N


def test_converges_with_added_latency(api, kube, ns, op):
    api.faults.set_latency(0.03, jitter=0.04)
    create_widgets(kube, ns, N)
    wait_for(lambda: converged(kube, ns, N), 60, 0.3, "parents converge with latency")
    assert conflicts(api, ns) <= 5
    assert len(audit(api, ns, resource="configmaps", verb="create", code=201)) == N


def test_a_thousand_parents_converge(api, kube, ns, op):
    count = 1000
    start = time.monotonic()
    create_widgets(kube, ns, count, threads=4)
    created = time.monotonic()
    wait_for(lambda: converged(kube, ns, count), 180, 0.5, f"{count} parents converge")
    done = time.monotonic()
    print(
        f"\n{count} parents: created in {created - start:.1f} s, "
        f"all ready {done - start:.1f} s after the first create"
    )
    creates = audit(api, ns, resource="configmaps", verb="create")
    assert [r["code"] for r in creates] == [201] * count
    assert conflicts(api, ns) <= 20


def test_a_spec_change_whose_event_arrives_after_the_sync_is_not_lost(api, kube, ns, op):
    """A spec change lands while a sync is running and its watch event arrives only late (a
    dropped watch, a relist). The running sync must not write a status computed from the old
    generation over the new one, and the new generation must be synced without waiting for
    its watch event.
    """
    create_widgets(kube, ns, 1)
    wait_for(lambda: converged(kube, ns, 1), 30, 0.1, "w0 ready")
    retrying(
        lambda: custom(kube).patch_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, "w0", {"spec": {"sleep": 1.5}}
        )
    )  # generation 2: a slow sync that changes no child
    wait_for(lambda: len(op.calls("w0")) >= 2, 30, 0.02, "the slow sync started")
    # From now on the operator sees no parent events.
    api.faults.add_error(code=500, verbs=["watch"], resources=["widgets.example.com"])
    api.faults.drop_watches()
    set_size(kube, ns, "w0", 7)  # generation 3, while the handler sleeps on generation 2
    # Converges on generation 3 while its watch event still cannot arrive.
    wait_for(lambda: converged(kube, ns, 1), 30, 0.1, "generation 3 synced")
    # The slow sync's status (computed from generation 2) was refused by its resourceVersion
    # fence, and the parent it fetched instead started the next sync.
    assert "parent changed during the sync; syncing again" in op.output()
    api.faults.clear()
