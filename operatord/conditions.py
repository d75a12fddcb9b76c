"""Status conditions the way Kubernetes APIs carry them (``metav1.Condition``).

Guarantees of `set_condition`:
- Returns a new list; the input is not modified. Conditions of other types keep their order;
  a new type is appended.
- ``lastTransitionTime`` changes only when the condition's ``status`` changes, so a handler
  that sets the same condition on every sync produces the same status (no write, no event).
- ``observedGeneration`` is set when given (the parent's ``metadata.generation``).
- Without a ``reason``, the reason is derived from the type and status, valid for
  ``metav1.Condition`` (CamelCase, letters first): ``Ready`` when True, ``NotReady`` when False,
  ``ReadyUnknown`` when Unknown (a domain prefix such as ``example.com/`` is dropped).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable

STATUSES = ("True", "False", "Unknown")


def default_reason(type: str, status: str) -> str:  # noqa: A002 - the Kubernetes field name
    """The reason `set_condition` uses when none is given (see the module docstring)."""
    parts = re.split(r"[^A-Za-z0-9]+", type.rpartition("/")[2].lstrip("0123456789"))
    word = "".join(p[:1].upper() + p[1:] for p in parts) or "Condition"
    return {"True": word, "False": f"Not{word}"}.get(status, f"{word}Unknown")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: Iterable[dict] | None,
    type: str,  # noqa: A002 - the Kubernetes field name
    status: str | bool,
    reason: str = "",
    message: str = "",
    *,
    observed_generation: int | None = None,
    now: str | None = None,
) -> list[dict]:
    """``conditions`` with the condition ``type`` set to ``status`` (True/False/"Unknown")."""
    if isinstance(status, bool):
        status = "True" if status else "False"
    if status not in STATUSES:
        raise ValueError(f"condition status must be one of {STATUSES}, got {status!r}")
    out = [dict(c) for c in conditions or ()]
    current = next((c for c in out if c.get("type") == type), None)
    changed = current is None or current.get("status") != status
    new = {
        "type": type,
        "status": status,
        "reason": reason or default_reason(type, status),
        "message": message,
        "lastTransitionTime": (now or _now())
        if changed or current is None
        else current.get("lastTransitionTime") or (now or _now()),
    }
    if observed_generation is not None:
        new["observedGeneration"] = observed_generation
    if current is None:
        out.append(new)
    else:
        out[out.index(current)] = new
    return out


# ---- the standard conditions operatord maintains (kstatus) -----------------------------------

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
STANDARD = (READY, RECONCILING, STALLED)

# The parent's state after a sync, as far as its conditions are concerned.
CONVERGED = "converged"  # the sync succeeded and its children settled
PROGRESSING = "progressing"  # the sync succeeded but its children still change
FAILING = "failing"  # the sync failed; it is retried
STALLED_STATE = "stalled"  # the sync failed STALLED_AFTER times in a row; backing off
FINALIZING = "finalizing"  # the parent is being deleted; finalize runs

# Consecutive failed attempts after which a parent counts as stalled.
STALLED_AFTER = 3

# The reason of each failure kind (`protocol.SyncResult.error_kind`).
FAILURE_REASONS = {
    "error": "HandlerError",
    "invalid": "InvalidResponse",
    "timeout": "HandlerTimeout",
    "api": "ApiError",
}
SYNCED = "Synced"
PROGRESSING_REASON = "Progressing"
FINALIZING_REASON = "Finalizing"
# Every reason operatord writes: a standard condition with another reason is the handler's.
OPERATORD_REASONS = frozenset(
    {SYNCED, PROGRESSING_REASON, FINALIZING_REASON, *FAILURE_REASONS.values()}
)


def state_table(state: str, reason: str = "") -> dict[str, tuple[str, str]]:
    """Condition type -> (status, reason) for ``state``; ``reason`` names the failure (one of
    `FAILURE_REASONS`' values) in the failing and stalled states."""
    if state == CONVERGED:
        return {READY: ("True", SYNCED), RECONCILING: ("False", SYNCED), STALLED: ("False", SYNCED)}
    if state == PROGRESSING:
        r = PROGRESSING_REASON
        return {READY: ("Unknown", r), RECONCILING: ("True", r), STALLED: ("False", r)}
    if state == FAILING:
        r = reason or FAILURE_REASONS["error"]
        return {READY: ("False", r), RECONCILING: ("True", r), STALLED: ("False", r)}
    if state == STALLED_STATE:
        r = reason or FAILURE_REASONS["error"]
        return {READY: ("False", r), RECONCILING: ("False", r), STALLED: ("True", r)}
    if state == FINALIZING:
        r = FINALIZING_REASON
        return {READY: ("False", r), RECONCILING: ("True", r), STALLED: ("False", r)}
    raise ValueError(f"unknown state {state!r}")


def failure_state(failures: int) -> str:
    """The state after ``failures`` consecutive failed attempts (this one included)."""
    return STALLED_STATE if failures >= STALLED_AFTER else FAILING


def maintain(
    live: Iterable[dict] | None,
    state: str,
    *,
    handler: Iterable[dict] | None = None,
    reason: str = "",
    message: str = "",
    generation: int | None = None,
    now: str | None = None,
) -> list[dict]:
    """The parent's ``status.conditions`` in ``state``, with operatord's standard conditions.

    ``live``: the conditions the parent has now. ``handler``: the conditions of the status the
    handler returned (None: it returned no status, or it failed). ``message`` (the failure,
    already redacted) goes into the standard conditions in the failing and stalled states.

    Merge rule: a handler that returned a status owns every condition in it, in its order, and
    any standard type it sets (e.g. ``Ready`` through `set_condition`) is left exactly as it
    set it; operatord's standard types follow, in the order Ready, Reconciling, Stalled.
    Without a handler status, the live conditions are kept in place and operatord updates the
    standard types it wrote before (recognised by their reason, one of `OPERATORD_REASONS`)
    or that are missing. ``lastTransitionTime`` moves only when a condition's status changes.
    """
    live = [c for c in live or () if isinstance(c, dict)]
    if handler is None:
        base = live
        owned = {
            c.get("type")
            for c in live
            if c.get("type") in STANDARD and c.get("reason") not in OPERATORD_REASONS
        }
    else:
        base = [dict(c) for c in handler if isinstance(c, dict)]
        owned = {c.get("type") for c in base}
        earlier = {c.get("type"): c for c in live}
        base += [earlier[t] for t in STANDARD if t not in owned and t in earlier]
    out = base
    for type_, (status, why) in state_table(state, reason).items():
        if type_ in owned:
            continue
        text = message if state in (FAILING, STALLED_STATE) else ""
        out = set_condition(out, type_, status, why, text, observed_generation=generation, now=now)
    return out


def transition_key(conditions: Iterable[dict] | None) -> tuple:
    """What a write on failure is rate-limited by: type, status, reason and observedGeneration
    of the standard conditions (a changed message alone is no transition)."""
    return tuple(
        (c.get("type"), c.get("status"), c.get("reason"), c.get("observedGeneration"))
        for c in conditions or ()
        if isinstance(c, dict) and c.get("type") in STANDARD
    )
