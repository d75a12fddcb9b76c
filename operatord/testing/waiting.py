"""Waiting for a condition with a deadline: the way tests observe an eventually consistent
system without fixed sleeps."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.05,
    message: str = "",
) -> T:
    """Call ``predicate`` every ``interval`` seconds until it returns a truthy value, and return
    that value. At the deadline raise AssertionError naming ``message`` and the last exception
    the predicate raised, if any (exceptions count as "not yet")."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - keep polling, report the last one
            last_exc = exc
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    detail = f": last error {last_exc!r}" if last_exc is not None else ""
    raise AssertionError(f"timed out after {timeout:g}s waiting for {message or predicate}{detail}")
