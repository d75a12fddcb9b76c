"""The list and watch options of streaming lists (WatchList, KEP-3157): `sendInitialEvents`
and `resourceVersionMatch`, validated as kube-apiserver validates `ListOptions`.

Guarantees:
- A list with `sendInitialEvents`, or with `resourceVersionMatch` but no `resourceVersion`,
  with `continue`, with a value other than `Exact`/`NotOlderThan`, or `Exact` for
  resourceVersion "0", is one 422 Invalid (`ListOptions.meta.k8s.io ""`) listing every
  violation, in the real server's order and wording.
- A watch with `sendInitialEvents` requires `resourceVersionMatch=NotOlderThan`; a watch with
  `resourceVersionMatch` requires `sendInitialEvents` and accepts only `NotOlderThan`.
  `allowWatchBookmarks` is not required: without it the initial events come without the
  closing bookmark, as on the real server.
- `watch_list=False` (a kube-apiserver with the WatchList feature gate off) adds the real
  server's "forbidden unless the WatchList feature gate is enabled" violation.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import FieldError, field_forbidden, field_not_supported, invalid

NOT_OLDER_THAN = "NotOlderThan"
EXACT = "Exact"
INITIAL_EVENTS_END = "k8s.io/initial-events-end"


@dataclass(frozen=True)
class WatchListOptions:
    """`send_initial_events`: None when the parameter is absent, else its value."""

    send_initial_events: bool | None
    resource_version_match: str


def _bool(value: str | None) -> bool | None:
    if value is None:
        return None
    return value.lower() in ("true", "1", "")


def parse(query: dict[str, list[str]], *, watch: bool, watch_list: bool = True) -> WatchListOptions:
    """The options of a list (`watch=False`) or watch request; raises 422 Invalid."""

    def q(name: str) -> str | None:
        v = query.get(name)
        return v[-1] if v else None

    send = _bool(q("sendInitialEvents"))
    match = q("resourceVersionMatch") or ""
    rv = q("resourceVersion") or ""
    cont = q("continue") or ""
    errs: list[FieldError] = []
    if not watch:
        if match:
            if not rv:
                errs.append(
                    field_forbidden(
                        "resourceVersionMatch",
                        "resourceVersionMatch is forbidden unless resourceVersion is provided",
                    )
                )
            if cont:
                errs.append(
                    field_forbidden(
                        "resourceVersionMatch",
                        "resourceVersionMatch is forbidden when continue is provided",
                    )
                )
            if match not in (EXACT, NOT_OLDER_THAN):
                errs.append(
                    field_not_supported("resourceVersionMatch", match, [EXACT, NOT_OLDER_THAN, ""])
                )
            if match == EXACT and rv == "0":
                errs.append(
                    field_forbidden(
                        "resourceVersionMatch",
                        'resourceVersionMatch "exact" is forbidden for resourceVersion "0"',
                    )
                )
        if send is not None:
            errs.append(
                field_forbidden("sendInitialEvents", "sendInitialEvents is forbidden for list")
            )
    else:
        if send is not None:
            if match != NOT_OLDER_THAN:
                errs.append(
                    field_forbidden(
                        "resourceVersionMatch",
                        f"sendInitialEvents requires setting resourceVersionMatch to {NOT_OLDER_THAN}",
                    )
                )
            if not watch_list:
                errs.append(
                    field_forbidden(
                        "sendInitialEvents",
                        "sendInitialEvents is forbidden for watch unless the WatchList feature "
                        "gate is enabled",
                    )
                )
        if match:
            if send is None:
                errs.append(
                    field_forbidden(
                        "resourceVersionMatch",
                        "resourceVersionMatch is forbidden for watch unless sendInitialEvents is "
                        "provided",
                    )
                )
            if match != NOT_OLDER_THAN:
                errs.append(field_not_supported("resourceVersionMatch", match, [NOT_OLDER_THAN]))
            if cont:
                errs.append(
                    field_forbidden(
                        "resourceVersionMatch",
                        "resourceVersionMatch is forbidden when continue is provided",
                    )
                )
    if errs:
        raise invalid("ListOptions", "", "meta.k8s.io", errs)
    return WatchListOptions(send, match)
