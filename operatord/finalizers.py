"""Parents held by an operator's finalizer: listing them and, when asked, releasing them.

``operatord finalizers`` is the uninstall and recovery tool: once an operator is gone (helm
uninstall, a renamed ``name``, a pod that cannot start) nobody removes its finalizer, and every
parent deleted from then on stays in the API server for ever.

Guarantees:
- `finalizer_targets` is the one place that says which finalizer an operator puts on which
  parent type; everything else iterates over its ``(parent type, finalizer)`` pairs.
- Listing only reads (one paged list per parent type, in the config's ``namespace`` or in all).
- `release` removes exactly one finalizer from one parent, with a JSON patch that tests the
  resourceVersion it read (re-reading on a conflict, as the worker does), so another
  controller's finalizers, and finalizers added meanwhile, stay. The handler's ``finalize`` does
  not run for a released parent: what it would have cleaned up outside the cluster stays.
- Nothing is removed without ``remove=True`` (the command's ``--remove``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TextIO

from operatord.config import Config
from operatord.kube import ApiError, Kube

#: How often `release` re-reads a parent whose resourceVersion moved before giving up.
ATTEMPTS = 5


@dataclass(frozen=True)
class Target:
    """A parent type and the finalizer an operator puts on its objects."""

    api_version: str
    kind: str
    finalizer: str


@dataclass(frozen=True)
class Held:
    """A parent that carries a target's finalizer."""

    target: Target
    namespace: str
    name: str
    deletion_timestamp: str | None  # None: not being deleted (yet)


def finalizer_targets(config: Config, finalizer: str | None = None) -> list[Target]:
    """The ``(parent type, finalizer)`` pairs of ``config``'s operator, one per controller;
    ``finalizer`` replaces each controller's own (e.g. the finalizer of an earlier ``name``)."""
    return [
        Target(c.parent.api_version, c.parent.kind, finalizer or c.finalizer)
        for c in config.controllers
    ]


def held_parents(
    kube: Kube, config: Config, targets: list[Target], *, include_live: bool = False
) -> Iterator[Held]:
    """Parents carrying a target's finalizer that are being deleted (blocked on it), and with
    ``include_live`` also those that are not."""
    for target in targets:
        res = kube.resource(target.api_version, target.kind)
        # Literal namespaces: listed one by one (the operator may have namespaced RBAC only);
        # otherwise cluster-wide: a parent outside today's scope may still carry the finalizer.
        spaces: list[str | None] = [None]
        if res.namespaced and config.namespace_patterns and not config.namespace_selector:
            if not any(p.startswith("!") or set(p) & set("*?[") for p in config.namespace_patterns):
                spaces = list(dict.fromkeys(config.namespace_patterns))
        items = []
        for namespace in spaces:
            items.extend(kube.list(res, namespace)[0])
        for obj in items:
            meta = obj.get("metadata") or {}
            if target.finalizer not in (meta.get("finalizers") or []):
                continue
            deleting = meta.get("deletionTimestamp")
            if deleting or include_live:
                yield Held(target, meta.get("namespace") or "", meta["name"], deleting)


def release(kube: Kube, held: Held) -> bool:
    """Remove ``held.target.finalizer`` from the parent; False when it was already gone (the
    parent or the finalizer)."""
    res = kube.resource(held.target.api_version, held.target.kind)
    namespace = held.namespace or None
    for _attempt in range(ATTEMPTS):
        try:
            obj = kube.get(res, held.name, namespace)
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        meta = obj["metadata"]
        current = list(meta.get("finalizers") or [])
        if held.target.finalizer not in current:
            return False
        patch = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]},
            {
                "op": "replace",
                "path": "/metadata/finalizers",
                "value": [f for f in current if f != held.target.finalizer],
            },
        ]
        try:
            kube.patch(res, held.name, patch, namespace, patch_type="json")
            return True
        except ApiError as exc:
            if exc.status == 404:
                return False
            if exc.status not in (409, 422):
                raise
    raise ApiError(409, "Conflict", message=f"{held.name}: the parent kept changing")


def finalizers_command(
    config_path: str,
    kubeconfig: str | None,
    *,
    flags: Mapping[str, str | None] | None = None,
    finalizer: str | None = None,
    include_live: bool = False,
    remove: bool = False,
    out: TextIO | None = None,
) -> int:
    """``operatord finalizers``: list the parents held by the operator's finalizer and, with
    ``remove``, remove it from them. Returns 0, 1 on a config or API error, 2 when the config
    file does not exist."""
    from operatord.config import ConfigError, ConfigFileNotFoundError, apply_overrides, load_config
    from operatord.kube import ClientSettings

    out = out or sys.stdout
    try:
        config, _ = apply_overrides(load_config(config_path), flags)
    except ConfigFileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ConfigError as e:
        for message in e.errors:
            print(f"error: {message}", file=sys.stderr)
        return 1
    targets = finalizer_targets(config, finalizer)
    try:
        kube = Kube(ClientSettings(kubeconfig=kubeconfig))
    except Exception as exc:  # noqa: BLE001 - the client raises many types for a bad kubeconfig
        print(f"error: cannot reach the API server: {exc}", file=sys.stderr)
        return 1
    try:
        held = list(held_parents(kube, config, targets, include_live=include_live))
        what = "carrying" if include_live else "being deleted and blocked on"
        for target in targets:
            mine = [h for h in held if h.target == target]
            print(
                f"{len(mine)} {target.kind} ({target.api_version}) {what} {target.finalizer}",
                file=out,
            )
            for h in mine:
                where = f"{h.namespace}/{h.name}" if h.namespace else h.name
                since = f"deleted at {h.deletion_timestamp}" if h.deletion_timestamp else "live"
                print(f"  {where}  {since}", file=out)
        if not held:
            return 0
        if not remove:
            print(
                "Run again with --remove to remove the finalizer from them: their finalize "
                "will then NOT run (anything it cleans up outside the cluster stays).",
                file=out,
            )
            return 0
        for h in held:
            where = f"{h.namespace}/{h.name}" if h.namespace else h.name
            if release(kube, h):
                print(
                    f"removed {h.target.finalizer} from {h.target.kind} {where}: its finalize "
                    "did not run",
                    file=out,
                )
            else:
                print(f"{h.target.kind} {where}: already released", file=out)
        return 0
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        kube.close()
