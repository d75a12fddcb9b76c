"""Managed fields and server-side apply: who owns which field of an object.

Guarantees:
- `managedFields` entries are FieldsV1, one per (manager, operation, subresource); entries that
  own nothing are dropped.
- An update or non-apply patch gives its manager the fields it changed and takes them from
  everyone else (`track_update`).
- An apply (`apply_fields`) that sets a field another manager owns to a different value is a
  409 Conflict with one `FieldManagerConflict` cause per field, unless forced, which takes the
  field over; the same value is shared ownership; fields the manager stops applying are removed
  unless someone else owns them.
- Every function here leaves its inputs unchanged, except `track_update`, which sets
  `new["metadata"]["managedFields"]`.
"""

from __future__ import annotations

import json

from . import patch as P
from .errors import ApiError
from .objects import now_time


def read_managed(entries: list) -> list[dict]:
    """Stored `managedFields` as dicts with a `paths` set instead of `fieldsV1`."""
    out = []
    for e in entries:
        if not isinstance(e, dict):
            continue
        out.append(
            {
                "manager": e.get("manager", ""),
                "operation": e.get("operation", "Update"),
                "subresource": e.get("subresource", ""),
                "apiVersion": e.get("apiVersion", ""),
                "time": e.get("time", ""),
                "paths": P.fields_v1_to_paths(e.get("fieldsV1") or {}),
            }
        )
    return out


def write_managed(entries: list[dict]) -> list[dict]:
    """The inverse of `read_managed`, without entries that own nothing."""
    out = []
    for e in entries:
        if not e["paths"]:
            continue
        d = {
            "manager": e["manager"],
            "operation": e["operation"],
            "apiVersion": e["apiVersion"],
            "time": e["time"],
            "fieldsType": "FieldsV1",
            "fieldsV1": P.paths_to_fields_v1(e["paths"]),
        }
        if e["subresource"]:
            d["subresource"] = e["subresource"]
        out.append(d)
    return out


def from_request(sent: object, live: list) -> tuple[list, bool]:
    """(managedFields to start from, whether they were reset) for a write whose body carries
    `sent`: absent keeps the live ones; `[]` resets them (the write itself is then not
    tracked); a well-formed list replaces them (how `kubectl apply --server-side` moves
    fields from client-side apply to itself); a malformed one is ignored."""
    if sent is None or (isinstance(sent, list) and _strip_times(sent) == _strip_times(live)):
        return P.deepcopy(live), False  # absent, or sent back as read (times may be reformatted)
    if sent == []:
        return [], True
    if isinstance(sent, list) and all(
        isinstance(e, dict)
        and isinstance(e.get("manager"), str)
        and e.get("operation") in ("Apply", "Update")
        and isinstance(e.get("fieldsV1", {}), dict)
        for e in sent
    ):
        return P.deepcopy(sent), False
    return P.deepcopy(live), False


def _strip_times(entries: list) -> list:
    return [
        {k: v for k, v in e.items() if k != "time"} if isinstance(e, dict) else e for e in entries
    ]


KUBECTL = "kubectl"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def _last_applied_paths(live: dict) -> set:
    """The fields (outside metadata) of live's last-applied annotation, if every one of them
    still holds the annotated value; else nothing."""
    text = (live["metadata"].get("annotations") or {}).get(LAST_APPLIED)
    if not text:
        return set()
    try:
        last = json.loads(text)
    except ValueError:
        return set()
    if not isinstance(last, dict):
        return set()
    paths = {p for p in P.field_paths(last) if p[0] != "metadata"}
    for p in paths:
        if P.get_path(live, p) != P.get_path(last, p):
            return set()
    return paths


def update_last_applied(new: dict, applied: dict, manager: str) -> None:
    """After an apply by kubectl, an object that has a last-applied annotation gets the
    applied configuration in it, so that a later client-side apply diffs against it."""
    anns = new["metadata"].get("annotations") or {}
    if manager != KUBECTL or LAST_APPLIED not in anns:
        return
    config = P.deepcopy(applied)
    config_anns = (config.get("metadata") or {}).get("annotations")
    if isinstance(config_anns, dict):
        config_anns.pop(LAST_APPLIED, None)
        if not config_anns:
            config["metadata"].pop("annotations")
    new["metadata"]["annotations"] = {
        **anns,
        LAST_APPLIED: json.dumps(config, separators=(",", ":"), sort_keys=True) + "\n",
    }


def track_update(new: dict, old: dict | None, manager: str, sub: str, api_version: str) -> None:
    """Record that `manager` wrote `new` over `old` with an update (not an apply)."""
    changed = P.changed_paths(old or {}, new) if old is not None else P.field_paths(new)
    if sub == "status":
        changed = {p for p in changed if p[0] == "status"}
    if not changed:
        return
    entries = read_managed(new["metadata"].get("managedFields") or [])
    live = P.field_paths(new)
    out = []
    mine = None
    for e in entries:
        if e["manager"] == manager and e["operation"] == "Update" and e["subresource"] == sub:
            mine = e
            continue
        e["paths"] = (e["paths"] - changed) & live
        out.append(e)
    paths = ((mine["paths"] if mine else set()) | changed) & live
    out.append(
        {
            "manager": manager,
            "operation": "Update",
            "subresource": sub,
            "apiVersion": api_version,
            "time": now_time(),
            "paths": paths,
        }
    )
    new["metadata"]["managedFields"] = write_managed(out)


def created_by_apply(manager: str, api_version: str, paths: set) -> list[dict]:
    """The managedFields of an object an apply creates."""
    return write_managed(
        [
            {
                "manager": manager,
                "operation": "Apply",
                "subresource": "",
                "apiVersion": api_version,
                "time": now_time(),
                "paths": paths,
            }
        ]
    )


def _manager_label(e: dict) -> str:
    """A manager as conflict messages name it: `"m"`, with the subresource, and for an
    Update `using <apiVersion>`."""
    out = json.dumps(e["manager"])
    if e["subresource"]:
        out += f' with subresource "{e["subresource"]}"'
    if e["operation"] == "Update":
        out += f" using {e['apiVersion']}"
    return out


def _conflict_error(conflicts: list[tuple[str, P.Path]]) -> ApiError:
    """409 Conflict of an apply, worded and shaped as the real server's (details carry only
    the causes)."""
    conflicts = sorted(conflicts)
    causes = [
        {"reason": "FieldManagerConflict", "message": f"conflict with {m}", "field": _field(p)}
        for m, p in conflicts
    ]
    if len(conflicts) == 1:
        m, p = conflicts[0]
        message = f"Apply failed with 1 conflict: conflict with {m}: {_field(p)}"
    else:
        lines = []
        for m in sorted({m for m, _ in conflicts}):
            lines.append(f"conflicts with {m}:")
            lines.extend(f"- {_field(p)}" for mm, p in conflicts if mm == m)
        message = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
    return ApiError(409, message, "Conflict", {"causes": causes})


def _field(p: P.Path) -> str:
    return "." + ".".join(p)


def apply_fields(
    old: dict,
    applied: dict,
    paths: set,
    *,
    manager: str,
    force: bool,
    subresource: str,
    api_version: str,
) -> tuple[dict, list[dict]]:
    """(new object, new managedFields) of applying `applied` (owning `paths`) to `old`."""
    entries = read_managed(old["metadata"].get("managedFields") or [])
    mine_prev: set = set()
    conflicts: list[tuple[str, P.Path]] = []
    for e in entries:
        if (
            e["manager"] == manager
            and e["operation"] == "Apply"
            and e["subresource"] == subresource
        ):
            mine_prev = e["paths"]
            continue
        if e["manager"] == manager:
            continue
        for p in e["paths"] & paths:
            if P.get_path(old, p) != P.get_path(applied, p):
                conflicts.append((_manager_label(e), p))
    if conflicts and not force and manager == KUBECTL:
        # kubectl moving from client-side to server-side apply takes over the fields its
        # last-applied annotation lists (as long as they still hold the annotated values)
        allowed = _last_applied_paths(old)
        if all(p in allowed for _, p in conflicts):
            force = True
    if conflicts and not force:
        raise _conflict_error(conflicts)
    stolen = {p for _, p in conflicts}
    new = P.deepcopy(old)
    others_own: set = set()
    out = []
    for e in entries:
        if (
            e["manager"] == manager
            and e["operation"] == "Apply"
            and e["subresource"] == subresource
        ):
            continue
        e["paths"] = e["paths"] - stolen
        others_own |= e["paths"]
        out.append(e)
    for p in mine_prev - paths - others_own:
        P.remove_path(new, p)
    new = P.apply_merge(new, applied)
    out.append(
        {
            "manager": manager,
            "operation": "Apply",
            "subresource": subresource,
            "apiVersion": api_version,
            "time": now_time(),
            "paths": paths,
        }
    )
    live = P.field_paths(new)
    for e in out:
        e["paths"] &= live
    managed = write_managed(out)
    # unchanged managed fields of a no-op apply are kept as they were
    if _strip_times(managed) == _strip_times(old["metadata"].get("managedFields") or []):
        managed = P.deepcopy(old["metadata"].get("managedFields") or [])
    return new, managed
