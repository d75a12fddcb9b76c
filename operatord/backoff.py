"""Per-key exponential backoff with jitter.

Guarantees of `Backoff`:

- Each call of `next_delay(key)` records one more consecutive failure of `key` and returns the
  delay before its next retry. With `n` failures recorded (including this one) the base delay is

      base = min(max_seconds, initial_seconds * multiplier ** (n - 1))

  and the returned delay is drawn uniformly from `[base * (1 - jitter), base * (1 + jitter)]`
  and then capped at `max_seconds`. So every delay lies in
  `[base * (1 - jitter), min(max_seconds, base * (1 + jitter))]`; with `jitter=0` it is exactly
  `base`. Once the base reaches the cap, delays stay in `[max * (1 - jitter), max]`.
- Overflow-safe: the failure count is an unbounded int and the power is never evaluated past
  the cap, so a key may fail any number of times.
- `reset(key)` forgets the key (its next failure starts again at `initial_seconds`);
  `len(backoff)` / `keys()` count only keys with at least one recorded failure, so the size is
  a gauge of "items backing off" and does not grow with keys that succeeded.
- Thread-safe: all methods may be called concurrently; the failure count of a key is never lost
  and draws from the random source are serialized.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)  # the key type of the items backed off

__all__ = ["Backoff"]


class Backoff(Generic[K]):
    """Exponential backoff state for many keys (for example parent uids)."""

    def __init__(
        self,
        initial_seconds: float = 0.5,
        max_seconds: float = 300.0,
        multiplier: float = 2.0,
        jitter: float = 0.5,
        rng: random.Random | None = None,
    ) -> None:
        """Create an empty backoff. `rng` (anything with `uniform(a, b)`) makes jitter
        reproducible in tests; by default a private `random.Random()` is used.

        Raises ValueError unless `0 < initial_seconds <= max_seconds`, `multiplier >= 1` and
        `0 <= jitter <= 1`.
        """
        if not (0 < initial_seconds <= max_seconds) or not math.isfinite(max_seconds):
            raise ValueError("need 0 < initial_seconds <= max_seconds < inf")
        if not (multiplier >= 1 and math.isfinite(multiplier)):
            raise ValueError("multiplier must be a finite number >= 1")
        if not (0 <= jitter <= 1):
            raise ValueError("jitter must be within [0, 1]")
        self.initial_seconds = float(initial_seconds)
        self.max_seconds = float(max_seconds)
        self.multiplier = float(multiplier)
        self.jitter = float(jitter)
        self._rng = rng if rng is not None else random.Random()
        self._lock = threading.Lock()
        self._failures: dict[K, int] = {}
        # The smallest exponent whose base reaches the cap; beyond it the power is not computed.
        if self.multiplier == 1.0:
            self._cap_exponent = math.inf
        else:
            ratio = self.max_seconds / self.initial_seconds
            self._cap_exponent = math.ceil(math.log(ratio, self.multiplier)) if ratio > 1 else 0

    def base_delay(self, failures: int) -> float:
        """The un-jittered delay after `failures` consecutive failures (0 for no failure)."""
        if failures <= 0:
            return 0.0
        exponent = failures - 1
        if exponent >= self._cap_exponent:
            return self.max_seconds
        return min(self.max_seconds, self.initial_seconds * self.multiplier**exponent)

    def next_delay(self, key: K) -> float:
        """Record one more failure of `key` and return the delay before retrying it."""
        with self._lock:
            n = self._failures.get(key, 0) + 1
            self._failures[key] = n
            base = self.base_delay(n)
            if self.jitter:
                delay = self._rng.uniform(base * (1 - self.jitter), base * (1 + self.jitter))
            else:
                delay = base
        return min(self.max_seconds, max(0.0, delay))

    def reset(self, key: K) -> None:
        """Forget `key`'s failures (a success). Unknown keys are ignored."""
        with self._lock:
            self._failures.pop(key, None)

    def failures(self, key: K) -> int:
        """The number of consecutive failures recorded for `key` (0 if none)."""
        with self._lock:
            return self._failures.get(key, 0)

    def keys(self) -> list[K]:
        """A snapshot of the keys that currently have at least one failure."""
        with self._lock:
            return list(self._failures)

    def __len__(self) -> int:
        with self._lock:
            return len(self._failures)

    def __repr__(self) -> str:
        return (
            f"Backoff(initial_seconds={self.initial_seconds}, max_seconds={self.max_seconds}, "
            f"multiplier={self.multiplier}, jitter={self.jitter}, keys={len(self)})"
        )
