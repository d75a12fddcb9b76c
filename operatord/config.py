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


@dataclass(frozen=True)
class RelatedType:
    """A type the handler may read (``related``): watched and cached by the leader, read only.

    ``label_selector`` (``""``: none) limits what is listed, watched and cached.
    """

    api_version: str
    kind: str
    label_selector: str = ""

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


@dataclass(frozen=True)
class ShardingConfig:
    """Active-active replicas: ``shards`` fixed UID-hash ranges, one Lease each (1: one leader)."""

    shards: int = 1


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
    handler: str
    python_path: tuple[str, ...]
    parent: ResourceType
    children: tuple[ResourceType, ...] = ()
    namespace: str = ""
    workers: int = field(default_factory=_cpu_count)
    in_flight_per_worker: int = 16
    worker_memory_limit_mb: int = 0
    resync_seconds: float = 600.0
    handler_timeout_seconds: float = 30.0
    backoff: BackoffConfig = field(default_factory=BackoffConfig)
    leader_election: LeaderElectionConfig = field(default_factory=LeaderElectionConfig)
    metrics_port: int = 8080
    health_port: int = 8081
    metrics_address: str = ""
    health_address: str = ""
    controller_runtime_metrics: bool = False
    logging_format: str = "auto"
    logging_level: str = "info"
    related: tuple[RelatedType, ...] = ()
    sharding: ShardingConfig = field(default_factory=ShardingConfig)

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
        if self.workers is None:
            object.__setattr__(self, "workers", _cpu_count())
        for name, kind in (
            ("parent", ResourceType),
            ("backoff", BackoffConfig),
            ("leader_election", LeaderElectionConfig),
            ("sharding", ShardingConfig),
        ):
            if not isinstance(getattr(self, name), kind):
                raise ConfigError.at(name, f"must be a {kind.__name__}")
        if not all(isinstance(c, ResourceType) for c in self.children):
            raise ConfigError.at("children", "must be ResourceType instances")
        _validate(self.to_dict())
        # Seconds are floats whatever the YAML said, so equal configs compare and print alike.
        _floats(self, ("resync_seconds", "handler_timeout_seconds"))
        object.__setattr__(self, "backoff", _floats(self.backoff))
        object.__setattr__(self, "leader_election", _floats(self.leader_election))

    # -- derived names -----------------------------------------------------------------------

    @property
    def finalizer(self) -> str:
        return f"operatord.io/{self.name}"

    @property
    def field_manager(self) -> str:
        return f"operatord-{self.name}"

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

    # -- plain data ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The config as YAML-shaped plain data, every default filled in."""
        b, le = self.backoff, self.leader_election
        return {
            "name": self.name,
            "handler": self.handler,
            "pythonPath": list(self.python_path),
            "parent": {"apiVersion": self.parent.api_version, "kind": self.parent.kind},
            "children": [
                {"apiVersion": c.api_version, "kind": c.kind, "updateStrategy": c.update_strategy}
                for c in self.children
            ],
            "namespace": self.namespace,
            "workers": self.workers,
            "inFlightPerWorker": self.in_flight_per_worker,
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
            },
            "metrics": {
                "port": self.metrics_port,
                "address": self.metrics_address,
                "controllerRuntime": self.controller_runtime_metrics,
            },
            "health": {"port": self.health_port, "address": self.health_address},
            "logging": {"format": self.logging_format, "level": self.logging_level},
            "related": [
                {"apiVersion": r.api_version, "kind": r.kind, "labelSelector": r.label_selector}
                for r in self.related
            ],
            "sharding": {"shards": self.sharding.shards},
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
        return cls(
            name=data["name"],
            handler=data["handler"],
            python_path=tuple(
                os.path.normpath(os.path.join(base, p)) for p in data.get("pythonPath", [])
            ),
            parent=ResourceType(data["parent"]["apiVersion"], data["parent"]["kind"]),
            children=tuple(
                ResourceType(
                    c["apiVersion"],
                    c["kind"],
                    c.get("updateStrategy", ResourceType.update_strategy),
                )
                for c in data.get("children", [])
            ),
            namespace=data.get("namespace", cls.namespace),
            workers=_cpu_count() if workers is None else int(workers),
            in_flight_per_worker=int(data.get("inFlightPerWorker", cls.in_flight_per_worker)),
            worker_memory_limit_mb=int(data.get("workerMemoryLimitMB", cls.worker_memory_limit_mb)),
            resync_seconds=float(data.get("resyncSeconds", cls.resync_seconds)),
            handler_timeout_seconds=float(
                data.get("handlerTimeoutSeconds", cls.handler_timeout_seconds)
            ),
            backoff=BackoffConfig(
                initial_seconds=float(b.get("initialSeconds", BackoffConfig.initial_seconds)),
                max_seconds=float(b.get("maxSeconds", BackoffConfig.max_seconds)),
                multiplier=float(b.get("multiplier", BackoffConfig.multiplier)),
                jitter=float(b.get("jitter", BackoffConfig.jitter)),
            ),
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
            ),
            metrics_port=int(data.get("metrics", {}).get("port", cls.metrics_port)),
            health_port=int(data.get("health", {}).get("port", cls.health_port)),
            metrics_address=data.get("metrics", {}).get("address", cls.metrics_address),
            health_address=data.get("health", {}).get("address", cls.health_address),
            controller_runtime_metrics=data.get("metrics", {}).get(
                "controllerRuntime", cls.controller_runtime_metrics
            ),
            logging_format=data.get("logging", {}).get("format", cls.logging_format),
            logging_level=data.get("logging", {}).get("level", cls.logging_level),
            related=tuple(
                RelatedType(
                    r["apiVersion"], r["kind"], r.get("labelSelector", RelatedType.label_selector)
                )
                for r in data.get("related", [])
            ),
            sharding=ShardingConfig(
                shards=int(data.get("sharding", {}).get("shards", ShardingConfig.shards))
            ),
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

    parent = (d["parent"]["apiVersion"], d["parent"]["kind"])
    seen: dict[tuple[str, str], int] = {}
    for i, child in enumerate(d.get("children", [])):
        key = (child["apiVersion"], child["kind"])
        if key == parent:
            out.append(
                (
                    ["children", i],
                    f"{key[0]}/{key[1]} is the parent type; a type cannot be both parent and child",
                )
            )
        elif key in seen:
            out.append(
                (["children", i], f"{key[0]}/{key[1]} is already listed as children[{seen[key]}]")
            )
        else:
            seen[key] = i
    related_seen: dict[tuple[str, str], int] = {}
    for i, rel in enumerate(d.get("related", [])):
        key = (rel["apiVersion"], rel["kind"])
        if key in related_seen:
            out.append(
                (
                    ["related", i],
                    f"{key[0]}/{key[1]} is already listed as related[{related_seen[key]}]",
                )
            )
        else:
            related_seen[key] = i
        problem = _label_selector_problem(rel.get("labelSelector", RelatedType.label_selector))
        if problem:
            out.append((["related", i, "labelSelector"], problem))
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
    children = ",".join(f"{c}({c.update_strategy})" for c in cfg.children) or "none"
    line = f"ok: {cfg.name} handler={cfg.handler} parent={cfg.parent} children={children}"
    if cfg.related:
        line += " related=" + ",".join(
            f"{r}({r.label_selector})" if r.label_selector else str(r) for r in cfg.related
        )
    return line


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
    try:
        load_handler(cfg.handler, cfg.python_path)
    except HandlerImportError as e:
        print(f"error: handler: {e}", file=sys.stderr)
        return 1
    print(show_config(cfg, sources) if show else _summary(cfg), end="" if show else "\n")
    return 0
