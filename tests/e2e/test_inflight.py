"""Many parents in flight per worker: async handlers, drain on SIGTERM, crash isolation."""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess

from conftest import wait_for
from kubernetes import client
from widgets import create_widget, get_widget


def status(kube, ns, name) -> dict:
    return (get_widget(kube, ns, name) or {}).get("status") or {}


def ready(kube, ns, name) -> bool:
    return bool(status(kube, ns, name).get("ready"))


def test_async_handler_runs_many_parents_at_once(operator, kube, ns):
    # Each call waits until six calls are inside the handler together: only a worker that
    # runs async calls concurrently lets any of them finish.
    operator(namespace=ns, handler="handlers:gathering", workers=1, inFlightPerWorker=8)
    for i in range(6):
        create_widget(kube, ns, f"a{i}", gather=6)
    for i in range(6):
        wait_for(lambda i=i: status(kube, ns, f"a{i}").get("together", 0) >= 6, 30, message=f"a{i}")


def test_sigterm_drains_every_parent_in_flight(operator, kube, ns):
    op = operator(namespace=ns, workers=1, inFlightPerWorker=16)
    names = [f"d{i}" for i in range(6)]
    for name in names:
        create_widget(kube, ns, name, size=1, sleep=0.3)
    # Every parent is in flight (one worker holds all six; the handler runs them one by one).
    wait_for(lambda: op.metric("operatord_in_flight", worker="0") >= 6, 30, message="in flight")
    assert op.stop(40) == 0
    assert [n for n in names if not ready(kube, ns, n)] == []


def events_about(kube, ns, name):
    items = client.CoreV1Api(kube).list_namespaced_event(ns).items
    return [e for e in items if e.involved_object.name == name]


def test_a_parent_that_kills_its_worker_is_isolated_and_backed_off(operator, kube, ns):
    op = operator(namespace=ns, workers=1, inFlightPerWorker=16)
    create_widget(kube, ns, "crasher", size=1, crash=True)
    healthy = [f"h{i}" for i in range(12)]
    for name in healthy:
        create_widget(kube, ns, name, size=1)
    for name in healthy:
        wait_for(lambda name=name: ready(kube, ns, name), 60, message=f"{name} ready")
    event = wait_for(
        lambda: [e for e in events_about(kube, ns, "crasher") if e.reason == "WorkerKilled"],
        60,
        message="WorkerKilled event on the crasher",
    )[0]
    assert event.type == "Warning" and "died" in event.message
    assert not [e for n in healthy for e in events_about(kube, ns, n)], "healthy parents charged"
    wait_for(
        lambda: op.metric("operatord_syncs_total", result="crash") >= 3, 60, message="3 crashes"
    )
    # Backed off and rate-limited in the leader: one Event, however often its worker died.
    killed = [e for e in events_about(kube, ns, "crasher") if e.reason == "WorkerKilled"]
    assert len(killed) == 1 and killed[0].count == 1
    assert "handler killed its worker" in op.output()


def test_the_first_crash_names_its_culprit_however_many_parents_are_in_flight(operator, kube, ns):
    # The handler thread runs one call at a time (0.3 s each): the crasher's call comes while
    # the parents created after it wait in flight on the same worker.
    op = operator(namespace=ns, workers=1, inFlightPerWorker=16)
    before = [f"b{i}" for i in range(3)]
    after = [f"a{i}" for i in range(3)]
    for name in before:
        create_widget(kube, ns, name, size=1, sleep=0.3)
    wait_for(lambda: op.metric("operatord_in_flight", worker="0") >= 3, 30, message="in flight")
    create_widget(kube, ns, "crasher", size=1, crash=True)
    for name in after:
        create_widget(kube, ns, name, size=1, sleep=0.3)
    event = wait_for(
        lambda: [e for e in events_about(kube, ns, "crasher") if e.reason == "WorkerKilled"],
        60,
        message="WorkerKilled event on the crasher",
    )[0]
    assert "the handler killed its worker process" in event.message
    lost = [r for r in op.log_records() if r.get("event", "").startswith("worker lost")]
    # Named at once by the call board: charged, and nobody else suspected or charged.
    assert lost[0]["parents"] >= 2, lost[0]
    assert (lost[0]["culprits"], lost[0]["suspects"]) == (1, 0), lost[0]
    for name in before + after:
        wait_for(lambda name=name: ready(kube, ns, name), 60, message=f"{name} ready")
    assert not [e for n in before + after for e in events_about(kube, ns, n)]
    assert op.metric("operatord_syncs_total", result="crash") >= 1
    lost = [r for r in op.log_records() if r.get("event", "").startswith("worker lost")]
    assert all(r["culprits"] == 1 for r in lost), lost  # every death was charged to the crasher


def test_worker_restarts_adopt_a_spare_and_are_paced_after_a_burst(operator, kube, ns):
    op = operator(namespace=ns, workers=1, backoff={"initialSeconds": 0.01, "maxSeconds": 0.02})
    create_widget(kube, ns, "crasher", size=1, crash=True)
    wait_for(
        lambda: op.metric("operatord_worker_restart_delay_seconds_total") > 0,
        60,
        message="restart pacing",
    )
    records = op.log_records()
    events = [r["event"] for r in records]
    assert "spare worker took over" in events
    paced = [r for r in records if r["event"] == "worker restarts are being paced"]
    assert paced[0]["recent_restarts"] == 11 and paced[0]["delay"] == 0.1  # after 10 at once
    # The burst: each replacement was ready soon after its worker was lost.
    times = [(r["event"], r["timestamp"]) for r in records]
    gaps = []
    for i, (event, at) in enumerate(times):
        if event.startswith("worker lost"):
            nxt = next(
                (t for e, t in times[i + 1 :] if e in ("spare worker took over", "worker started")),
                None,
            )
            if nxt is not None:
                gaps.append(_seconds(nxt) - _seconds(at))
    burst = sorted(gaps[:10])
    assert burst[len(burst) // 2] < 0.2, gaps


def _seconds(timestamp: str) -> float:
    return datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def children(pid: int) -> list[int]:
    """Every child of ``pid``, whichever of its threads started it.

    Read from every process's parent pid: a thread's /proc/PID/task/TID/children list is
    best-effort (a child moves to another thread's list when the thread that forked it ends,
    and a reader can miss it in between)."""
    kids: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the process ended meanwhile
        if ppid == pid:
            kids.append(int(entry))
    return sorted(kids)


def rss_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_the_leader_starts_its_fork_server_and_through_it_its_workers(operator, ns):
    # Boards left by daemons SIGKILLed elsewhere on this machine are not this daemon's.
    earlier = {f for f in os.listdir("/dev/shm") if f.startswith("operatord-calls-")}
    op = operator(namespace=ns, workers=2)
    op.wait_ready()
    kids = children(op.proc.pid)
    commands = [open(f"/proc/{k}/cmdline").read().replace("\0", " ") for k in kids]
    # no resource tracker process: workers use only a pipe (and their call board)
    assert len(kids) == 1 and "multiprocess.forkserver" in commands[0], commands
    workers = children(kids[0])
    assert len(workers) == 2
    assert all(rss_mib(w) < 45 for w in workers), [rss_mib(w) for w in workers]
    assert not [
        f for f in os.listdir("/dev/shm") if f.startswith("operatord-calls-") and f not in earlier
    ]


def test_a_handler_records_normal_events_on_its_parent(operator, kube, ns):
    operator(namespace=ns)
    create_widget(kube, ns, "loud", size=1, announce="hello password=hunter2")
    event = wait_for(
        lambda: [e for e in events_about(kube, ns, "loud") if e.reason == "Announced"],
        30,
        message="Announced event",
    )[0]
    assert event.type == "Normal" and event.message.startswith("hello")
    assert "hunter2" not in event.message  # redacted like logs
    assert event.source.component == "operatord-e2e"


def test_kubectl_describe_shows_the_event_of_the_run_that_created_the_child(
    operator, kube, ns, api, tmp_path
):
    # The README's example: Event("Creating") only from the run that creates the ConfigMap;
    # the status is written from the follow-up run, which returns no Event.
    operator(namespace=ns)
    create_widget(kube, ns, "fresh", size=1, creatingEvent=True)
    wait_for(lambda: ready(kube, ns, "fresh"), 30, message="fresh ready")
    event = wait_for(
        lambda: [e for e in events_about(kube, ns, "fresh") if e.reason == "Creating"],
        30,
        message="Creating event",
    )[0]
    assert event.type == "Normal" and event.message == "creating the ConfigMap fresh"
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return  # the Events API above is what kubectl describe reads
    out = subprocess.run(
        [kubectl, "--cache-dir", str(tmp_path / "kc"), "describe", "widget", "fresh", "-n", ns],
        env={**os.environ, "KUBECONFIG": api.kubeconfig},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    events = out.stdout.split("Events:", 1)[1]
    assert "<none>" not in events and "Creating" in events, out.stdout
    assert "creating the ConfigMap fresh" in events


def test_a_handler_past_the_memory_limit_fails_its_parent_not_the_pod(operator, kube, ns):
    op = operator(namespace=ns, workers=1, workerMemoryLimitMB=150)
    create_widget(kube, ns, "hog", size=1, hog=600)
    create_widget(kube, ns, "modest", size=1, hog=20)
    wait_for(lambda: ready(kube, ns, "modest"), 30, message="modest ready")
    event = wait_for(
        lambda: [e for e in events_about(kube, ns, "hog") if e.reason == "SyncFailed"],
        30,
        message="SyncFailed on the hog",
    )[0]
    assert "MemoryError" in event.message
    assert op.metric("operatord_worker_restarts_total") == 0  # the worker survived
    assert not ready(kube, ns, "hog")
