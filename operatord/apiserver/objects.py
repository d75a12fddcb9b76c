"""Committed objects and the facts every part of the store shares about them.

Guarantees: an `Obj` is never mutated once committed, so its cached JSON encoding (`encode`)
stays valid; `now_time` is second-precision RFC 3339 UTC, as Kubernetes writes timestamps.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

Key = tuple[str, str]  # (group, plural)
Matcher = Callable[[dict], bool]

NS_KEY: Key = ("", "namespaces")
CRD_KEY: Key = ("apiextensions.k8s.io", "customresourcedefinitions")
NS_FINALIZER = "kubernetes"
CRD_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"


class Obj(dict[str, Any]):
    """A committed object; `raw` caches its JSON encoding (None until first encoded)."""

    __slots__ = ("raw",)
    raw: bytes | None


def encode(obj: dict) -> bytes:
    """Compact JSON of `obj`; computed once per committed object."""
    if isinstance(obj, Obj):
        raw = obj.raw
        if raw is None:
            raw = obj.raw = json.dumps(obj, separators=(",", ":")).encode()
        return raw
    return json.dumps(obj, separators=(",", ":")).encode()


def now_time() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_uid() -> str:
    return str(uuid.uuid4())


def ns_finalizers(key: Key, obj: dict) -> bool:
    """Whether `obj` is a Namespace that still has `spec.finalizers` (it is not removed yet)."""
    return key == NS_KEY and bool((obj.get("spec") or {}).get("finalizers"))
