"""Turning a handler's answer into API writes for one parent.

Guarantees:
- Desired children are checked before anything is written: a child of a type the config does
  not declare, in another namespace than a namespaced parent, or cluster-scoped under a
  namespaced parent raises `ResponseError` and nothing is written for that parent.
- A desired child whose name an object that is not this parent's child already has raises
  `ChildConflict` (a `ResponseError`) naming the label that adopts it; that object is not
  changed.
- Every desired child gets the labels ``operatord.io/parent-uid`` and
  ``app.kubernetes.io/managed-by`` and a controller ownerReference to the parent.
- Only the fields the handler sets are compared (after folding write-only fields such as a
  Secret's ``stringData`` into what the server stores): a child whose observed state already
  contains every desired field is not written, so an unchanged response causes no write. An
  update the server answers without a new resourceVersion counts as no change.
- Per child type, ``updateStrategy`` decides what happens to a child that differs:
  Replace = PUT of the observed object with the desired fields laid over it (optimistic
  concurrency through its resourceVersion); Recreate = delete (uid precondition) and create;
  OnDelete = never updated; Apply = server-side apply with the operator's field manager, forced.
- Observed children that are not desired are deleted with a uid precondition.
- Status is written through the status subresource (falling back to the main resource when the
  type has none) only when it differs, always carries ``observedGeneration``, and only if the
  parent still has the resourceVersion the sync saw (`ParentChanged` otherwise): a status is
  never computed from one version of a parent and written over a newer one.
- Every object written is returned as the API server answered, for the leader's cache.
- Dry run (a `Kube` whose connection has ``dry_run``): the same requests go out with
  ``dryRun=All``; each write that would change something is recorded in `Outcome.plan` with
  the object before and the server's answer. An update is a change when the answer differs
  from the observed object beyond `SERVER_FIELDS` (a dry run never moves resourceVersions).
  A recreate's create is sent with ``generateName`` (the object it replaces still exists).
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from operatord.cache import child_key
from operatord.config import Config, ControllerConfig
from operatord.handler import check_child_type, check_unique_child
from operatord.kube import ApiError, Kube, Resource


class ResponseError(Exception):
    """The handler's response cannot be applied as it is (the handler's fault, not the API's)."""


class ChildConflict(ResponseError):
    """A desired child's name is taken by an object that is not a child of this parent (no
    ``operatord.io/parent-uid`` label with its uid): nothing of it was written. The message
    says how to adopt the object or to avoid the name."""


class ParentChanged(Exception):
    """The parent changed on the server since the sync read it: its status was not written
    (the sync must run again on the new version). ``current`` is the parent as the server has
    it now (None when it could not be read)."""

    def __init__(self, message: str, current: dict | None = None):
        super().__init__(message)
        self.current = current


@dataclass
class Outcome:
    """What one apply wrote: objects for the cache and counts for metrics."""

    written: list[dict] = field(
        default_factory=list
    )  # {"action": "upsert"|"delete", "object": {...}}
    writes: list[tuple[str, str]] = field(default_factory=list)  # (kind, operation)
    status_written: bool = False
    # Dry run: {"operation", "apiVersion", "kind", "namespace", "name", "live", "answer"}
    plan: list[dict] = field(default_factory=list)

    def upsert(self, obj: dict) -> None:
        self.written.append({"action": "upsert", "object": obj})

    def delete(self, obj: dict) -> None:
        self.written.append({"action": "delete", "object": obj})


def _meta(obj: dict) -> dict:
    return obj.setdefault("metadata", {})


# Metadata the server fills in on every write; not part of what a write changes.
SERVER_FIELDS = (
    "managedFields",
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "selfLink",
)


def without_server_fields(obj: dict | None) -> dict | None:
    """``obj`` without the metadata in `SERVER_FIELDS` (a copy; the input is not modified)."""
    if obj is None:
        return None
    out = dict(obj)
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in SERVER_FIELDS}
    out["metadata"] = meta
    return out


def is_subset(desired: Any, observed: Any) -> bool:
    """True when every field set in ``desired`` has the same value in ``observed``."""
    if isinstance(desired, dict):
        if not isinstance(observed, dict):
            return False
        return all(k in observed and is_subset(v, observed[k]) for k, v in desired.items())
    if isinstance(desired, list):
        if not isinstance(observed, list) or len(desired) != len(observed):
            return False
        return all(is_subset(d, o) for d, o in zip(desired, observed, strict=True))
    if isinstance(desired, bool) or isinstance(observed, bool):
        return desired is observed
    if isinstance(desired, int | float) and isinstance(observed, int | float):
        return desired == observed
    return desired == observed


# Server-maintained metadata: a change in these says nothing about what the handler asked for.
_VOLATILE_METADATA = frozenset(
    {"resourceVersion", "managedFields", "generation", "creationTimestamp", "uid", "selfLink"}
)


def changed_paths(before: Any, after: Any, limit: int = 10) -> list[str]:
    """The dotted paths of the fields that differ between two versions of an object (a list
    is one field; server-maintained metadata is ignored), at most ``limit`` of them."""
    out: list[str] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if len(out) >= limit:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b), key=str):
                if path == "metadata" and key in _VOLATILE_METADATA:
                    continue
                sub = f"{path}.{key}" if path else str(key)
                if key not in a or key not in b:
                    out.append(sub)
                else:
                    walk(a[key], b[key], sub)
                if len(out) >= limit:
                    return
        elif a != b:
            out.append(path or "(object)")

    walk(before, after, "")
    return out


def overlay(base: dict, top: dict) -> dict:
    """``base`` with every field of ``top`` laid over it (dicts merge, everything else replaces)."""
    out = dict(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = overlay(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def comparable(child: dict) -> dict:
    """The desired child as the API server will store it, for comparison with observed state.

    Covers write-only fields the server folds into others: a Secret's ``stringData`` is stored
    base64-encoded in ``data``.
    """
    if (
        child.get("kind") == "Secret"
        and child.get("apiVersion") == "v1"
        and child.get("stringData")
    ):
        out = dict(child)
        data = dict(out.get("data") or {})
        for k, v in out.pop("stringData").items():
            data[k] = base64.b64encode(str(v).encode()).decode()
        out["data"] = data
        return out
    return child


class Applier:
    """Applies handler responses for one operator; one per worker process (caches discovery)."""

    def __init__(
        self,
        kube: Kube,
        config: Config | ControllerConfig,
        guard: Callable[[], None] | None = None,
    ) -> None:
        """``guard()`` is called before every write and may raise to prevent it (a worker
        whose leader is gone must not write). ``config``: the controller whose responses
        this applies (a single-controller `Config` stands for its one controller)."""
        self.kube = kube
        if isinstance(config, Config):
            config = config.controllers[0]
        self.config = config
        self.guard = guard or (lambda: None)
        self.strategies = {(c.api_version, c.kind): c.update_strategy for c in config.children}
        self._status_subresource: dict[str, bool] = {}
        self.dry_run = bool(getattr(kube, "dry_run", False))

    def _plan(
        self, outcome: Outcome, operation: str, res: Resource, live: dict | None, answer: Any
    ) -> None:
        """Record one dry-run write (nothing outside a dry run)."""
        if not self.dry_run:
            return
        obj = live if live is not None else answer
        meta = obj.get("metadata") or {}
        outcome.plan.append(
            {
                "operation": operation,
                "apiVersion": res.api_version,
                "kind": res.kind,
                "namespace": meta.get("namespace") or "",
                "name": meta.get("name") or "",
                "live": live,
                "answer": answer if isinstance(answer, dict) else None,
            }
        )

    # ---- children -------------------------------------------------------------------------

    def owner_reference(self, parent: dict) -> dict:
        m = parent["metadata"]
        return {
            "apiVersion": parent["apiVersion"],
            "kind": parent["kind"],
            "name": m["name"],
            "uid": m["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }

    def prepare(self, parent: dict, children: list[dict]) -> list[tuple[Resource, dict]]:
        """Validate and stamp desired children; raises ResponseError (or InvalidResponse, for a
        type the config does not declare) without writing."""
        pmeta = parent["metadata"]
        parent_ns = pmeta.get("namespace") or ""
        out = []
        seen: dict[tuple[str, str, str, str], int] = {}
        for i, raw in enumerate(children):
            where = f"children[{i}] ({raw.get('kind')} {raw.get('metadata', {}).get('name')!r})"
            key = (str(raw.get("apiVersion")), str(raw.get("kind")))
            check_child_type(where, key, self.strategies)
            res = self.kube.resource(*key)
            child = copy.deepcopy(raw)
            meta = _meta(child)
            ns = meta.get("namespace") or ""
            if res.namespaced:
                if parent_ns:
                    if ns and ns != parent_ns:
                        raise ResponseError(
                            f"{where}: namespace {ns!r} differs from the parent's {parent_ns!r}"
                        )
                    meta["namespace"] = parent_ns
                elif not ns:
                    raise ResponseError(
                        f"{where}: a namespaced child of a cluster-scoped parent needs "
                        "metadata.namespace"
                    )
            else:
                if parent_ns:
                    raise ResponseError(
                        f"{where}: a cluster-scoped child cannot be owned by a namespaced parent"
                    )
                meta.pop("namespace", None)
            # Once more with the namespace as the type's scope makes it (validation could not
            # know the scope): a cluster-scoped type listed under two namespaces is one object.
            check_unique_child(seen, child_key(child), i)
            labels = meta.setdefault("labels", {})
            labels[self.config.parent_uid_label] = pmeta["uid"]
            labels[self.config.managed_by_label] = self.config.managed_by
            meta["ownerReferences"] = [
                r for r in meta.get("ownerReferences", []) if not r.get("controller")
            ] + [self.owner_reference(parent)]
            out.append((res, child))
        return out

    def apply_children(
        self,
        parent: dict,
        observed: list[dict],
        desired: list[dict],
        outcome: Outcome | None = None,
    ) -> Outcome:
        """Make the parent's children match ``desired``; writes so far are in ``outcome`` even
        when an API error interrupts."""
        prepared = self.prepare(parent, desired)
        outcome = outcome if outcome is not None else Outcome()
        observed_by_key = {child_key(o): o for o in observed}
        desired_keys = set()
        for res, child in prepared:
            key = child_key(child)
            desired_keys.add(key)
            current = observed_by_key.get(key)
            if current is None:
                self._create(res, child, parent, outcome)
            else:
                self._update(res, child, current, outcome)
        for key, obj in observed_by_key.items():
            if key in desired_keys or obj["metadata"].get("deletionTimestamp"):
                continue
            res = self.kube.resource(key[0], key[1])
            self._delete(res, obj, outcome)
        return outcome

    def _create(self, res: Resource, child: dict, parent: dict, outcome: Outcome) -> None:
        self.guard()
        strategy = self.strategies[(res.api_version, res.kind)]
        meta = child["metadata"]
        try:
            if strategy == "Apply":
                created = self._server_side_apply(res, child)
                op = "apply"
            else:
                created = self.kube.create(res, child)
                op = "create"
        except ApiError as exc:
            if exc.status != 409 or exc.reason != "AlreadyExists":
                raise
            # Created by an earlier attempt whose answer we never saw, or by someone else.
            existing = self.kube.get(res, meta["name"], meta.get("namespace"))
            existing.setdefault("apiVersion", res.api_version)
            existing.setdefault("kind", res.kind)
            labels = existing["metadata"].get("labels") or {}
            uid = parent["metadata"]["uid"]
            if labels.get(self.config.parent_uid_label) != uid:
                ns = meta.get("namespace")
                where = f"{ns}/{meta['name']}" if ns else meta["name"]
                raise ChildConflict(
                    f"{res.kind} {where} already exists and is not a child of this parent; to "
                    f"adopt it, label it {self.config.parent_uid_label}={uid} (kubectl label "
                    f"{res.kind.lower()} {meta['name']}{f' -n {ns}' if ns else ''} "
                    f"{self.config.parent_uid_label}={uid}), or have the handler choose "
                    "another name"
                ) from exc
            outcome.upsert(existing)
            self._update(res, child, existing, outcome)
            return
        created.setdefault("apiVersion", res.api_version)
        created.setdefault("kind", res.kind)
        outcome.upsert(created)
        outcome.writes.append((res.kind, op))
        self._plan(outcome, op, res, None, created)

    def _update(self, res: Resource, child: dict, current: dict, outcome: Outcome) -> None:
        self.guard()
        strategy = self.strategies[(res.api_version, res.kind)]
        if strategy == "OnDelete" or is_subset(comparable(child), current):
            return
        if strategy == "Replace":
            body = overlay(current, child)
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            # Absent managedFields keep the server's; sent ones would replace them.
            body["metadata"].pop("managedFields", None)
            body.pop("status", None)
            updated = self.kube.replace(res, body)
            op = "update"
        elif strategy == "Apply":
            updated = self._server_side_apply(res, child)
            op = "apply"
        else:  # Recreate
            self._delete(res, current, outcome, operation="recreate")
            updated = self._recreate(res, child)
            op = "create"
        updated.setdefault("apiVersion", res.api_version)
        updated.setdefault("kind", res.kind)
        if op != "create" and self._unchanged(updated, current):
            # The server found nothing to change (its defaulting or normalization differs from
            # what the handler wrote): not a change, so no re-sync is caused by it.
            return
        outcome.upsert(updated)
        outcome.writes.append((res.kind, op))
        self._plan(outcome, "recreate" if strategy == "Recreate" else op, res, current, updated)

    def _unchanged(self, updated: dict, current: dict) -> bool:
        if self.dry_run:  # a dry run moves no resourceVersion: compare what was sent back
            return without_server_fields(updated) == without_server_fields(current)
        return (updated.get("metadata") or {}).get("resourceVersion") == current["metadata"].get(
            "resourceVersion"
        )

    def _recreate(self, res: Resource, child: dict) -> dict:
        """The create half of a recreate. In a dry run the object being replaced still exists,
        so the create is validated under a generated name and answered under its own."""
        if not self.dry_run:
            return self.kube.create(res, child)
        meta = child["metadata"]
        body = dict(child)
        body["metadata"] = {k: v for k, v in meta.items() if k != "name"}
        body["metadata"]["generateName"] = f"{meta['name'][:50]}-"
        answer = self.kube.create(res, body, meta.get("namespace"))
        answer["metadata"]["name"] = meta["name"]
        answer["metadata"].pop("generateName", None)
        return answer

    def _server_side_apply(self, res: Resource, child: dict) -> dict:
        self.guard()
        meta = child["metadata"]
        return self.kube.patch(
            res,
            meta["name"],
            child,
            meta.get("namespace"),
            patch_type="apply",
            field_manager=self.config.field_manager,
            force=True,
        )

    def _delete(
        self, res: Resource, obj: dict, outcome: Outcome, operation: str = "delete"
    ) -> None:
        self.guard()
        meta = obj["metadata"]
        try:
            self.kube.delete(
                res,
                meta["name"],
                meta.get("namespace"),
                uid=meta.get("uid"),
                propagation_policy="Background",
            )
        except ApiError as exc:
            if exc.status not in (404, 409):  # gone already, or replaced by a new object
                raise
        outcome.delete(obj)
        outcome.writes.append((res.kind, operation))
        if operation != "recreate":  # a recreate is recorded once, with its create
            self._plan(outcome, operation, res, obj, None)

    # ---- parent -------------------------------------------------------------------------

    def write_status(
        self,
        parent_res: Resource,
        parent: dict,
        status: dict,
        outcome: Outcome | None = None,
    ) -> dict | None:
        """Replace the parent's status (plus observedGeneration) when it differs; returns the
        updated parent or None when nothing was written. A dry run records the write in
        ``outcome``."""
        desired = dict(status)
        generation = parent["metadata"].get("generation")
        if generation is not None:
            desired["observedGeneration"] = generation
        if parent.get("status") == desired:
            return None
        self.guard()
        meta = parent["metadata"]
        patch = [{"op": "add", "path": "/status", "value": desired}]
        if meta.get("resourceVersion"):
            # Fenced by the version the sync saw: a write from a stale sync (or a frozen former
            # leader) fails instead of overwriting a newer status.
            patch.insert(
                0,
                {
                    "op": "test",
                    "path": "/metadata/resourceVersion",
                    "value": meta["resourceVersion"],
                },
            )
        use_sub = self._status_subresource.get(parent_res.key, True)
        try:
            updated = self.kube.patch(
                parent_res,
                meta["name"],
                patch,
                meta.get("namespace"),
                patch_type="json",
                subresource="status" if use_sub else "",
            )
        except ApiError as exc:
            if exc.status in (409, 422) and meta.get("resourceVersion"):
                raise self._changed(parent_res, parent, exc) from exc
            if exc.status != 404 or not use_sub:
                raise
            # No status subresource: the main resource carries status.
            self._status_subresource[parent_res.key] = False
            try:
                updated = self.kube.patch(
                    parent_res, meta["name"], patch, meta.get("namespace"), patch_type="json"
                )
            except ApiError as again:
                if again.status in (409, 422) and meta.get("resourceVersion"):
                    raise self._changed(parent_res, parent, again) from again
                raise
        updated.setdefault("apiVersion", parent_res.api_version)
        updated.setdefault("kind", parent_res.kind)
        if outcome is not None:
            self._plan(outcome, "status", parent_res, parent, updated)
        return updated

    def _changed(self, parent_res: Resource, parent: dict, exc: ApiError) -> ParentChanged:
        """A `ParentChanged` carrying the parent as it is now, so the next sync starts from it
        even when the watch has not delivered the change yet."""
        meta = parent["metadata"]
        try:
            current = self.kube.get(parent_res, meta["name"], meta.get("namespace"))
            current.setdefault("apiVersion", parent_res.api_version)
            current.setdefault("kind", parent_res.kind)
        except ApiError:
            current = None
        return ParentChanged(f"status not written: {exc.message}", current)

    def set_finalizer(
        self,
        parent_res: Resource,
        parent: dict,
        present: bool,
        outcome: Outcome | None = None,
    ) -> dict | None:
        """Add or remove the operator's finalizer with optimistic concurrency; returns the
        updated parent, or None when nothing had to change. A dry run records the write in
        ``outcome``."""
        fin = self.config.finalizer
        obj = parent
        for _attempt in range(5):
            meta = obj["metadata"]
            current = list(meta.get("finalizers") or [])
            if (fin in current) == present:
                return None if obj is parent else obj
            wanted = current + [fin] if present else [f for f in current if f != fin]
            self.guard()
            patch = [
                {
                    "op": "test",
                    "path": "/metadata/resourceVersion",
                    "value": meta["resourceVersion"],
                },
                {"op": "add", "path": "/metadata/finalizers", "value": wanted},
            ]
            try:
                updated = self.kube.patch(
                    parent_res, meta["name"], patch, meta.get("namespace"), patch_type="json"
                )
            except ApiError as exc:
                if exc.status == 404 and not present:
                    return None
                if exc.status not in (409, 422):
                    raise
                obj = self.kube.get(parent_res, meta["name"], meta.get("namespace"))
                obj.setdefault("apiVersion", parent_res.api_version)
                obj.setdefault("kind", parent_res.kind)
                continue
            updated.setdefault("apiVersion", parent_res.api_version)
            updated.setdefault("kind", parent_res.kind)
            if outcome is not None:
                self._plan(outcome, "finalizer", parent_res, obj, updated)
            return updated
        raise ApiError(409, "Conflict", message="finalizer update kept conflicting")
