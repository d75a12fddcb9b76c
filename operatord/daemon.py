"""`operatord run`: config, logging, metrics, health, leader election and the controller.

Guarantees:
- The config (file, then ``OPERATORD_*`` variables, then flags) is validated and the handler
  imported before anything else happens; the current directory is not on the import path.
- Every start-up failure is one ``error: ...`` line on stderr naming what to fix, with its own
  exit status (no traceback):

  ====  ====================================================================================
  0     stopped by SIGTERM/SIGINT (drained, lease released)
  1     invalid config or handler import failure; or leadership lost while running
  2     bad command line
  3     the metrics or health address cannot be bound (port in use, no permission)
  4     no usable Kubernetes credentials (kubeconfig missing or invalid, not in a pod)
  5     the API server cannot be reached
  6     the API server refuses operatord: credentials rejected (401) or RBAC forbids a
        request operatord needs (403)
  ====  ====================================================================================

- A parent or child type the API server does not serve (CRD not installed) is not an error:
  the daemon logs ``waiting for ... to be served`` (again every 30 s), /readyz says what it
  waits for, and it starts as soon as the type appears.
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

import errno
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING

import structlog

from operatord.config import (
    Config,
    ConfigError,
    ResourceType,
    apply_overrides,
    isolate_import_path,
    load_config,
)
from operatord.handler import HandlerImportError, load_handler
from operatord.health import HealthServer
from operatord.informer import configure as configure_informers
from operatord.kube import ApiError, ClientSettings, Kube
from operatord.logs import configure_logging
from operatord.manager import Manager
from operatord.metrics import Metrics, ProcessSampler
from operatord.namespaces import NamespaceScope

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from types import FrameType

log = structlog.get_logger("operatord.daemon")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_ADDRESS = 3
EXIT_CREDENTIALS = 4
EXIT_UNREACHABLE = 5
EXIT_FORBIDDEN = 6
DRAIN_GRACE_SECONDS = 5.0
CRD_WAIT_LOG_SECONDS = 30.0

SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


class StartupError(Exception):
    """A start-up failure the user must fix; ``code`` is the process exit status."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def lease_namespace(config: Config) -> str:
    """leaderElection.leaseNamespace, else $POD_NAMESPACE, else the service account's, else default."""
    from operatord.election import default_namespace

    return config.leader_election.lease_namespace or default_namespace()


def drain_seconds(config: Config) -> float:
    """How long SIGTERM waits for in-flight syncs: one handler timeout plus time to apply."""
    return config.max_handler_timeout_seconds + DRAIN_GRACE_SECONDS


# -- start-up checks ---------------------------------------------------------------------------


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def bind_servers(config: Config, metrics: Metrics) -> HealthServer | None:
    """Start the metrics and health servers; StartupError(EXIT_ADDRESS) if one cannot bind."""
    health = None
    for what, port, host, key, flag in (
        ("metrics", config.metrics_port, config.metrics_address, "metrics", "--metrics"),
        ("health", config.health_port, config.health_address, "health", "--health-probe"),
    ):
        if not port:
            continue
        try:
            if what == "metrics":
                metrics.serve(port, host or "0.0.0.0")
            else:
                health = HealthServer(port, host or "0.0.0.0")
                health.start()
        except OSError as exc:
            if what == "health" and metrics.port is not None:
                metrics.stop()
            where = f"{host or '0.0.0.0'}:{port}"
            if exc.errno == errno.EADDRINUSE:
                reason = f"port {port} is already in use by another process"
            else:
                reason = exc.strerror or str(exc)
            raise StartupError(
                EXIT_ADDRESS,
                f"cannot serve {what} on {where}: {reason}; choose another {key}.port "
                f"(or {flag}-bind-address), or 0 to turn it off",
            ) from None
    return health


def connect(settings: ClientSettings) -> Kube:
    """A `Kube` for ``settings``; StartupError(EXIT_CREDENTIALS) naming what is missing."""
    path = settings.kubeconfig
    if path and not os.path.exists(path):
        raise StartupError(
            EXIT_CREDENTIALS,
            f"kubeconfig {path} does not exist (--kubeconfig / OPERATORD_KUBECONFIG)",
        )
    if not path and not os.path.exists(SERVICE_ACCOUNT_TOKEN):
        default = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
        if not any(os.path.exists(p) for p in default.split(os.pathsep) if p):
            raise StartupError(
                EXIT_CREDENTIALS,
                "no Kubernetes credentials: not running in a pod (no service account token) "
                f"and no kubeconfig at {default}; pass --kubeconfig FILE",
            )
    try:
        return Kube(settings)
    except Exception as exc:  # noqa: BLE001 - the client raises many types for a bad file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = f"kubeconfig {path}" if path else "the Kubernetes client configuration"
        raise StartupError(EXIT_CREDENTIALS, f"{where} is invalid: {_one_line(first)}") from None


def _refused(exc: ApiError, what: str) -> StartupError:
    if exc.status == 401:
        return StartupError(
            EXIT_FORBIDDEN,
            f"the API server rejected operatord's credentials (401 Unauthorized) on {what}; "
            "check the kubeconfig user or the service account token",
        )
    return StartupError(
        EXIT_FORBIDDEN,
        f"forbidden by RBAC: operatord may not {what} (403: {_one_line(exc.message)}); "
        "grant it in the Role/ClusterRole of its service account (the Helm chart does)",
    )


def check_api(kube: Kube) -> None:
    """The API server answers; StartupError for unreachable (5) or refused (6)."""
    try:
        kube.request("GET", "/version", verb="discovery")
    except ApiError as exc:
        if exc.status == 0:
            raise StartupError(
                EXIT_UNREACHABLE,
                f"cannot reach the API server at {kube.host}: {_one_line(exc.message)[:200]}",
            ) from None
        if exc.status in (401, 403):
            raise _refused(exc, "read /version") from None
        raise StartupError(
            EXIT_UNREACHABLE,
            f"the API server at {kube.host} answered /version with {exc.status} {exc.reason}",
        ) from None


class TypeWait:
    """Readiness check while start-up waits for a type to be served."""

    def __init__(self) -> None:
        self.waiting: str | None = "checking the API server"

    def __call__(self) -> str | None:
        return self.waiting


def wait_for_types(kube: Kube, config: Config, stop: threading.Event, state: TypeWait) -> list:
    """Resolve the parent and child types, waiting (and saying so) while one is not served.

    Returns the resources, or [] when ``stop`` was set while waiting.
    """
    resolved = []
    types: dict[tuple[str, str], ResourceType] = {}
    for ctl in config.controllers:
        for t in (ctl.parent, *ctl.children):
            types.setdefault(t.key, t)
    for rt in types.values():
        next_log = 0.0
        delay = 0.5
        while True:
            try:
                resolved.append(kube.resource(rt.api_version, rt.kind))
                break
            except ApiError as exc:
                if exc.status in (401, 403):
                    raise _refused(exc, f"discover {rt.api_version}") from None
                if exc.status == 0:
                    raise StartupError(
                        EXIT_UNREACHABLE,
                        f"lost the API server while discovering {rt}: {_one_line(exc.message)}",
                    ) from None
                if exc.status != 404:
                    raise
            group = rt.group or "core"
            state.waiting = f"waiting for {rt.kind} ({rt.api_version}) to be served"
            if time.monotonic() >= next_log:
                log.warning(
                    f"waiting for {rt.kind} ({rt.api_version}) to be served: "
                    f"install its CustomResourceDefinition (group {group}); operatord starts "
                    "as soon as it appears",
                    api_version=rt.api_version,
                    kind=rt.kind,
                )
                next_log = time.monotonic() + CRD_WAIT_LOG_SECONDS
            if stop.wait(delay):
                return []
            delay = min(delay * 2, 5.0)
    state.waiting = None
    return resolved


def check_access(kube: Kube, config: Config, resources: list) -> None:
    """One ``list`` per type (limit 1) and a lease ``get``: StartupError(6) on 401/403."""
    scope = NamespaceScope(config.namespace_patterns, config.namespace_selector)
    for res in resources:
        spaces: list[str | None] = list(scope.names) if scope.literal and res.namespaced else [None]
        for ns in spaces:
            where = f" in namespace {ns}" if ns else ""
            try:
                kube.request("GET", res.path(ns), query={"limit": 1}, verb="list")
            except ApiError as exc:
                if exc.status in (401, 403):
                    raise _refused(exc, f"list {res.key}{where}") from None
                if exc.status == 404 and ns:  # a listed namespace that does not exist yet
                    continue
                raise
    if config.leader_election.enabled:
        ns = lease_namespace(config)
        path = f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{config.lease_name}"
        try:
            kube.request("GET", path, verb="get")
        except ApiError as exc:
            if exc.status in (401, 403):
                raise _refused(exc, f"get the lease {ns}/{config.lease_name}") from None
            if exc.status != 404:
                raise


def load(
    config_path: str | Callable[[], Config], flags: Mapping[str, str | None] | None = None
) -> Config:
    """The effective config with its handler importable; ConfigError/HandlerImportError.
    ``config_path``: a config file, or a callable making the config (`operatord.quickstart`)."""
    isolate_import_path()
    base = load_config(config_path) if isinstance(config_path, str) else config_path()
    config, _ = apply_overrides(base, flags)
    for ctl in config.controllers:
        load_handler(ctl.handler, ctl.python_path)
    return config


def run(
    config_path: str | Callable[[], Config],
    kubeconfig: str | None = None,
    flags: Mapping[str, str | None] | None = None,
) -> int:
    """``operatord run``; returns the exit status (see the module docstring)."""
    try:
        config = load(config_path, flags)
    except ConfigError as exc:
        for line in getattr(exc, "errors", None) or [str(exc)]:
            print(f"error: {line}", file=sys.stderr)
        return EXIT_ERROR
    except HandlerImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    configure_logging(config.logging_format, config.logging_level, process="leader")
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal received; draining", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    metrics = Metrics(
        controller=config.name,
        controller_runtime=config.controller_runtime_metrics,
        lease=config.lease_name,
        max_concurrent=config.workers * config.in_flight_per_worker,
    )
    health = None
    code = EXIT_ERROR
    try:
        health = bind_servers(config, metrics)
        code = _run(config, ClientSettings(kubeconfig=kubeconfig), metrics, health, stop)
        return code
    except StartupError as exc:
        log.error(str(exc), exit_code=exc.code)
        print(f"error: {exc}", file=sys.stderr)
        code = exc.code
        return code
    finally:
        metrics.set("leader", 0)
        if health is not None:
            health.stop()
        metrics.stop()
        log.info("exited", exit_code=code)


def _run(
    config: Config,
    settings: ClientSettings,
    metrics: Metrics,
    health: HealthServer | None,
    stop: threading.Event,
) -> int:
    types = TypeWait()
    leading = threading.Event()
    controller: list[Manager] = []
    if health is not None:
        health.add_readiness("startup", types)
        health.add_readiness(
            "controller",
            # Not ready until the machinery exists (between the start-up checks and its
            # creation /readyz must not answer 200); a standby that does not lead is ready.
            lambda: (
                ("starting" if types.waiting is None else None)  # else "startup" says why
                if not controller
                else (controller[0].readiness() if leading.is_set() else None)
            ),
        )
        health.add_liveness("dispatch", lambda: controller[0].liveness() if controller else None)
    kube = connect(settings)
    check_api(kube)
    resources = wait_for_types(kube, config, stop, types)
    if not resources:
        log.info("stopped while waiting for types to be served")
        return EXIT_OK
    check_access(kube, config, resources)
    kube.close()
    configure_informers(silence_seconds=config.health_watch_silence_seconds)
    controller.append(Manager(config, settings, metrics))
    sampler = ProcessSampler(metrics, lambda: controller[0].pool.pids())
    sampler.start()
    log.info(
        "operatord starting",
        name=config.name,
        controllers={c.name: f"{c.parent} <- {c.handler}" for c in config.controllers},
        namespaces=list(config.namespace_patterns) or "all",
        workers=config.workers,
        leader_election=config.leader_election.enabled,
    )
    try:
        if not config.leader_election.enabled:
            leading.set()
            metrics.set("leader", 1)
            controller[0].start()
            while not stop.wait(0.5):
                pass
            controller[0].stop(drain_seconds(config))
            return EXIT_OK
        if config.shards > 1:
            return _run_sharded(config, settings, metrics, controller[0], health, leading, stop)
        return _run_elected(config, settings, metrics, controller[0], health, leading, stop)
    finally:
        sampler.stop()


def _run_elected(
    config: Config,
    settings: ClientSettings,
    metrics: Metrics,
    controller: Manager,
    health: HealthServer | None,
    leading: threading.Event,
    stop: threading.Event,
) -> int:
    from operatord.election import LeaderElector, default_identity

    le = config.leader_election
    lost = threading.Event()
    # A SIGTERM while the controller starts (on the election thread) waits for the start to
    # finish before stopping it; one that came first keeps it from starting at all.
    starting = threading.Lock()

    def started() -> None:
        with starting:
            if stop.is_set():
                return
            leading.set()
            log.info("became leader; starting controller")
            controller.start()

    def stopped() -> None:
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
    with starting:
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


def _run_sharded(
    config: Config,
    settings: ClientSettings,
    metrics: Metrics,
    controller: Manager,
    health: HealthServer | None,
    leading: threading.Event,
    stop: threading.Event,
) -> int:
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
