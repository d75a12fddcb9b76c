"""The YAML config of an operator: loading, validation, and the derived names.

Validation has two layers: the JSON Schema in ``operatord/schema/config.schema.json`` (types,
ranges, enums, unknown keys; also usable by editors) and semantic checks the schema cannot
express (cross-field rules such as ``backoff.maxSeconds >= backoff.initialSeconds``).

Guarantees:

- Every ``Config`` instance is valid: construction validates (directly or via ``from_dict``/
  ``load_config``) and raises ``ConfigError`` otherwise.
- ``Config.to_dict()`` is plain YAML-shaped data with every default filled in and absolute
  ``pythonPath`` entries; ``Config.from_dict(cfg.to_dict()) == cfg`` (this is how the config
  reaches worker processes).
- A ``ConfigError`` has ``errors``, a list of ``"<key path>: <one-line reason>"`` in document
  order; ``str()`` of it is the first one.
"""

from __future__ import annotations

import contextvars
import difflib
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from functools import cache
from importlib import resources
from typing import Any

import yaml

__all__ = [
    "UPDATE_STRATEGIES",
    "BackoffConfig",
    "Config",
    "ConfigError",
    "ControllerConfig",
    "ConfigFileNotFoundError",
    "OVERRIDES",
    "LeaderElectionConfig",
    "Override",
    "RelatedType",
    "ResourceType",
    "ShardingConfig",
    "apply_overrides",
    "check_config_command",
    "config_schema",
    "isolate_import_path",
    "load_config",
    "show_config",
]

UPDATE_STRATEGIES = ("Replace", "Recreate", "OnDelete", "Apply")
LOGGING_FORMATS = ("auto", "console", "json")
# How the leader caches a related type (``related[].cache``): whole objects, their metadata
# only (the worker reads the selected objects at sync time), or nothing (the worker reads them).
RELATED_CACHE_MODES = ("full", "metadata", "none")
LOGGING_LEVELS = ("debug", "info", "warning", "error")

PARENT_UID_LABEL = "operatord.io/parent-uid"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"


class ConfigError(ValueError):
    """An invalid config. ``errors`` lists every problem as ``"<key path>: <reason>"``."""

    def __init__(self, errors: str | Sequence[str]) -> None:
        self.errors: list[str] = [errors] if isinstance(errors, str) else list(errors)
        if not self.errors:
            raise ValueError("ConfigError needs at least one error")
        super().__init__(self.errors[0])

    @classmethod
    def at(cls, path: str, reason: str) -> ConfigError:
        return cls(f"{path or '(root)'}: {reason}")

    def __str__(self) -> str:
        return self.errors[0]


class ConfigFileNotFoundError(ConfigError):
    """The config file does not exist."""


# --------------------------------------------------------------------------------------------
# Dataclasses
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResourceType:
    """A Kubernetes resource type, ``(apiVersion, kind)``, and how children of it are updated."""

    api_version: str
    kind: str
    update_strategy: str = "Replace"

    @property
    def group(self) -> str:
        """The API group; ``""`` for the core group (``apiVersion: v1``)."""
        group, sep, _ = self.api_version.rpartition("/")
        return group if sep else ""

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    @property
    def key(self) -> tuple[str, str]:
        """``(apiVersion, kind)``, the identity of the type (update strategy aside)."""
        return (self.api_version, self.kind)

    def __str__(self) -> str:
        return f"{self.api_version}/{self.kind}"


def default_related_cache(api_version: str, kind: str) -> str:
    """``metadata`` for core Secrets (their data never enters the leader), else ``full``."""
    return "metadata" if (api_version, kind) == ("v1", "Secret") else "full"


@dataclass(frozen=True)
class RelatedType:
    """A type the handler may read (``related``): watched and cached by the leader, read only.

    ``label_selector`` (``""``: none) limits what is listed, watched and cached. ``cache``
    is one of `RELATED_CACHE_MODES`; ``""`` resolves to `default_related_cache` of the type.
    """

    api_version: str
    kind: str
    label_selector: str = ""
    cache: str = ""

    def __post_init__(self) -> None:
        if not self.cache:
            object.__setattr__(self, "cache", default_related_cache(self.api_version, self.kind))

    @property
    def key(self) -> tuple[str, str]:
        return (self.api_version, self.kind)

    def __str__(self) -> str:
        return f"{self.api_version}/{self.kind}"


@dataclass(frozen=True)
class BackoffConfig:
    """Per-parent retry delays: ``initial * multiplier**(n-1)``, capped, with +/- jitter."""

    initial_seconds: float = 0.5
    max_seconds: float = 300.0
    multiplier: float = 2.0
    jitter: float = 0.5


@dataclass(frozen=True)
class LeaderElectionConfig:
    """Lease-based leader election; ``lease_name``/``lease_namespace`` ``""`` mean defaults."""

    enabled: bool = True
    lease_name: str = ""
    lease_namespace: str = ""
    lease_duration_seconds: float = 15.0
    renew_deadline_seconds: float = 10.0
    retry_period_seconds: float = 2.0
    warm_standby: bool = True


@dataclass(frozen=True)
class ShardingConfig:
    """Active-active replicas: ``shards`` fixed UID-hash ranges, one Lease each (1: one leader)."""

    shards: int = 1


@dataclass(frozen=True)
class ControllerConfig:
    """One controller of a daemon: a parent type, the handler that syncs it, its child and
    related types, and its own retry and resync settings.

    Built by `Config` (from ``controllers:`` or, for a single-controller file, from the
    top-level keys); the derived names (finalizer, field manager, managed-by value) are fixed
    there so that two controllers of one daemon never share a finalizer.
    """

    name: str
    handler: str
    python_path: tuple[str, ...]
    parent: ResourceType
    children: tuple[ResourceType, ...] = ()
    related: tuple[RelatedType, ...] = ()
    resync_seconds: float = 600.0
    handler_timeout_seconds: float = 30.0
    backoff: BackoffConfig = field(default_factory=BackoffConfig)
    in_flight_share: float = 1.0
    conditions: bool = True  # maintain Ready/Reconciling/Stalled in the parents' status
    # Skip the handler when a parent's inputs are those of its last converged sync
    # (operatord.fingerprint); handler_version "" means: the hash of the handler's source.
    skip_unchanged: bool = True
    handler_version: str = ""
    finalizer: str = ""
    field_manager: str = ""
    managed_by: str = ""  # the daemon's name: the managed-by label value of every child

    @property
    def parent_uid_label(self) -> str:
        return PARENT_UID_LABEL

    @property
    def managed_by_label(self) -> str:
        return MANAGED_BY_LABEL

    @property
    def child_keys(self) -> frozenset[tuple[str, str]]:
        """``(apiVersion, kind)`` of every child type (for ``validate_sync_response``)."""
        return frozenset(c.key for c in self.children)

    @property
    def related_keys(self) -> frozenset[tuple[str, str]]:
        """``(apiVersion, kind)`` of every related type (what ``related()`` may select)."""
        return frozenset(r.key for r in self.related)

    def child_type(self, api_version: str, kind: str) -> ResourceType | None:
        """The configured child type ``(api_version, kind)``, or None."""
        for c in self.children:
            if c.key == (api_version, kind):
                return c
        return None

    def to_dict(self) -> dict[str, Any]:
        """The controller's keys as YAML-shaped plain data (an item of ``controllers:``)."""
        b = self.backoff
        return {
            "name": self.name,
            "handler": self.handler,
            "pythonPath": list(self.python_path),
            "parent": {"apiVersion": self.parent.api_version, "kind": self.parent.kind},
            "children": [
                {"apiVersion": c.api_version, "kind": c.kind, "updateStrategy": c.update_strategy}
                for c in self.children
            ],
            "related": [
                {
                    "apiVersion": r.api_version,
                    "kind": r.kind,
                    "labelSelector": r.label_selector,
                    "cache": r.cache,
                }
                for r in self.related
            ],
            "resyncSeconds": self.resync_seconds,
            "handlerTimeoutSeconds": self.handler_timeout_seconds,
            "backoff": {
                "initialSeconds": b.initial_seconds,
                "maxSeconds": b.max_seconds,
                "multiplier": b.multiplier,
                "jitter": b.jitter,
            },
            "inFlightShare": self.in_flight_share,
            "conditions": self.conditions,
            "skipUnchanged": self.skip_unchanged,
            "handlerVersion": self.handler_version,
        }


def _floats(obj: Any, names: Iterable[str] | None = None) -> Any:
    """Turn int fields of a validated frozen dataclass into floats (bools are left alone)."""
    if names is None:  # rebuild a nested dataclass
        changes = {
            f.name: float(v)
            for f in fields(obj)
            if isinstance(v := getattr(obj, f.name), int) and not isinstance(v, bool)
        }
        return replace(obj, **changes) if changes else obj
    for name in names:
        object.__setattr__(obj, name, float(getattr(obj, name)))
    return obj


def _cpu_count() -> int:
    return os.cpu_count() or 1


@dataclass(frozen=True)
class Config:
    """A validated operator config. See docs/config.md for the meaning of every key."""

    name: str
    handler: str = ""  # single-controller form (top-level keys); "" with ``controllers``
    python_path: tuple[str, ...] = ()
    parent: ResourceType | None = None  # single-controller form; None with ``controllers``
    children: tuple[ResourceType, ...] = ()
    namespace: str = ""
    workers: int = field(default_factory=_cpu_count)
    in_flight_per_worker: int = 16
    in_flight_adaptive: bool = True
    worker_memory_limit_mb: int = 0
    resync_seconds: float = 600.0
    handler_timeout_seconds: float = 30.0
    backoff: BackoffConfig = field(default_factory=BackoffConfig)
    leader_election: LeaderElectionConfig = field(default_factory=LeaderElectionConfig)
    metrics_port: int = 8080
    health_port: int = 8081
    metrics_address: str = ""
    health_address: str = ""
    health_watch_silence_seconds: float = 10.0
    controller_runtime_metrics: bool = False
    logging_format: str = "auto"
    logging_level: str = "info"
    related: tuple[RelatedType, ...] = ()
    sharding: ShardingConfig = field(default_factory=ShardingConfig)
    # Maintain the standard Ready/Reconciling/Stalled conditions in every parent's status (the
    # default of every controller; each may override it).
    conditions: bool = True
    # Skip unchanged parents (the default of every controller) and, in the single-controller
    # form, the handler's explicit version.
    skip_unchanged: bool = True
    handler_version: str = ""
    namespaces: tuple[str, ...] = ()
    namespace_selector: str = ""
    # Every controller of the daemon. A single-controller config (top-level handler and
    # parent) has exactly one, named after the daemon, derived from the top-level keys.
    controllers: tuple[ControllerConfig, ...] = ()

    def __post_init__(self) -> None:
        # Normalize sequences to tuples and relative paths to absolute ones, then validate the
        # whole thing through the same path as YAML input so every instance is valid.
        paths = self.python_path
        if isinstance(paths, str):
            raise ConfigError.at("pythonPath", "must be a list of directories, got a string")
        object.__setattr__(
            self, "python_path", tuple(os.path.abspath(str(p)) for p in (paths or ()))
        )
        object.__setattr__(self, "children", tuple(self.children or ()))
        object.__setattr__(self, "related", tuple(self.related or ()))
        if isinstance(self.namespaces, str):
            raise ConfigError.at("namespaces", "must be a list of namespace patterns")
        object.__setattr__(self, "namespaces", tuple(self.namespaces or ()))
        if self.workers is None:
            object.__setattr__(self, "workers", _cpu_count())
        for name, kind in (
            ("backoff", BackoffConfig),
            ("leader_election", LeaderElectionConfig),
            ("sharding", ShardingConfig),
        ):
            if not isinstance(getattr(self, name), kind):
                raise ConfigError.at(name, f"must be a {kind.__name__}")
        if self.parent is not None and not isinstance(self.parent, ResourceType):
            raise ConfigError.at("parent", "must be a ResourceType")
        if not all(isinstance(c, ResourceType) for c in self.children):
            raise ConfigError.at("children", "must be ResourceType instances")
        if not all(isinstance(c, ControllerConfig) for c in self.controllers or ()):
            raise ConfigError.at("controllers", "must be ControllerConfig instances")
        object.__setattr__(self, "controllers", tuple(self.controllers or ()))
        if self.parent is not None:
            object.__setattr__(self, "controllers", ())
        _validate(self.to_dict())
        # Seconds are floats whatever the YAML said, so equal configs compare and print alike.
        _floats(self, ("resync_seconds", "handler_timeout_seconds", "health_watch_silence_seconds"))
        object.__setattr__(self, "backoff", _floats(self.backoff))
        object.__setattr__(self, "leader_election", _floats(self.leader_election))
        if self.parent is not None:
            object.__setattr__(
                self,
                "controllers",
                (
                    ControllerConfig(
                        name=self.name,
                        handler=self.handler,
                        python_path=self.python_path,
                        parent=self.parent,
                        children=self.children,
                        related=self.related,
                        resync_seconds=self.resync_seconds,
                        handler_timeout_seconds=self.handler_timeout_seconds,
                        backoff=self.backoff,
                        conditions=self.conditions,
                        skip_unchanged=self.skip_unchanged,
                        handler_version=self.handler_version,
                        finalizer=f"operatord.io/{self.name}",
                        field_manager=f"operatord-{self.name}",
                        managed_by=self.name,
                    ),
                ),
            )
        else:
            object.__setattr__(
                self,
                "controllers",
                tuple(
                    replace(
                        c,
                        python_path=tuple(os.path.abspath(str(p)) for p in c.python_path),
                        children=tuple(c.children),
                        related=tuple(c.related),
                        resync_seconds=float(c.resync_seconds),
                        handler_timeout_seconds=float(c.handler_timeout_seconds),
                        in_flight_share=float(c.in_flight_share),
                        backoff=_floats(c.backoff),
                        finalizer=f"operatord.io/{self.name}.{c.name}",
                        field_manager=f"operatord-{self.name}.{c.name}",
                        managed_by=self.name,
                    )
                    for c in self.controllers
                ),
            )

    # -- controllers and scope ------------------------------------------------------------

    @property
    def single(self) -> bool:
        """A single-controller config (top-level ``handler`` and ``parent``)."""
        return self.parent is not None

    def controller(self, name: str) -> ControllerConfig:
        """The controller called ``name``; KeyError when there is none."""
        for c in self.controllers:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def namespace_patterns(self) -> tuple[str, ...]:
        """The namespace scope as patterns: ``namespaces``, or the legacy ``namespace``."""
        if self.namespaces:
            return self.namespaces
        return (self.namespace,) if self.namespace else ()

    @property
    def max_handler_timeout_seconds(self) -> float:
        """The longest handler timeout of any controller (drain and hang deadlines)."""
        return max(c.handler_timeout_seconds for c in self.controllers)

    # -- derived names -----------------------------------------------------------------------

    @property
    def finalizer(self) -> str:
        """The finalizer of a single-controller config (each controller has its own)."""
        return self.controllers[0].finalizer

    @property
    def field_manager(self) -> str:
        return self.controllers[0].field_manager

    @property
    def lease_name(self) -> str:
        return self.leader_election.lease_name or f"{self.name}-leader"

    @property
    def shards(self) -> int:
        """``sharding.shards``: 1 means one leader lease and no shard leases."""
        return self.sharding.shards

    def shard_lease_name(self, k: int) -> str:
        """The Lease of shard ``k``: ``<name>-shard-<k>``."""
        return f"{self.name}-shard-{k}"

    @property
    def parent_uid_label(self) -> str:
        return PARENT_UID_LABEL

    @property
    def managed_by_label(self) -> str:
        return MANAGED_BY_LABEL

    @property
    def child_keys(self) -> frozenset[tuple[str, str]]:
        """``(apiVersion, kind)`` of every child type of every controller."""
        return frozenset(c.key for ctl in self.controllers for c in ctl.children)

    @property
    def related_keys(self) -> frozenset[tuple[str, str]]:
        """``(apiVersion, kind)`` of every related type of every controller."""
        return frozenset(r.key for ctl in self.controllers for r in ctl.related)

    def child_type(self, api_version: str, kind: str) -> ResourceType | None:
        """The configured child type ``(api_version, kind)`` of any controller, or None."""
        for ctl in self.controllers:
            found = ctl.child_type(api_version, kind)
            if found is not None:
                return found
        return None

    # -- plain data ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The config as YAML-shaped plain data, every default filled in."""
        b, le = self.backoff, self.leader_election
        out: dict[str, Any] = {"name": self.name}
        if self.parent is not None:
            out.update(
                {
                    "handler": self.handler,
                    "pythonPath": list(self.python_path),
                    "parent": {"apiVersion": self.parent.api_version, "kind": self.parent.kind},
                    "children": [
                        {
                            "apiVersion": c.api_version,
                            "kind": c.kind,
                            "updateStrategy": c.update_strategy,
                        }
                        for c in self.children
                    ],
                    "handlerVersion": self.handler_version,
                }
            )
        else:
            out["controllers"] = [c.to_dict() for c in self.controllers]
        out["namespaces"] = list(self.namespaces)
        out["namespaceSelector"] = self.namespace_selector
        out.update(self._daemon_dict(b, le))
        if self.parent is not None:
            out["related"] = [
                {
                    "apiVersion": r.api_version,
                    "kind": r.kind,
                    "labelSelector": r.label_selector,
                    "cache": r.cache,
                }
                for r in self.related
            ]
        out["sharding"] = {"shards": self.sharding.shards}
        return out

    def _daemon_dict(self, b: BackoffConfig, le: LeaderElectionConfig) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "workers": self.workers,
            "inFlightPerWorker": self.in_flight_per_worker,
            "inFlightAdaptive": self.in_flight_adaptive,
            "workerMemoryLimitMB": self.worker_memory_limit_mb,
            "resyncSeconds": self.resync_seconds,
            "handlerTimeoutSeconds": self.handler_timeout_seconds,
            "backoff": {
                "initialSeconds": b.initial_seconds,
                "maxSeconds": b.max_seconds,
                "multiplier": b.multiplier,
                "jitter": b.jitter,
            },
            "leaderElection": {
                "enabled": le.enabled,
                "leaseName": le.lease_name,
                "leaseNamespace": le.lease_namespace,
                "leaseDurationSeconds": le.lease_duration_seconds,
                "renewDeadlineSeconds": le.renew_deadline_seconds,
                "retryPeriodSeconds": le.retry_period_seconds,
                "warmStandby": le.warm_standby,
            },
            "metrics": {
                "port": self.metrics_port,
                "address": self.metrics_address,
                "controllerRuntime": self.controller_runtime_metrics,
            },
            "health": {
                "port": self.health_port,
                "address": self.health_address,
                "watchSilenceSeconds": self.health_watch_silence_seconds,
            },
            "logging": {"format": self.logging_format, "level": self.logging_level},
            "conditions": self.conditions,
            "skipUnchanged": self.skip_unchanged,
        }

    @classmethod
    def from_trusted_dict(cls, data: dict[str, Any]) -> Config:
        """Rebuild a Config from another Config's ``to_dict()`` without validating it again
        (how worker processes receive it)."""
        token = _TRUSTED.set(True)
        try:
            return cls.from_dict(data)
        finally:
            _TRUSTED.reset(token)

    @classmethod
    def from_dict(cls, data: Any, base_dir: str | os.PathLike[str] | None = None) -> Config:
        """Validate YAML-shaped data and build a Config.

        Relative ``pythonPath`` entries resolve against ``base_dir`` (default: the current
        directory). Raises ``ConfigError``.
        """
        _validate(data)
        base = os.path.abspath(base_dir if base_dir is not None else os.getcwd())
        b = data.get("backoff", {})
        le = data.get("leaderElection", {})
        workers = data.get("workers")
        backoff = _backoff_from(b, BackoffConfig())
        resync = float(data.get("resyncSeconds", cls.resync_seconds))
        timeout = float(data.get("handlerTimeoutSeconds", cls.handler_timeout_seconds))
        python_path = tuple(
            os.path.normpath(os.path.join(base, p)) for p in data.get("pythonPath", [])
        )
        single = "controllers" not in data
        return cls(
            name=data["name"],
            handler=data["handler"] if single else "",
            python_path=python_path if single else (),
            parent=_type_from(data["parent"]) if single else None,
            children=_children_from(data.get("children", [])),
            controllers=tuple(
                ControllerConfig(
                    name=c["name"],
                    handler=c["handler"],
                    python_path=tuple(
                        os.path.normpath(os.path.join(base, p)) for p in c.get("pythonPath", [])
                    )
                    or python_path,
                    parent=_type_from(c["parent"]),
                    children=_children_from(c.get("children", [])),
                    related=_related_from(c.get("related", [])),
                    resync_seconds=float(c.get("resyncSeconds", resync)),
                    handler_timeout_seconds=float(c.get("handlerTimeoutSeconds", timeout)),
                    backoff=_backoff_from(c.get("backoff", {}), backoff),
                    in_flight_share=float(c.get("inFlightShare", 1.0)),
                    conditions=bool(c.get("conditions", data.get("conditions", True))),
                    skip_unchanged=bool(
                        c.get("skipUnchanged", data.get("skipUnchanged", cls.skip_unchanged))
                    ),
                    handler_version=str(c.get("handlerVersion", "")),
                )
                for c in data.get("controllers", [])
            ),
            namespaces=tuple(data.get("namespaces", ())),
            namespace_selector=data.get("namespaceSelector", ""),
            namespace=data.get("namespace", cls.namespace),
            workers=_cpu_count() if workers is None else int(workers),
            in_flight_per_worker=int(data.get("inFlightPerWorker", cls.in_flight_per_worker)),
            in_flight_adaptive=bool(data.get("inFlightAdaptive", cls.in_flight_adaptive)),
            worker_memory_limit_mb=int(data.get("workerMemoryLimitMB", cls.worker_memory_limit_mb)),
            resync_seconds=resync,
            handler_timeout_seconds=timeout,
            backoff=backoff,
            leader_election=LeaderElectionConfig(
                enabled=le.get("enabled", LeaderElectionConfig.enabled),
                lease_name=le.get("leaseName", LeaderElectionConfig.lease_name),
                lease_namespace=le.get("leaseNamespace", LeaderElectionConfig.lease_namespace),
                lease_duration_seconds=float(
                    le.get("leaseDurationSeconds", LeaderElectionConfig.lease_duration_seconds)
                ),
                renew_deadline_seconds=float(
                    le.get("renewDeadlineSeconds", LeaderElectionConfig.renew_deadline_seconds)
                ),
                retry_period_seconds=float(
                    le.get("retryPeriodSeconds", LeaderElectionConfig.retry_period_seconds)
                ),
                warm_standby=le.get("warmStandby", LeaderElectionConfig.warm_standby),
            ),
            metrics_port=int(data.get("metrics", {}).get("port", cls.metrics_port)),
            health_port=int(data.get("health", {}).get("port", cls.health_port)),
            metrics_address=data.get("metrics", {}).get("address", cls.metrics_address),
            health_address=data.get("health", {}).get("address", cls.health_address),
            health_watch_silence_seconds=data.get("health", {}).get(
                "watchSilenceSeconds", cls.health_watch_silence_seconds
            ),
            controller_runtime_metrics=data.get("metrics", {}).get(
                "controllerRuntime", cls.controller_runtime_metrics
            ),
            logging_format=data.get("logging", {}).get("format", cls.logging_format),
            logging_level=data.get("logging", {}).get("level", cls.logging_level),
            related=_related_from(data.get("related", [])),
            sharding=ShardingConfig(
                shards=int(data.get("sharding", {}).get("shards", ShardingConfig.shards))
            ),
            conditions=bool(data.get("conditions", cls.conditions)),
            skip_unchanged=bool(data.get("skipUnchanged", cls.skip_unchanged)),
            handler_version=str(data.get("handlerVersion", "")) if single else "",
        )


def _type_from(d: dict[str, Any]) -> ResourceType:
    return ResourceType(d["apiVersion"], d["kind"])


def _children_from(items: list[dict[str, Any]]) -> tuple[ResourceType, ...]:
    return tuple(
        ResourceType(c["apiVersion"], c["kind"], c.get("updateStrategy", "Replace")) for c in items
    )


def _related_from(items: list[dict[str, Any]]) -> tuple[RelatedType, ...]:
    return tuple(
        RelatedType(r["apiVersion"], r["kind"], r.get("labelSelector", ""), r.get("cache", ""))
        for r in items
    )


def _backoff_from(b: dict[str, Any], default: BackoffConfig) -> BackoffConfig:
    return BackoffConfig(
        initial_seconds=float(b.get("initialSeconds", default.initial_seconds)),
        max_seconds=float(b.get("maxSeconds", default.max_seconds)),
        multiplier=float(b.get("multiplier", default.multiplier)),
        jitter=float(b.get("jitter", default.jitter)),
    )


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


@cache
def config_schema() -> dict[str, Any]:
    """The JSON Schema of the config (``operatord/schema/config.schema.json``)."""
    text = resources.files("operatord").joinpath("schema/config.schema.json").read_text("utf-8")
    return json.loads(text)


@cache
def _validator() -> Any:
    import jsonschema  # imported lazily: `import operatord` stays cheap

    return jsonschema.Draft202012Validator(config_schema())


def _key_path(parts: Iterable[Any]) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += f".{p}" if out else str(p)
    return out


def _show(value: Any) -> str:
    """A value as the user wrote it in YAML, shortened."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _num(x: float) -> str:
    return f"{x:g}"


def _expected(schema: dict[str, Any]) -> str:
    """Describe what a schema accepts, e.g. 'an integer >= 1' or 'one of a, b'."""
    if "enum" in schema:
        return "one of " + ", ".join(str(v) for v in schema["enum"])
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else [t for t in types if t != "null"]
    t = types[0] if types else ""
    noun = {
        "integer": "an integer",
        "number": "a number",
        "string": "a string",
        "boolean": "true or false",
        "object": "a mapping",
        "array": "a list",
    }.get(t, t)
    lo, hi = schema.get("minimum"), schema.get("maximum")
    if lo is not None and hi is not None:
        return f"{noun} from {_num(lo)} to {_num(hi)}"
    if lo is not None:
        return f"{noun} >= {_num(lo)}"
    if "exclusiveMinimum" in schema:
        return f"{noun} > {_num(schema['exclusiveMinimum'])}"
    if hi is not None:
        return f"{noun} <= {_num(hi)}"
    if t == "string" and schema.get("minLength"):
        return "a non-empty string"
    return noun


def _schema_errors(data: Any) -> list[tuple[list[Any], str]]:
    """(path, reason) for every schema violation, reasons phrased for humans."""
    out: list[tuple[list[Any], str]] = []
    for err in _validator().iter_errors(data):
        path = list(err.absolute_path)
        schema = err.schema if isinstance(err.schema, dict) else {}
        kind = err.validator
        if kind == "additionalProperties":
            allowed = list(schema.get("properties", {}))
            for key in err.instance:
                if key in allowed:
                    continue
                hint = difflib.get_close_matches(str(key), allowed, n=1)
                did_you_mean = f", did you mean {hint[0]!r}?" if hint else ""
                out.append(
                    (
                        [*path, key if isinstance(key, str) else repr(key)],
                        f"unknown key{did_you_mean} (allowed: {', '.join(allowed)})",
                    )
                )
        elif kind == "required":
            for key in err.validator_value:
                if isinstance(err.instance, dict) and key not in err.instance:
                    out.append(([*path, key], "required key missing"))
        elif kind in ("pattern", "minLength", "maxLength") and "errorMessage" in schema:
            out.append((path, f"{schema['errorMessage']}, got {_show(err.instance)}"))
        elif kind in (
            "type",
            "enum",
            "minimum",
            "maximum",
            "exclusiveMinimum",
            "minLength",
            "maxLength",
        ):
            out.append((path, f"must be {_expected(schema)}, got {_show(err.instance)}"))
        else:  # keywords the schema does not use today; keep jsonschema's wording
            out.append((path, err.message))
    unique: dict[tuple[str, str], tuple[list[Any], str]] = {}
    for p, reason in out:  # jsonschema reports each missing key once per missing key
        unique.setdefault((_key_path(p), reason), (p, reason))
    return list(unique.values())


def _document_order(data: Any, path: list[Any]) -> tuple[int, ...]:
    """Sort key placing a path where it appears in the document (absent keys last)."""
    order: list[int] = []
    node = data
    for part in path:
        if isinstance(node, dict):
            keys = list(node)
            order.append(keys.index(part) if part in node else len(keys))
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int):
            order.append(part)
            node = node[part] if part < len(node) else None
        else:
            order.append(0)
            node = None
    return tuple(order)


def _semantic_errors(d: dict[str, Any]) -> list[tuple[list[Any], str]]:
    """Cross-field rules and non-finite numbers; ``d`` has passed the schema."""
    out: list[tuple[list[Any], str]] = []

    # JSON Schema cannot reject YAML's .nan/.inf (every comparison with NaN is false)
    stack: list[tuple[list[Any], Any]] = [([], d)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, float) and not math.isfinite(node):
            out.append((path, f"must be a finite number, got {node}"))
        elif isinstance(node, dict):
            stack.extend(([*path, k], v) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend(([*path, i], v) for i, v in enumerate(node))
    if out:
        return out

    def value(section: str, key: str, default: float) -> tuple[float, str]:
        raw = d.get(section, {})
        if key in raw:
            return float(raw[key]), _num(raw[key])
        return default, f"{_num(default)} (the default)"

    initial, _ = value("backoff", "initialSeconds", BackoffConfig.initial_seconds)
    maximum, max_shown = value("backoff", "maxSeconds", BackoffConfig.max_seconds)
    if maximum < initial:
        out.append(
            (
                ["backoff", "maxSeconds"],
                f"must be >= backoff.initialSeconds ({_num(initial)}), got {max_shown}",
            )
        )

    lease, _ = value(
        "leaderElection", "leaseDurationSeconds", LeaderElectionConfig.lease_duration_seconds
    )
    renew, renew_shown = value(
        "leaderElection", "renewDeadlineSeconds", LeaderElectionConfig.renew_deadline_seconds
    )
    retry, retry_shown = value(
        "leaderElection", "retryPeriodSeconds", LeaderElectionConfig.retry_period_seconds
    )
    if not renew < lease:
        out.append(
            (
                ["leaderElection", "renewDeadlineSeconds"],
                f"must be < leaderElection.leaseDurationSeconds ({_num(lease)}), got {renew_shown}",
            )
        )
    elif not renew > 1.2 * retry:
        out.append(
            (
                ["leaderElection", "retryPeriodSeconds"],
                f"must be < leaderElection.renewDeadlineSeconds / 1.2 ({_num(renew / 1.2)}), "
                f"got {retry_shown} (renewDeadline must exceed 1.2 * retryPeriod)",
            )
        )

    shards = d.get("sharding", {}).get("shards", ShardingConfig.shards)
    if shards > 1 and not d.get("leaderElection", {}).get("enabled", LeaderElectionConfig.enabled):
        out.append(
            (
                ["sharding", "shards"],
                f"{shards} shards need leaderElection.enabled: true (each shard is held "
                "through its own Lease)",
            )
        )

    metrics_port = d.get("metrics", {}).get("port", Config.metrics_port)
    health_port = d.get("health", {}).get("port", Config.health_port)
    if metrics_port and metrics_port == health_port:
        out.append((["health", "port"], f"must differ from metrics.port ({metrics_port})"))

    if "controllers" in d:
        for top_key in ("handler", "parent", "children", "related", "handlerVersion"):
            if top_key in d:
                out.append(
                    (
                        [top_key],
                        "with a controllers list, each controller names its own "
                        f"{top_key}: move it into the controllers that need it",
                    )
                )
        names: dict[str, int] = {}
        parents: dict[tuple[str, str], int] = {}
        related_selectors: dict[tuple[str, str], tuple[str, int, int]] = {}
        related_modes: dict[tuple[str, str], tuple[str, int]] = {}
        for n, ctl in enumerate(d["controllers"]):
            if ctl["name"] in names:
                out.append(
                    (
                        ["controllers", n, "name"],
                        f"{ctl['name']!r} is already the name of controllers[{names[ctl['name']]}]",
                    )
                )
            else:
                names[ctl["name"]] = n
            key = (ctl["parent"]["apiVersion"], ctl["parent"]["kind"])
            if key in parents:
                out.append(
                    (
                        ["controllers", n, "parent"],
                        f"{key[0]}/{key[1]} is already the parent of controllers[{parents[key]}] "
                        "(one controller per parent type)",
                    )
                )
            else:
                parents[key] = n
            b = ctl.get("backoff", {})
            top = d.get("backoff", {})
            lo = float(b.get("initialSeconds", top.get("initialSeconds", 0.5)))
            hi = float(b.get("maxSeconds", top.get("maxSeconds", 300.0)))
            if hi < lo:
                out.append(
                    (
                        ["controllers", n, "backoff", "maxSeconds"],
                        f"must be >= backoff.initialSeconds ({_num(lo)}), got {_num(hi)}",
                    )
                )
            out.extend(_type_errors(ctl, ["controllers", n]))
            for i, rel in enumerate(ctl.get("related", [])):
                rkey = (rel["apiVersion"], rel["kind"])
                selector = rel.get("labelSelector", "")
                if rkey in related_selectors and related_selectors[rkey][0] != selector:
                    other, on, oi = related_selectors[rkey]
                    out.append(
                        (
                            ["controllers", n, "related", i, "labelSelector"],
                            f"{rkey[0]}/{rkey[1]} is related to controllers[{on}] with "
                            f"labelSelector {other!r}; a related type is cached once per "
                            "daemon, so every controller must give it the same selector",
                        )
                    )
                related_selectors.setdefault(rkey, (selector, n, i))
                mode = rel.get("cache") or default_related_cache(*rkey)
                if rkey in related_modes and related_modes[rkey][0] != mode:
                    other, on = related_modes[rkey]
                    out.append(
                        (
                            ["controllers", n, "related", i, "cache"],
                            f"{rkey[0]}/{rkey[1]} is related to controllers[{on}] with cache "
                            f"{other!r}; a related type is cached once per daemon, so every "
                            "controller must give it the same cache mode",
                        )
                    )
                related_modes.setdefault(rkey, (mode, n))
    elif "handler" not in d or "parent" not in d:
        for missing in ("handler", "parent"):
            if missing not in d:
                out.append(([missing], "required key missing"))
    else:
        out.extend(_type_errors(d, []))
    if d.get("namespace") and d.get("namespaces"):
        out.append(
            (
                ["namespaces"],
                f"give either namespace ({d['namespace']!r}) or namespaces, not both",
            )
        )
    problem = _label_selector_problem(d.get("namespaceSelector", ""))
    if problem:
        out.append((["namespaceSelector"], problem))
    return out


def _type_errors(d: dict[str, Any], at: list[Any]) -> list[tuple[list[Any], str]]:
    """The parent, children and related rules of one controller (``d`` at path ``at``)."""
    out: list[tuple[list[Any], str]] = []
    parent = (d["parent"]["apiVersion"], d["parent"]["kind"])
    seen: dict[tuple[str, str], int] = {}
    for i, child in enumerate(d.get("children", [])):
        key = (child["apiVersion"], child["kind"])
        if key == parent:
            out.append(
                (
                    [*at, "children", i],
                    f"{key[0]}/{key[1]} is the parent type; a type cannot be both parent and child",
                )
            )
        elif key in seen:
            out.append(
                (
                    [*at, "children", i],
                    f"{key[0]}/{key[1]} is already listed as children[{seen[key]}]",
                )
            )
        else:
            seen[key] = i
    related_seen: dict[tuple[str, str], int] = {}
    for i, rel in enumerate(d.get("related", [])):
        key = (rel["apiVersion"], rel["kind"])
        if key in related_seen:
            out.append(
                (
                    [*at, "related", i],
                    f"{key[0]}/{key[1]} is already listed as related[{related_seen[key]}]",
                )
            )
        else:
            related_seen[key] = i
        problem = _label_selector_problem(rel.get("labelSelector", RelatedType.label_selector))
        if problem:
            out.append(([*at, "related", i, "labelSelector"], problem))
    return out


def _label_selector_problem(selector: str) -> str | None:
    """Why ``selector`` is not a valid label selector, or None."""
    from operatord.selectors import SelectorError, parse_selector

    try:
        parse_selector(selector)
    except SelectorError as exc:
        return str(exc)
    return None


# Set while building a Config from data a validated Config produced (worker processes): the
# schema check is skipped there, so workers never import jsonschema.
_TRUSTED: contextvars.ContextVar[bool] = contextvars.ContextVar("trusted_config", default=False)


def _validate(data: Any) -> None:
    if _TRUSTED.get():
        return
    if not isinstance(data, dict):
        what = "empty" if data is None else _show(data)
        raise ConfigError.at("(root)", f"the config must be a mapping of keys, got {what}")
    found = _schema_errors(data)
    if found and "controllers" not in data:  # the single-controller form needs both
        found += [
            ([key], "required key missing") for key in ("handler", "parent") if key not in data
        ]
    if not found:
        found = _semantic_errors(data)
    if found:
        found.sort(key=lambda e: _document_order(data, e[0]))
        raise ConfigError([f"{_key_path(p) or '(root)'}: {reason}" for p, reason in found])


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys in a mapping (PyYAML keeps the last silently)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:  # unhashable key; the constructor reports it
            continue
        line = key_node.start_mark.line + 1
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {first})", key_node.start_mark
            )
        seen[key] = line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

#: Deepest nesting of mappings and lists accepted in a config file; a valid config needs 4.
MAX_YAML_DEPTH = 64


def _check_depth(text: str) -> None:
    """Raise ``yaml.MarkedYAMLError`` at the first collection nested deeper than
    ``MAX_YAML_DEPTH``. PyYAML's event parser is iterative, so this never recurses; building
    objects from a deeper document would exhaust Python's recursion limit."""
    depth = 0
    for event in yaml.parse(text, Loader=_StrictLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise yaml.MarkedYAMLError(
                    problem=f"nested deeper than {MAX_YAML_DEPTH} levels",
                    problem_mark=event.start_mark,  # type: ignore[arg-type]  # libyaml's Mark
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read, parse and validate a YAML config file.

    Relative ``pythonPath`` entries resolve against the file's directory. Raises
    ``ConfigFileNotFoundError`` when the file does not exist and ``ConfigError`` for anything
    else (unreadable file, YAML syntax with its line and column, nesting deeper than
    ``MAX_YAML_DEPTH``, empty file, invalid config).
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigFileNotFoundError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read config file: {e}") from None
    try:
        _check_depth(text)
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: safe
    except RecursionError:  # not reachable past _check_depth; kept as a last line of defence
        raise ConfigError(f"{path}: invalid YAML: nested too deeply") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = e.problem or e.context or "syntax error"
        raise ConfigError(f"{path}: {where}invalid YAML: {problem}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if data is None:
        raise ConfigError(
            f"{path}: the config file is empty; it needs at least name, handler and parent"
        )
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a mapping of keys, got {_show(data)}")
    return Config.from_dict(data, base_dir=os.path.dirname(os.path.abspath(path)))


# --------------------------------------------------------------------------------------------
# Command-line flags and OPERATORD_* environment variables
# --------------------------------------------------------------------------------------------

#: Values of boolean flags and environment variables, lower-cased.
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(f"must be true or false, got {text!r}")


def _parse_int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"must be an integer, got {text!r}") from None


def _parse_address(text: str) -> tuple[str, int]:
    """``[HOST]:PORT`` or ``PORT`` -> (host, port); ``0`` disables the server (port 0)."""
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        host = ""
    host = host.strip("[]")
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"must be [HOST]:PORT, PORT or 0, got {text!r}") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"port must be from 0 to 65535, got {text!r}")
    return ("" if host in ("", "0.0.0.0") else host), number


@dataclass(frozen=True)
class Override:
    """A config key that a command-line flag and an environment variable can override."""

    flag: str
    env: str
    key: str  # dotted config path, e.g. "logging.level"; "metrics" for a bind address
    kind: str  # "str" | "word" (case-insensitive keyword) | "int" | "bool" | "address"
    help: str

    @property
    def dest(self) -> str:
        """The argparse destination of the flag."""
        return self.flag.lstrip("-").replace("-", "_")

    def parse(self, text: str) -> dict[str, Any]:
        """The config keys (dotted) this value sets; ValueError naming the problem."""
        if self.kind == "int":
            return {self.key: _parse_int(text)}
        if self.kind == "bool":
            return {self.key: _parse_bool(text)}
        if self.kind == "address":
            host, port = _parse_address(text)
            return {f"{self.key}.port": port, f"{self.key}.address": host}
        if self.kind == "word":
            return {self.key: text.strip().lower()}
        return {self.key: text}


#: Every overridable key. Precedence: flag > environment variable > config file > default.
OVERRIDES: tuple[Override, ...] = (
    Override("--namespace", "OPERATORD_NAMESPACE", "namespace", "str",
             'namespace to watch; "" watches all namespaces'),
    Override("--workers", "OPERATORD_WORKERS", "workers", "int", "worker processes"),
    Override("--in-flight-per-worker", "OPERATORD_IN_FLIGHT_PER_WORKER", "inFlightPerWorker",
             "int", "parents one worker process holds at once"),
    Override("--log-level", "OPERATORD_LOG_LEVEL", "logging.level", "word",
             "debug, info, warning or error (any case)"),
    Override("--log-format", "OPERATORD_LOG_FORMAT", "logging.format", "word",
             "auto, console or json"),
    Override("--metrics-bind-address", "OPERATORD_METRICS_BIND_ADDRESS", "metrics", "address",
             "[HOST]:PORT of /metrics; 0 disables it"),
    Override("--health-probe-bind-address", "OPERATORD_HEALTH_PROBE_BIND_ADDRESS", "health",
             "address", "[HOST]:PORT of /healthz and /readyz; 0 disables them"),
    Override("--leader-elect", "OPERATORD_LEADER_ELECT", "leaderElection.enabled", "bool",
             "true or false: elect one leader among the replicas"),
    Override("--controller-runtime-metrics", "OPERATORD_CONTROLLER_RUNTIME_METRICS",
             "metrics.controllerRuntime", "bool",
             "true or false: also export controller-runtime-compatible series"),
)  # fmt: skip


def apply_overrides(
    cfg: Config,
    flags: Mapping[str, str | None] | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[Config, dict[str, str]]:
    """Apply flag values (by ``Override.dest``; None = not given) and ``OPERATORD_*`` variables
    to a loaded config.

    Returns the new config and, for every key set, where it came from (``--workers`` or
    ``OPERATORD_WORKERS``). A flag beats its variable; both beat the file. A bad value raises
    ``ConfigError`` naming the flag or variable, e.g.
    ``OPERATORD_WORKERS: workers: must be an integer >= 1, got 0``.
    """
    flags = flags or {}
    environ = os.environ if environ is None else environ
    data = cfg.to_dict()
    sources: dict[str, str] = {}
    errors: list[str] = []
    for o in OVERRIDES:
        given = flags.get(o.dest)
        source, text = (o.flag, given) if given is not None else (o.env, environ.get(o.env))
        if text is None:
            continue
        try:
            values = o.parse(text)
        except ValueError as e:
            errors.append(f"{source}: {e}")
            continue
        for dotted, value in values.items():
            node = data
            *parents, last = dotted.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = value
            sources[dotted] = source
    if errors:
        raise ConfigError(errors)
    try:
        return Config.from_dict(data), sources
    except ConfigError as e:
        raise ConfigError([_name_source(line, sources) for line in e.errors]) from None


def _name_source(error: str, sources: Mapping[str, str]) -> str:
    """Prefix a validation error with the flag or variable that set its key, if any."""
    path = error.partition(":")[0]
    source = sources.get(path)
    return f"{source}: {error}" if source else error


def show_config(cfg: Config, sources: Mapping[str, str] | None = None) -> str:
    """The effective config as YAML, with a comment naming every flag/variable override."""
    lines = ["# effective operatord config (flag > OPERATORD_* variable > file > default)"]
    for key, source in sorted((sources or {}).items()):
        lines.append(f"# {key}: from {source}")
    body = yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=False)
    return "\n".join(lines) + "\n" + body


def isolate_import_path() -> None:
    """Drop the current directory that ``python -m``/``-c`` put first on ``sys.path``, so a
    handler imports the same from any working directory (only ``pythonPath``,
    ``$PYTHONPATH`` and installed packages count). Worker processes inherit the result."""
    if sys.path and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]


def _summary(cfg: Config) -> str:
    lines = []
    for ctl in cfg.controllers:
        children = ",".join(f"{c}({c.update_strategy})" for c in ctl.children) or "none"
        who = cfg.name if cfg.single else f"{cfg.name}/{ctl.name}"
        line = f"ok: {who} handler={ctl.handler} parent={ctl.parent} children={children}"
        if ctl.related:
            line += " related=" + ",".join(
                f"{r}({r.label_selector})" if r.label_selector else str(r) for r in ctl.related
            )
        lines.append(line)
    if cfg.namespace_patterns or cfg.namespace_selector:
        scope = ",".join(cfg.namespace_patterns)
        if cfg.namespace_selector:
            scope += f" selector={cfg.namespace_selector}"
        lines.append(f"ok: {cfg.name} namespaces={scope.strip()}")
    return "\n".join(lines)


def check_config_command(
    path: str | Callable[[], Config],
    *,
    show: bool = False,
    flags: Mapping[str, str | None] | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """``operatord check-config``: validate the config (with flag and ``OPERATORD_*``
    overrides) and import its handler the way ``operatord run`` does.

    Prints ``ok: ...`` (or, with ``show``, the effective config as YAML) to stdout and returns
    0; on failure prints ``error: <message>`` lines to stderr and returns 1, or 2 when the file
    does not exist.
    """
    from operatord.handler import HandlerImportError, load_handler

    isolate_import_path()
    try:
        base = load_config(path) if isinstance(path, str) else path()
        cfg, sources = apply_overrides(base, flags, environ)
    except ConfigFileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ConfigError as e:
        for message in e.errors:
            print(f"error: {message}", file=sys.stderr)
        return 1
    failed = False
    for ctl in cfg.controllers:  # every worker imports every handler
        try:
            load_handler(ctl.handler, ctl.python_path)
        except HandlerImportError as e:
            where = "handler" if cfg.single else f"controllers[{ctl.name}].handler"
            print(f"error: {where}: {e}", file=sys.stderr)
            failed = True
    if failed:
        return 1
    print(show_config(cfg, sources) if show else _summary(cfg), end="" if show else "\n")
    return 0
