"""The ``shardSelector`` list/watch option (KEP-5866, Kubernetes v1.36 alpha, feature gate
ShardedListAndWatch).

Grammar (what kube-apiserver accepts): one or more requirements joined by ``||``::

    shardRange(object.metadata.uid, '0x0000000000000000', '0x8000000000000000')
      || shardRange(object.metadata.uid, '0xc000000000000000', '0x10000000000000000')

Guarantees:

- A requirement selects the objects whose field value (``object.metadata.uid`` or
  ``object.metadata.namespace``; a missing field hashes as ``""``) has a 64-bit FNV-1a hash
  (of its UTF-8 bytes) in ``[start, end)``; the selector is their union.
- Bounds are quoted (``'`` or ``"``) ``0x`` hex numbers with 1 to 17 digits, at most
  ``0x10000000000000000`` (2^64, the end of the hash space), and ``start <= end``.
- Anything else raises `ShardSelectorError` (the server answers 400 BadRequest).
- An empty or blank selector selects everything and is not echoed.

The server echoes an applied selector in the list response as ``metadata.shardInfo.selector``
(verbatim, as the client sent it); a server without the feature (here: the
``ignoreShardSelector`` fault) ignores the parameter and returns no ``shardInfo``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

__all__ = ["FIELDS", "ShardSelectorError", "fnv1a64", "parse_shard_selector"]

_OFFSET = 0xCBF29CE484222325
_PRIME = 0x100000001B3
_SPACE = 1 << 64
_MASK = _SPACE - 1

FIELDS = {
    "object.metadata.uid": ("uid",),
    "object.metadata.namespace": ("namespace",),
}

_REQUIREMENT = re.compile(
    r"""^\s*shardRange\(\s*(?P<field>[A-Za-z.]+)\s*,\s*
    (?P<q1>['"])(?P<start>[^'"]*)(?P=q1)\s*,\s*
    (?P<q2>['"])(?P<end>[^'"]*)(?P=q2)\s*\)\s*$""",
    re.VERBOSE,
)
_HEX = re.compile(r"^0[xX][0-9a-fA-F]{1,17}$")


class ShardSelectorError(ValueError):
    """A shardSelector that does not parse; the message says why."""


@lru_cache(maxsize=1 << 16)
def fnv1a64(text: str) -> int:
    """64-bit FNV-1a of the UTF-8 bytes of ``text``."""
    h = _OFFSET
    for byte in text.encode("utf-8"):
        h = ((h ^ byte) * _PRIME) & _MASK
    return h


def _bound(text: str, what: str) -> int:
    if not _HEX.match(text):
        raise ShardSelectorError(f"{what} {text!r} is not a 0x-prefixed hex number")
    value = int(text, 16)
    if value > _SPACE:
        raise ShardSelectorError(f"{what} {text!r} exceeds 0x10000000000000000")
    return value


def parse_shard_selector(selector: str | None) -> Callable[[dict], bool] | None:
    """A predicate over objects, or None for an empty selector (everything)."""
    if selector is None or not selector.strip():
        return None
    ranges: list[tuple[tuple[str, ...], int, int]] = []
    for part in selector.split("||"):
        m = _REQUIREMENT.match(part)
        if not m:
            raise ShardSelectorError(
                f"cannot parse {part.strip()!r}: expected shardRange(field, 'hexStart', 'hexEnd')"
            )
        field = m["field"]
        if field not in FIELDS:
            raise ShardSelectorError(
                f"unsupported field {field!r} (supported: {', '.join(sorted(FIELDS))})"
            )
        start, end = _bound(m["start"], "start"), _bound(m["end"], "end")
        if start > end:
            raise ShardSelectorError(f"start {m['start']} is greater than end {m['end']}")
        ranges.append((FIELDS[field], start, end))

    def match(obj: dict) -> bool:
        meta = obj.get("metadata") or {}
        for (key,), start, end in ranges:
            if start <= fnv1a64(str(meta.get(key) or "")) < end:
                return True
        return False

    return match
