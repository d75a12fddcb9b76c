"""How many parents one worker may hold at once: a limit that adapts to the API server.

Holding more parents in flight hides the API server's latency while that latency is the wire
(a remote server answers each request after a fixed delay); once the server itself is the
bottleneck, more parents in flight only queue inside it: every request, of every controller,
waits longer and nothing finishes sooner. `InFlightLimit` tells the two apart as TCP Vegas does,
from the latency of the worker's own API requests:

- ``base`` is the lowest request latency seen recently (the minimum over the current and the
  previous ``window`` seconds): the latency of an unloaded server.
- Once per round (as many results as the limit), ``queued = limit * (1 - base / latency)``
  estimates how many of the limit's requests are waiting in the server rather than being
  served, with ``latency`` the mean request latency of the round's tasks.
- Fewer than ``alpha`` queued: the limit grows by one; more than ``beta``: it shrinks by one,
  or by half the excess when that is more (a server that suddenly queues everything is met
  within a few rounds); in between it holds. ``alpha`` and ``beta`` grow with the logarithm
  of the limit (3 and 6 times log10), so a large limit tolerates a proportionally small
  queue.

Guarantees: ``floor <= limit <= ceiling`` always; the limit starts at ``ceiling`` (a new worker
behaves as with a fixed limit until it has measured a round); a result that made no API request
carries no latency and does not count; an unchanged latency (a remote server's fixed delay)
never shrinks the limit, since nothing queues.
"""

from __future__ import annotations

import math
import threading
import time


class InFlightLimit:
    def __init__(self, ceiling: int, floor: int = 2, window: float = 30.0) -> None:
        self.ceiling = max(1, ceiling)
        self.floor = max(1, min(floor, self.ceiling))
        self.window = window
        self._limit = self.ceiling
        self._lock = threading.Lock()
        self._mins = [math.inf, math.inf]  # the current window's and the previous one's
        self._window_start: float | None = None  # set by the first observation
        self._round_n = 0
        self._round_sum = 0.0

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def base(self) -> float:
        return min(self._mins)

    def observe(self, requests: int, seconds: float, now: float | None = None) -> None:
        """One task's API requests: how many, and their total latency in seconds."""
        if requests <= 0 or self.floor == self.ceiling:
            return
        latency = seconds / requests
        now = time.monotonic() if now is None else now
        with self._lock:
            if self._window_start is None:
                self._window_start = now
            elif now - self._window_start >= self.window:
                idle = now - self._window_start >= 2 * self.window  # both windows are over
                self._mins = [math.inf, math.inf if idle else self._mins[0]]
                self._window_start = now
            self._mins[0] = min(self._mins[0], latency)
            self._round_n += 1
            self._round_sum += latency
            if self._round_n < self._limit:
                return
            mean = self._round_sum / self._round_n
            self._round_n, self._round_sum = 0, 0.0
            base = min(self._mins)
            if mean <= 0:
                return
            queued = self._limit * (1.0 - base / mean)
            log_limit = math.log10(max(self._limit, 2))
            alpha, beta = max(1.0, 3 * log_limit), max(2.0, 6 * log_limit)
            if queued < alpha:
                self._limit = min(self.ceiling, self._limit + 1)
            elif queued > beta:  # far past it: a larger step, so a flood is met in a few rounds
                step = max(1, round((queued - beta) / 2))
                self._limit = max(self.floor, self._limit - step)
