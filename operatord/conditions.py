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
