"""Issue #4, end to end: leader election, metrics, health probes and logs of `operatord run`.

Everything goes over real HTTP: the embedded API server through the official client, and the
daemon's /metrics, /healthz and /readyz through urllib. Each test scopes its operator to its own
namespace so parents of other tests never reach it.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import pytest
from conftest import HERE, REPO, Operator, wait_for
from kubernetes import client, watch
from prometheus_client.parser import text_string_to_metric_families
from widgets import GROUP, PLURAL, VERSION, configmap, create_widget, custom, get_widget

LEASE_NAMESPACE = "default"


# ---- helpers ----------------------------------------------------------------------------------


@pytest.fixture
def ns(kube):
    name = f"ops-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(kube).create_namespace({"metadata": {"name": name}})
    return name


@pytest.fixture
def replicas(api, kube, tmp_path):
    """``replicas(label, **overrides)`` starts an `operatord run` with its own directory (so
    handler call logs are per process); every one is stopped at teardown."""
    started: list[Operator] = []

    def start(label: str, **overrides) -> Operator:
        d = tmp_path / label
        d.mkdir()
        op = Operator(api, d, **overrides).start()
        started.append(op)
        return op

    yield start
    for op in started:
        op.stop()


def scrape(op: Operator) -> dict[tuple, float]:
    """One /metrics scrape, parsed: {(sample name, sorted label items): value}."""
    url = f"http://127.0.0.1:{op.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = dict(s.labels)
            if s.name.startswith("operatord_"):  # every operatord series names its controller
                assert labels.pop("controller") == op.config["name"], s
            out[(s.name, tuple(sorted(labels.items())))] = s.value
    return out


def metric(samples: dict, name: str, **labels) -> float:
    return samples.get(("operatord_" + name, tuple(sorted(labels.items()))), 0.0)


def wait_metric(op: Operator, name: str, check, timeout: float = 30.0, **labels) -> float:
    """Poll ``metric(name, labels)`` until ``check(value)``; the failure names the last value."""
    seen = []

    def ok():
        seen.append(metric(scrape(op), name, **labels))
        return check(seen[-1])

    try:
        wait_for(ok, timeout, message=f"{name}{labels}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last value {seen[-1] if seen else None}") from None
    return seen[-1]


def metric_sum(samples: dict, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == "operatord_" + name)


def probe(op: Operator, path: str) -> tuple[int, str]:
    url = f"http://127.0.0.1:{op.health_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def records(op: Operator) -> list[dict]:
    """Every stdout line of the process, parsed as JSON (fails on a line that is not JSON)."""
    out = []
    for line in op.output().splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError:
                raise AssertionError(f"log line is not JSON: {line!r}") from None
    return out


def worker_pids(op: Operator) -> dict[int, int]:
    """worker index -> pid of its latest start, from the "worker started" lines."""
    pids = {}
    for r in records(op):
        if r.get("event") == "worker started":
            pids[r["worker"]] = r["pid"]
    return pids


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (dead, not yet reaped by its parent) counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# ---- 1. leader election -------------------------------------------------------------------------

LEASE = {
    "enabled": True,
    "leaseNamespace": LEASE_NAMESPACE,
    "leaseDurationSeconds": 2,
    "renewDeadlineSeconds": 1.5,
    "retryPeriodSeconds": 0.3,
}


def ha_config(ns: str, name: str) -> dict:
    return {
        "name": name,
        "handler": "ops_handlers:Stamped",
        "pythonPath": [str(HERE)],
        "namespace": ns,
        "children": [{"apiVersion": "v1", "kind": "ConfigMap", "updateStrategy": "Replace"}],
        "workers": 1,
        "leaderElection": LEASE,
    }


def identity(op: Operator) -> str:
    """The lease identity of a replica, from its "campaigning for leader lease" line."""
    for r in records(op):
        if r.get("event") == "campaigning for leader lease":
            return r["identity"]
    return ""


def lease_holder(kube, name: str) -> str | None:
    lease = client.CoordinationV1Api(kube).read_namespaced_lease(name, LEASE_NAMESPACE)
    return lease.spec.holder_identity or ""


def leading(op: Operator) -> bool:
    return metric(scrape(op), "leader") == 1


def written_by(kube, ns: str, name: str, op: Operator) -> bool:
    w = get_widget(kube, ns, name)
    cm = configmap(kube, ns, name)
    pid = str(op.proc.pid)
    return bool(
        w and (w.get("status") or {}).get("writer") == pid and cm and cm.data["writer"] == pid
    )


def history(kube, ns: str, lease_name: str, since: str) -> list[tuple]:
    """Every version since ``since`` of the lease, the namespace's widgets and configmaps, as
    (resourceVersion, what, ...) in resourceVersion order, replayed from the server's history."""
    core = client.CoreV1Api(kube)
    coord = client.CoordinationV1Api(kube)
    events = []
    w = watch.Watch()
    for ev in w.stream(
        coord.list_namespaced_lease,
        LEASE_NAMESPACE,
        field_selector=f"metadata.name={lease_name}",
        resource_version=since,
        timeout_seconds=1,
    ):
        lease = ev["object"]
        rv = int(lease.metadata.resource_version)
        events.append((rv, "lease", lease.spec.holder_identity or ""))
    seen_status: dict[str, object] = {}
    for ev in w.stream(
        custom(kube).list_namespaced_custom_object,
        GROUP,
        VERSION,
        ns,
        PLURAL,
        resource_version=since,
        timeout_seconds=1,
    ):
        obj = ev["object"]
        name = obj["metadata"]["name"]
        status = obj.get("status") or {}
        if ev["type"] != "DELETED" and status.get("at") and status != seen_status.get(name):
            # a version whose status changed: a status write by status.writer
            events.append(
                (int(obj["metadata"]["resourceVersion"]), "status", name, status["writer"])
            )
        seen_status[name] = status
    for ev in w.stream(
        core.list_namespaced_config_map, ns, resource_version=since, timeout_seconds=1
    ):
        cm = ev["object"]
        if ev["type"] != "DELETED" and cm.data and "writer" in cm.data:
            rv = int(cm.metadata.resource_version)
            events.append((rv, "configmap", cm.metadata.name, cm.data["writer"]))
    return sorted(events)


def writes_under_lease(timeline: list[tuple], names: dict[str, str]) -> int:
    """Assert every write in ``timeline`` came from the replica (pid -> lease identity in
    ``names``) that the Lease named as holder at that point; returns the number of writes."""
    holder = None
    writes = 0
    for event in timeline:
        if event[1] == "lease":
            holder = event[2]
            continue
        writes += 1
        assert names[event[3]] == holder, (
            f"write {event} by {names[event[3]]!r} while the lease named {holder!r}"
        )
    return writes


def test_leader_election_failover_and_handover(replicas, kube, ns, api):
    """Two replicas: one leads; SIGKILL of the leader -> the standby leads within
    leaseDuration + retryPeriod; SIGTERM of the next leader -> exit 0, lease released, a third
    replica leads within 3 s.

    No interval in which two replicas write: the embedded API server gives every write a global,
    monotonic resourceVersion, and the handler stamps each child and status it writes with the
    pid of its `operatord run` process. Replaying the server's history of the Lease, the
    widgets and the ConfigMaps from a resourceVersion taken before the first start, and sorting
    by resourceVersion, gives one total order of lease changes and writes. Every write must
    come from the replica that the Lease names as holder at that point of the order: so the old
    leader's last write precedes the new leader's acquisition, and the new leader's first write
    follows it. (A write that changed nothing creates no version and is invisible here; the
    parents resync every 0.2 s with a fresh status timestamp, so nearly every sync writes.)
    """
    lease_name = f"{ns}-leader"
    since = custom(kube).list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["metadata"][
        "resourceVersion"
    ]
    a = replicas("a", **ha_config(ns, ns))
    b = replicas("b", **ha_config(ns, ns))
    first = wait_for(
        lambda: next((op for op in (a, b) if leading(op)), None), 30, message="a leader"
    )
    standby = b if first is a else a
    for i in range(3):
        create_widget(kube, ns, f"p{i}", resyncAfter=0.2)
    for i in range(3):
        wait_for(lambda i=i: written_by(kube, ns, f"p{i}", first), 30, message=f"p{i} synced")

    # exactly one leads: the gauges, the lease, and only the leader started workers
    assert metric(scrape(first), "leader") == 1
    assert metric(scrape(standby), "leader") == 0
    assert lease_holder(kube, lease_name) == identity(first) != ""
    assert worker_pids(first) and not worker_pids(standby)
    assert metric(scrape(standby), "syncs_total", result="ok") == 0
    assert metric(scrape(first), "syncs_total", result="ok") > 0
    # readiness: a standby is ready (it serves nothing that needs caches); the leader is ready
    assert probe(standby, "/readyz") == (200, "ok\n")
    assert probe(first, "/readyz") == (200, "ok\n")
    assert probe(standby, "/healthz")[0] == 200

    # SIGKILL the leader: the standby takes over within leaseDuration + retryPeriod (+ slack)
    first.proc.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    wait_for(lambda: leading(standby), 10, interval=0.05, message="standby leads")
    takeover = time.monotonic() - killed_at
    assert takeover < LEASE["leaseDurationSeconds"] + LEASE["retryPeriodSeconds"] + 1.0, takeover
    assert lease_holder(kube, lease_name) == identity(standby)
    create_widget(kube, ns, "after-kill", resyncAfter=0.2)
    wait_for(lambda: written_by(kube, ns, "after-kill", standby), 30, message="new parent synced")
    # the dead leader's worker does not outlive it
    for pid in worker_pids(first).values():
        wait_for(lambda pid=pid: not pid_alive(pid), 10, message=f"orphan worker {pid} exits")

    # SIGTERM the new leader: it drains, releases the lease and exits 0; a third one leads
    third = replicas("c", **ha_config(ns, ns))
    wait_for(lambda: identity(third), 30, message="third replica campaigning")
    assert probe(third, "/readyz") == (200, "ok\n")
    standby.proc.send_signal(signal.SIGTERM)
    termed_at = time.monotonic()
    assert standby.proc.wait(30) == 0, standby.output()[-3000:]
    wait_for(lambda: leading(third), 10, interval=0.05, message="third leads")
    assert time.monotonic() - termed_at < 3.0, time.monotonic() - termed_at
    create_widget(kube, ns, "after-term")
    wait_for(lambda: written_by(kube, ns, "after-term", third), 30, message="third reconciles")
    for i in range(3):
        wait_for(lambda i=i: written_by(kube, ns, f"p{i}", third), 30, message=f"p{i} by third")

    # the timeline: every write happened while its writer held the lease
    names = {str(op.proc.pid): identity(op) for op in (first, standby, third)}
    timeline = history(kube, ns, lease_name, since)
    holders = [e[2] for e in timeline if e[1] == "lease"]
    # acquisitions in order, and the SIGTERMed leader released the lease (holder "") before
    # the third replica took it
    acquired = [h for i, h in enumerate(holders) if h and (i == 0 or holders[i - 1] != h)]
    assert acquired == [identity(first), identity(standby), identity(third)], holders
    released_at = holders.index("", holders.index(identity(standby)))
    assert holders[released_at + 1 :] and set(holders[released_at + 1 :]) == {identity(third)}
    assert writes_under_lease(timeline, names) > 20
    writers = {e[3] for e in timeline if e[1] != "lease"}
    assert writers == set(names), writers


def test_killed_leader_s_worker_does_not_write_after_takeover(replicas, kube, ns):
    """SIGKILL a leader while its worker is inside a slow sync (4 s > leaseDuration): the
    standby takes over after ~2 s; the orphaned worker must not apply that sync's result
    afterwards. Checked on the same resourceVersion timeline as the failover test."""
    lease_name = f"{ns}-leader"
    since = custom(kube).list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["metadata"][
        "resourceVersion"
    ]
    a = replicas("a", **ha_config(ns, ns))
    wait_for(lambda: leading(a), 30, message="a leads")
    b = replicas("b", **ha_config(ns, ns))
    wait_for(lambda: identity(b), 30, message="b campaigning")
    create_widget(kube, ns, "slow", sleep=4)
    wait_for(lambda: a.calls("slow"), 30, message="a's worker inside the slow sync")
    orphans = list(worker_pids(a).values())
    a.proc.send_signal(signal.SIGKILL)
    wait_for(lambda: leading(b), 10, message="b leads")
    wait_for(lambda: written_by(kube, ns, "slow", b), 30, message="b synced the slow parent")
    for pid in orphans:
        wait_for(lambda pid=pid: not pid_alive(pid), 10, message=f"orphan worker {pid} exits")
    names = {str(op.proc.pid): identity(op) for op in (a, b)}
    writes_under_lease(history(kube, ns, lease_name, since), names)


# ---- 2. metrics -------------------------------------------------------------------------------


def test_metrics_follow_the_work_and_survive_a_worker_kill(operator, kube, ns):
    op = operator(namespace=ns, workers=2)
    wait_for(lambda: metric(scrape(op), "workers_alive") == 2, 30, message="workers alive")
    before = scrape(op)
    for i in range(3):
        create_widget(kube, ns, f"ok{i}")
    wait_for(lambda: metric(scrape(op), "syncs_total", result="ok") >= 3, 30, message="3 ok syncs")
    create_widget(kube, ns, "bad", fail=True)
    wait_for(lambda: metric(scrape(op), "syncs_total", result="error") >= 2, 30, message="2 errors")
    wait_for(lambda: configmap(kube, ns, "ok2"), 30, message="children created")
    mid = scrape(op)
    assert metric(mid, "syncs_total", result="ok") >= metric(before, "syncs_total", result="ok") + 3
    assert metric(mid, "syncs_total", result="error") >= 2
    assert metric(mid, "retries_total") >= metric(before, "retries_total") + 2
    assert metric(mid, "child_writes_total", kind="ConfigMap", operation="create") >= 3
    assert metric_sum(mid, "api_requests_total") > metric_sum(before, "api_requests_total")
    assert metric(mid, "workers_alive") == 2
    wait_metric(op, "cached_objects", lambda v: v == 4, 10, resource="widgets.example.com")

    # SIGKILL a worker: it is replaced, counted, and no counter goes down
    counters_before = {k: v for k, v in scrape(op).items() if k[0].endswith("_total")}
    pids = worker_pids(op)
    assert len(pids) == 2
    os.kill(pids[0], signal.SIGKILL)
    wait_for(lambda: metric(scrape(op), "worker_restarts_total") >= 1, 20, message="restart")
    wait_for(lambda: worker_pids(op)[0] != pids[0], 20, message="new worker 0")
    wait_for(lambda: metric(scrape(op), "workers_alive") == 2, 20, message="2 alive again")
    wait_for(
        lambda: (
            metric(scrape(op), "syncs_total", result="error")
            > counters_before[("operatord_syncs_total", (("result", "error"),))]
        ),
        30,
        message="failing parent still retried",
    )
    after = scrape(op)
    went_down = {k: (v, after.get(k)) for k, v in counters_before.items() if after.get(k, 0) < v}
    assert not went_down
    assert metric(after, "worker_restarts_total") >= 1

    # delete a parent: finalized, counted, and gone from the cache. (Fails today: the worker's
    # finalizer-removal response reaches the leader after the DELETED watch event and
    # Controller._handle_result upserts the deleted parent back into the cache, for good.)
    custom(kube).delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "ok0")
    wait_for(lambda: get_widget(kube, ns, "ok0") is None, 30, message="ok0 finalized")
    wait_metric(op, "finalizes_total", lambda v: v >= 1, 10, result="finalized")
    wait_metric(
        op,
        "watch_events_total",
        lambda v: v >= 1,
        10,
        resource="widgets.example.com",
        type="DELETED",
    )
    wait_metric(op, "cached_objects", lambda v: v == 3, 10, resource="widgets.example.com")


# ---- 3. health --------------------------------------------------------------------------------


def test_a_missing_crd_is_waited_for_and_named_in_readyz_and_the_log(operator, api, ns):
    group = f"g{uuid.uuid4().hex[:6]}.example.com"
    op = operator(
        namespace=ns,
        parent={"apiVersion": f"{group}/v1", "kind": "Thing"},
        children=[{"apiVersion": "v1", "kind": "ConfigMap"}],
    )
    wait_for(lambda: probe(op, "/healthz")[0] == 200, 30, message="healthz up")
    waiting = f"waiting for Thing ({group}/v1) to be served"
    wait_for(lambda: probe(op, "/readyz") == (503, f"startup: {waiting}\n"), 15, message="readyz")
    assert probe(op, "/healthz") == (200, "ok\n")
    wait_for(
        lambda: any(
            r.get("event", "").startswith(waiting)
            and "install its CustomResourceDefinition" in r["event"]
            and r["level"] == "warning"
            for r in records(op)
        ),
        15,
        message="the log says what it waits for",
    )
    assert op.proc.poll() is None  # waiting, not exiting
    api.apply_crd(group, "v1", "Thing")
    wait_for(lambda: probe(op, "/readyz") == (200, "ok\n"), 30, message="ready after CRD")
    assert probe(op, "/healthz") == (200, "ok\n")
    assert not any("Traceback" in line for line in op.output().splitlines())


# ---- 4. logs ----------------------------------------------------------------------------------


def test_logs_are_json_carry_parent_context_and_never_secret_data(operator, kube, ns, api):
    secret_value = f"s3cr3t-{uuid.uuid4().hex}"
    op = operator(
        namespace=ns,
        handler="ops_handlers:Stamped",
        logging={"format": "json", "level": "debug"},
    )
    wait_for(lambda: worker_pids(op), 30, message="workers started")
    # the first six Secret creates fail (one sync's worth of client retries): the failed write
    # is logged too, with the parent's context
    api.faults.add_error(code=500, verbs=["create"], resources=["secrets"], count=6)
    try:
        bad = create_widget(kube, ns, "bad", fail=True)
        create_widget(kube, ns, "vault", secretValue=secret_value)
        wait_for(
            lambda: client.CoreV1Api(kube).read_namespaced_secret("vault-secret", ns),
            30,
            message="secret child created",
        )
        wait_for(
            lambda: sum(r.get("event") == "handler raised" for r in records(op)) >= 2,
            30,
            message="two failures logged",
        )
    finally:
        api.faults.clear()
    secret = client.CoreV1Api(kube).read_namespaced_secret("vault-secret", ns)
    assert base64.b64decode(secret.data["token"]).decode() == secret_value

    logs = records(op)  # also asserts that every line is JSON
    text = op.output()
    encoded = base64.b64encode(secret_value.encode()).decode()
    assert secret_value not in text and encoded not in text

    # library loggers go through the same JSON renderer
    libs = {r.get("logger") for r in logs}
    assert any(name and name.startswith("urllib3") for name in libs), libs
    # the failed Secret writes were logged, with the parent's context and without the value
    api_errors = [r for r in logs if r.get("event") == "API error while applying"]
    assert any(r.get("parent_name") == "vault" and r.get("status") == 500 for r in api_errors)

    uid = bad["metadata"]["uid"]
    about_bad = [r for r in logs if uid in json.dumps(r) or "asked to fail (bad)" in json.dumps(r)]
    assert any(r["event"] == "handler raised" and r["level"] == "error" for r in about_bad)
    # (Fails today: the leader's "sync failed; backing off" line has no ``worker``.)
    missing = [
        r
        for r in about_bad
        if not (
            r.get("parent_namespace") == ns
            and r.get("parent_name") == "bad"
            and r.get("parent_uid") == uid
            and isinstance(r.get("worker"), int)
        )
    ]
    assert not missing, f"lines about the failing parent without its context: {missing}"


@pytest.mark.parametrize("elect", [False, True], ids=["single", "elected"])
def test_an_idle_daemon_exits_quickly_on_sigterm_and_says_so_last(operator, ns, elect):
    # Measured before: 1.4-2.9 s (receivers and the worker's sender polled every 0.5 s, one
    # worker after the other); now 0.3 s single, 0.5 s with election (lease release).
    extra = {"leaderElection": {"enabled": True}} if elect else {}
    op = operator(namespace=ns, workers=2, **extra)
    op.wait_ready()
    wait_for(
        lambda: any(r.get("event") == "caches synced" for r in op.log_records()),
        30,
        message="controller running",
    )
    start = time.monotonic()
    assert op.stop() == 0
    took = time.monotonic() - start
    assert took < 1.5, took
    last = op.log_records()[-1]
    assert (last["event"], last["exit_code"], last["process"]) == ("exited", 0, "leader")


def test_the_runbook_finds_the_leader_pod_from_the_lease(replicas, kube, ns, api, tmp_path):
    """The runbooks' LEADER line, run against the API server, names the leader's host (its pod
    name in a cluster): `kubectl logs deploy/...` would pick any replica."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed on this machine")
    text = (REPO / "docs" / "runbooks.md").read_text()
    (line,) = [ln for ln in text.splitlines() if ln.startswith("LEADER=$(")]
    a = replicas("a", **ha_config(ns, ns))
    wait_for(lambda: leading(a), 30, message="a leads")
    script = (
        line.replace(
            "kubectl -n NS", f"kubectl --cache-dir {tmp_path / 'kc'} -n {LEASE_NAMESPACE}"
        ).replace("NAME-leader", f"{ns}-leader")
        + '\necho "${LEADER%_*}"\n'
    )
    out = subprocess.run(
        ["bash", "-c", script],
        env={**os.environ, "KUBECONFIG": api.kubeconfig, "PATH": os.path.dirname(kubectl)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == socket.gethostname() == identity(a).rpartition("_")[0]
