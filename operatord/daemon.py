"""`operatord run`: config, logging, metrics, health, leader election and the controller.

Guarantees:
- The config is validated and the handler imported before anything else happens; a bad config
  or handler exits with status 1 and a one-line error naming the key or import path.
- With leader election on, the controller runs only while this process holds the lease.
  A leader that cannot renew within renewDeadline stops dispatching at once and exits with
  status 1 (so Kubernetes restarts it as a fresh standby).
- SIGTERM or SIGINT: stop taking work, let in-flight syncs finish (bounded), release the lease
  so a standby takes over at once, exit 0.
- With ``sharding.shards`` > 1 every replica runs the controller for the replica shards whose
  leases it holds (`operatord.shardleases`); losing a shard lease stops that shard only. On
  SIGTERM it drains everything in flight before it releases its shard leases.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import structlog

from operatord.config import ConfigError, load_config
from operatord.controller import Controller
from operatord.handler import HandlerImportError, load_handler
from operatord.health import HealthServer
from operatord.kube import ClientSettings, Kube
from operatord.logs import configure_logging
from operatord.metrics import Metrics

log = structlog.get_logger("operatord.daemon")

EXIT_OK = 0
EXIT_ERROR = 1
DRAIN_GRACE_SECONDS = 5.0


SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def lease_namespace(config) -> str:
    """leaderElection.leaseNamespace, else $POD_NAMESPACE, else the service account's, else default."""
    if config.leader_election.lease_namespace:
        return config.leader_election.lease_namespace
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        with open(SERVICE_ACCOUNT_NAMESPACE) as f:
            return f.read().strip() or "default"
    except OSError:
        return "default"


def drain_seconds(config) -> float:
    """How long SIGTERM waits for in-flight syncs: one handler timeout plus time to apply."""
    return config.handler_timeout_seconds + DRAIN_GRACE_SECONDS


def run(config_path: str, kubeconfig: str | None = None) -> int:
    try:
        config = load_config(config_path)
        load_handler(config.handler, config.python_path)
    except ConfigError as exc:
        for line in getattr(exc, "errors", None) or [str(exc)]:
            print(f"error: {line}", file=sys.stderr)
        return EXIT_ERROR
    except HandlerImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    configure_logging(config.logging_format, config.logging_level, process="leader")
    settings = ClientSettings(kubeconfig=kubeconfig)

    stop = threading.Event()

    def on_signal(signum, _frame):
        log.info("signal received; draining", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    metrics = Metrics()
    if config.metrics_port:
        metrics.serve(config.metrics_port)
    controller = Controller(config, settings, metrics)
    health = HealthServer(config.health_port) if config.health_port else None
    leading = threading.Event()
    if health is not None:
        health.add_readiness(
            "controller", lambda: controller.readiness() if leading.is_set() else None
        )
        health.add_liveness("dispatch", controller.liveness)
        health.start()
    log.info(
        "operatord starting",
        name=config.name,
        handler=config.handler,
        parent=f"{config.parent.api_version}/{config.parent.kind}",
        workers=config.workers,
        leader_election=config.leader_election.enabled,
    )
    try:
        if not config.leader_election.enabled:
            leading.set()
            metrics.set("leader", 1)
            controller.start()
            while not stop.wait(0.5):
                pass
            controller.stop(drain_seconds(config))
            return EXIT_OK
        if config.shards > 1:
            return _run_sharded(config, settings, metrics, controller, health, leading, stop)
        return _run_elected(config, settings, metrics, controller, health, leading, stop)
    finally:
        metrics.set("leader", 0)
        if health is not None:
            health.stop()
        metrics.stop()


def _run_elected(config, settings, metrics, controller, health, leading, stop) -> int:
    from operatord.election import LeaderElector, default_identity

    le = config.leader_election
    lost = threading.Event()

    def started():
        leading.set()
        log.info("became leader; starting controller")
        controller.start()

    def stopped():
        if leading.is_set():
            lost.set()

    elector = LeaderElector(
        Kube(settings),
        name=config.lease_name,
        namespace=lease_namespace(config),
        identity=default_identity(),
        lease_duration=le.lease_duration_seconds,
        renew_deadline=le.renew_deadline_seconds,
        retry_period=le.retry_period_seconds,
        on_started_leading=started,
        on_stopped_leading=stopped,
        metrics=metrics,
    )
    # Every dispatch, worker write and Event checks this deadline (monotonic, system-wide).
    controller.lease_deadline = elector.lease_valid_until
    if health is not None:
        health.add_liveness("election", elector.liveness)
    election_stop = threading.Event()
    t = threading.Thread(target=elector.run, args=(election_stop,), name="election", daemon=True)
    t.start()
    while not stop.is_set() and not lost.is_set():
        stop.wait(0.2)
    if lost.is_set() and not stop.is_set():
        log.error("lost leadership; stopping at once")
        controller.kill_workers()
        election_stop.set()
        return EXIT_ERROR
    if leading.is_set():
        controller.stop(drain_seconds(config))
    election_stop.set()
    t.join(le.retry_period_seconds + 5)
    try:
        elector.release()
    except Exception as exc:  # noqa: BLE001 - a failed release only delays the standby
        log.warning("could not release the lease", error=str(exc))
    log.info("stopped")
    return EXIT_OK


def _run_sharded(config, settings, metrics, controller, health, leading, stop) -> int:
    from operatord.election import default_identity
    from operatord.shardleases import ShardLeases

    le = config.leader_election
    drain_timeout = drain_seconds(config)
    shards = ShardLeases(
        Kube(settings),
        config,
        namespace=lease_namespace(config),
        identity=default_identity(),
        on_acquired=controller.add_shard,
        on_lost=controller.remove_shard,
        on_released=controller.remove_shard,
        drain=lambda k: controller.drain_shard(k, drain_timeout),
        metrics=metrics,
    )
    # Every dispatch and worker write of a parent checks its shard's deadline.
    controller.shard_deadline = shards.valid_until
    if health is not None:
        health.add_liveness("shard-leases", shards.liveness)
    leading.set()  # every replica works; readiness is the controller's
    controller.start()
    balance_stop = threading.Event()
    t = threading.Thread(target=shards.run, args=(balance_stop,), name="shard-leases", daemon=True)
    t.start()
    while not stop.wait(0.5):
        pass
    balance_stop.set()
    t.join(le.retry_period_seconds + le.renew_deadline_seconds + 5)
    controller.stop(drain_timeout)  # nothing in flight after this: the leases may go
    shards.shutdown()
    log.info("stopped")
    return EXIT_OK
