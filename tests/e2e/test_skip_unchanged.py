"""skipUnchanged end to end, through `operatord run`: restarts and resyncs of converged parents
call no handler; a child changed by hand, a related Secret or a spec change syncs only its
parent; a new handler version re-syncs every parent once; skipUnchanged: false calls the
handler on every resync."""

from __future__ import annotations

import shutil

from conftest import HERE, wait_for
from kubernetes import client
from related_handlers import digest
from test_related_objects import encoded, put_secret, related_operator, status
from widgets import configmap, create_widget, get_widget, patch_spec


def converged(kube, ns, name) -> bool:
    """The Widget is ready for its generation and records the inputs it converged on."""
    w = get_widget(kube, ns, name) or {}
    st = w.get("status") or {}
    return (
        st.get("ready") is True
        and st.get("observedGeneration") == w["metadata"]["generation"]
        and "observedInputs" in st
    )


def size_of(kube, ns, name) -> str | None:
    cm = configmap(kube, ns, name)
    return (cm.data or {}).get("size") if cm else None


def calls(op, names) -> dict[str, int]:
    return {n: len(op.calls(n)) for n in names}


def skipped(op) -> float:
    return op.metric("operatord_syncs_skipped_total")


def synced(op) -> float:
    return op.metric("operatord_syncs_total", result="ok")


def test_a_restart_skips_converged_parents_and_syncs_only_the_changed_ones(kube, operator, ns):
    names = ["w0", "w1", "w2", "w3"]
    op = operator(namespace=ns)
    for n in names:
        create_widget(kube, ns, n, size=1)
    wait_for(lambda: all(converged(kube, ns, n) for n in names), 30, message="converged")
    op.stop()
    before = calls(op, names)
    # While no operator runs: w1's ConfigMap is edited by hand, w2's spec changes.
    client.CoreV1Api(kube).patch_namespaced_config_map("w1", ns, {"data": {"size": "99"}})
    patch_spec(kube, ns, "w2", size=5)

    op = operator(namespace=ns)
    wait_for(lambda: skipped(op) == 2 and synced(op) >= 2, 30, message="w0, w3 skipped")
    wait_for(lambda: size_of(kube, ns, "w1") == "1", 30, message="w1's ConfigMap repaired")
    wait_for(lambda: size_of(kube, ns, "w2") == "5", 30, message="w2's spec applied")
    wait_for(lambda: converged(kube, ns, "w1") and converged(kube, ns, "w2"), 30)
    after = calls(op, names)
    assert after["w0"] == before["w0"] and after["w3"] == before["w3"], "no handler call"
    assert after["w1"] > before["w1"] and after["w2"] > before["w2"]
    assert synced(op) == 2 and skipped(op) == 2


def test_resyncs_of_unchanged_parents_call_no_handler_until_a_child_is_edited(kube, operator, ns):
    names = ["r0", "r1", "r2"]
    op = operator(namespace=ns, resyncSeconds=1)
    for n in names:
        create_widget(kube, ns, n, size=2)
    wait_for(lambda: all(converged(kube, ns, n) for n in names), 30, message="converged")
    # Two resync rounds of every parent, all skipped.
    base = skipped(op)
    before = calls(op, names)
    wait_for(lambda: skipped(op) >= base + 2 * len(names), 30, message="two resync rounds")
    assert calls(op, names) == before, "a skipped resync calls no handler"

    client.CoreV1Api(kube).patch_namespaced_config_map("r1", ns, {"data": {"size": "0"}})
    wait_for(lambda: size_of(kube, ns, "r1") == "2", 30, message="r1's ConfigMap repaired")
    after = calls(op, names)
    assert after["r1"] > before["r1"]
    assert after["r0"] == before["r0"] and after["r2"] == before["r2"]


def test_with_skip_unchanged_false_every_resync_calls_the_handler(kube, operator, ns):
    op = operator(namespace=ns, resyncSeconds=1, skipUnchanged=False)
    create_widget(kube, ns, "each", size=1)
    wait_for(lambda: (get_widget(kube, ns, "each").get("status") or {}).get("ready"), 30)
    assert "observedInputs" not in get_widget(kube, ns, "each")["status"]
    n = len(op.calls("each"))
    wait_for(lambda: len(op.calls("each")) >= n + 2, 30, message="two resyncs, two calls")
    assert skipped(op) == 0


def test_a_related_secret_changed_over_a_restart_syncs_only_its_parent(kube, operator, ns):
    names = ["s0", "s1"]
    for n in names:
        put_secret(kube, ns, f"creds-{n}", {"password": "one"})
    op = related_operator(operator, ns)
    for n in names:
        create_widget(kube, ns, n, secret=f"creds-{n}")
    first = digest(encoded({"password": "one"}))
    wait_for(
        lambda: all(
            status(kube, ns, n).get("secret") == first and "observedInputs" in status(kube, ns, n)
            for n in names
        ),
        30,
        message="converged",
    )
    op.stop()
    before = calls(op, names)
    put_secret(kube, ns, "creds-s1", {"password": "two"})

    op = related_operator(operator, ns)
    second = digest(encoded({"password": "two"}))
    wait_for(lambda: status(kube, ns, "s1").get("secret") == second, 30, message="s1 synced")
    wait_for(lambda: skipped(op) == 1, 30, message="s0 skipped")
    assert calls(op, ["s0"]) == {"s0": before["s0"]}
    # The selection s0's status records was restored: its Secret's changes still reach it.
    put_secret(kube, ns, "creds-s0", {"password": "three"})
    third = digest(encoded({"password": "three"}))
    wait_for(lambda: status(kube, ns, "s0").get("secret") == third, 30, message="s0 follows")


def test_a_new_handler_version_resyncs_every_parent_once(kube, operator, ns, tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    shutil.copy(HERE / "handlers.py", code / "handlers.py")
    names = ["v0", "v1", "v2"]
    op = operator(namespace=ns, pythonPath=[str(code)])
    for n in names:
        create_widget(kube, ns, n, size=1)
    wait_for(lambda: all(converged(kube, ns, n) for n in names), 30, message="converged")
    op.stop()

    op = operator(namespace=ns, pythonPath=[str(code)])  # the same code: nothing to do
    wait_for(lambda: skipped(op) == len(names), 30, message="all skipped")
    assert synced(op) == 0
    op.stop()

    with open(code / "handlers.py", "a") as f:
        f.write("\n# a new version of the handler\n")
    before = calls(op, names)
    op = operator(namespace=ns, pythonPath=[str(code)])
    wait_for(lambda: synced(op) == len(names), 30, message="every parent synced")
    wait_for(lambda: all(converged(kube, ns, n) for n in names), 30)
    assert skipped(op) == 0
    assert {n: c - before[n] for n, c in calls(op, names).items()} == dict.fromkeys(names, 1)
    op.stop()

    op = operator(namespace=ns, pythonPath=[str(code)])  # and recorded: skipped again
    wait_for(lambda: skipped(op) == len(names), 30, message="all skipped again")
    assert synced(op) == 0
