"""Several controllers in one daemon, and namespace sets, end to end."""

from __future__ import annotations

import json
import os
import signal
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import HERE, install_crd, widget_crd
from kubernetes import client

from operatord.testing import wait_for

GROUP = "shop.example.com"
KINDS = {"orders": "Order", "carts": "Cart", "refunds": "Refund"}
PLURALS = {"Order": "orders", "Cart": "carts", "Refund": "refunds"}


@pytest.fixture(scope="module")
def shop(kube):
    for kind, plural in PLURALS.items():
        install_crd(kube, widget_crd(group=GROUP, kind=kind, plural=plural))
    return kube


def shop_config(**overrides) -> dict:
    return {
        "name": "shop",
        "workers": 2,
        "resyncSeconds": 0,
        "handlerTimeoutSeconds": 10,
        "pythonPath": [str(HERE)],
        "backoff": {"initialSeconds": 0.2, "maxSeconds": 2, "multiplier": 2.0, "jitter": 0.0},
        "controllers": [
            {
                "name": "orders",
                "handler": "shop_handlers:Orders",
                "parent": {"apiVersion": f"{GROUP}/v1", "kind": "Order"},
                "children": [{"apiVersion": "v1", "kind": "ConfigMap"}],
            },
            {
                "name": "carts",
                "handler": "shop_handlers:sync",
                "parent": {"apiVersion": f"{GROUP}/v1", "kind": "Cart"},
                "children": [
                    {"apiVersion": "v1", "kind": "ConfigMap"},
                    {"apiVersion": "v1", "kind": "Secret"},
                ],
                "related": [{"apiVersion": "v1", "kind": "Secret", "labelSelector": "payment"}],
            },
            {
                "name": "refunds",
                "handler": "shop_handlers:Refunds",
                "parent": {"apiVersion": f"{GROUP}/v1", "kind": "Refund"},
                "children": [{"apiVersion": "v1", "kind": "ConfigMap"}],
                "backoff": {"initialSeconds": 0.5},
            },
        ],
        **overrides,
    }


@pytest.fixture
def shop_operator(api, shop, tmp_path):
    from operatord.testing import OperatorProcess

    started = []

    def start(**overrides):
        logs = tmp_path / "calls"
        logs.mkdir(exist_ok=True)
        op = OperatorProcess(
            api, shop_config(**overrides), workdir=tmp_path, env={"E2E_LOG_DIR": str(logs)}
        ).start()
        started.append(op)
        return op

    yield start
    for op in started:
        op.stop()


def custom(kube):
    return client.CustomObjectsApi(kube)


def create(kube, ns, kind, name, **spec):
    custom(kube).create_namespaced_custom_object(
        GROUP,
        "v1",
        ns,
        PLURALS[kind],
        {"apiVersion": f"{GROUP}/v1", "kind": kind, "metadata": {"name": name}, "spec": spec},
    )


def get(kube, ns, kind, name) -> dict | None:
    try:
        return custom(kube).get_namespaced_custom_object(GROUP, "v1", ns, PLURALS[kind], name)
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise


def statuses(kube, ns, kind) -> dict[str, dict]:
    items = custom(kube).list_namespaced_custom_object(GROUP, "v1", ns, PLURALS[kind])["items"]
    return {i["metadata"]["name"]: i.get("status") or {} for i in items}


def new_namespace(kube, name=None, labels=None) -> str:
    name = name or f"s-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(kube).create_namespace({"metadata": {"name": name, "labels": labels or {}}})
    return name


def worker_pids(op) -> list[int]:
    pids = []
    for line in op.output().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("event") == "worker started":
            pids.append(int(rec["pid"]))
    return pids


N = 300


def test_three_controllers_converge_survive_a_worker_kill_and_finalize_on_their_own(
    shop_operator, shop
):
    ns = new_namespace(shop)
    core = client.CoreV1Api(shop)
    core.create_namespaced_secret(
        ns,
        {
            "metadata": {"name": "pay", "labels": {"payment": "card"}},
            "stringData": {"token": "t-1"},
        },
    )
    op = shop_operator(namespace=ns)
    pids = wait_for(lambda: len(worker_pids(op)) >= 2 and worker_pids(op), 60)

    def make(i):
        create(shop, ns, "Order", f"o{i}", qty=i)
        create(shop, ns, "Cart", f"c{i}", items=i, payment="pay")
        create(shop, ns, "Refund", f"r{i}")

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(make, i) for i in range(N)]
        for n, f in enumerate(futures):
            f.result()
            if n == N // 3:
                os.kill(pids[0], signal.SIGKILL)  # mid-run: nothing may be lost
    for kind, by in (("Order", "orders"), ("Cart", "carts"), ("Refund", "refunds")):
        wait_for(
            lambda kind=kind, by=by: (
                sum(
                    1 for s in statuses(shop, ns, kind).values() if s.get("ready") and s["by"] == by
                )
                == N
            ),
            120,
            message=f"{N} {kind}s converged",
        )
    assert "restarting it" in op.output()
    # Each controller created its own children, the cart's ConfigMap from its related Secret.
    cms = {c.metadata.name: c for c in core.list_namespaced_config_map(ns).items}
    assert cms["order-o7"].data == {"qty": "7"}
    assert cms["cart-c7"].data == {"token": "t-1"}
    assert f"cart-c{N - 1}" in {s.metadata.name for s in core.list_namespaced_secret(ns).items}
    # Each controller has its own finalizer.
    finalizers = {
        kind: get(shop, ns, kind, name)["metadata"]["finalizers"]
        for kind, name in (("Order", "o1"), ("Cart", "c1"), ("Refund", "r1"))
    }
    assert finalizers == {
        "Order": ["operatord.io/shop.orders"],
        "Cart": ["operatord.io/shop.carts"],
        "Refund": ["operatord.io/shop.refunds"],
    }
    # A related change re-syncs only the cart that reads it.
    core.patch_namespaced_secret("pay", ns, {"stringData": {"token": "t-2"}})
    wait_for(lambda: get(shop, ns, "Cart", "c3")["status"].get("token") == "t-2", 30)
    # Deleting runs each controller's own finalize: refunds fail twice, with backoff, then go.
    for kind, name in (("Order", "o1"), ("Cart", "c1"), ("Refund", "r1")):
        custom(shop).delete_namespaced_custom_object(GROUP, "v1", ns, PLURALS[kind], name)
    wait_for(lambda: get(shop, ns, "Order", "o1") is None, 30, message="order finalized")
    wait_for(lambda: get(shop, ns, "Cart", "c1") is None, 30, message="cart finalized")
    wait_for(lambda: get(shop, ns, "Refund", "r1") is None, 30, message="refund finalized")
    attempts = (op.dir / "calls" / "r1.finalize").read_text()
    assert attempts == "xxx"
    # Events name the controller that posted them.
    events = wait_for(
        lambda: [
            e
            for e in core.list_namespaced_event(ns).items
            if e.reason == "Ordered" and e.involved_object.name == "o7"
        ],
        10,
    )
    assert events[0].source.component == "operatord-shop.orders"
    # Metrics carry each controller's name.
    for name in ("orders", "carts", "refunds"):
        assert op.metric("operatord_syncs_total", controller=name, result="ok") >= N, name


def test_namespace_set_serves_matching_namespaces_only_and_picks_up_new_ones(shop_operator, shop):
    tag = uuid.uuid4().hex[:6]
    a = new_namespace(shop, f"a-{tag}")
    b = new_namespace(shop, f"b-{tag}")
    team_x = new_namespace(shop, f"team-{tag}-x")
    team_y = new_namespace(shop, f"team-{tag}-y")
    op = shop_operator(namespaces=[a, f"team-{tag}-*", f"!team-{tag}-x"])
    for ns in (a, b, team_x, team_y):
        create(shop, ns, "Order", "one", qty=1)
    wait_for(lambda: (get(shop, a, "Order", "one") or {}).get("status", {}).get("ready"), 30)
    wait_for(lambda: (get(shop, team_y, "Order", "one") or {}).get("status", {}).get("ready"), 30)
    # A namespace created while the daemon runs is served within 2 s of its first parent.
    team_new = new_namespace(shop, f"team-{tag}-new")
    create(shop, team_new, "Order", "fresh", qty=2)
    wait_for(
        lambda: (get(shop, team_new, "Order", "fresh") or {}).get("status", {}).get("ready"),
        2.5,
        message="a new matching namespace served within 2 s",
    )
    # b and team-x: never synced, their children never touched.
    core = client.CoreV1Api(shop)
    for ns in (b, team_x):
        assert not get(shop, ns, "Order", "one").get("status")
        assert get(shop, ns, "Order", "one")["metadata"].get("finalizers") is None
        assert core.list_namespaced_config_map(ns).items == [] or all(
            c.metadata.name == "kube-root-ca.crt" for c in core.list_namespaced_config_map(ns).items
        )
    assert op.proc.poll() is None


def test_literal_namespaces_are_watched_per_namespace(shop_operator, shop, api):
    a = new_namespace(shop)
    b = new_namespace(shop)
    earlier = len(api.requests())  # the module's other daemons watched cluster-wide
    op = shop_operator(namespaces=[a, b])
    create(shop, a, "Order", "one", qty=1)
    create(shop, b, "Order", "two", qty=2)
    wait_for(lambda: (get(shop, b, "Order", "two") or {}).get("status", {}).get("ready"), 30)
    assert op.proc.poll() is None
    # Every list and watch the daemon made of a namespaced type named one of its namespaces.
    mine = [
        r
        for r in api.requests()[earlier:]
        if r.get("verb") in ("list", "watch")
        and r.get("resource") in ("orders", "carts", "refunds", "configmaps", "secrets")
    ]
    assert mine, "the daemon listed and watched"
    assert {r["namespace"] for r in mine} <= {a, b}, {r["namespace"] for r in mine}
