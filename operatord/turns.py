"""A mutual-exclusion lock that serves its waiters in turn.

A worker runs one synchronous handler call at a time. With a plain lock the next caller is
whichever thread the scheduler happens to wake, so one controller with many parents in flight
can keep another controller's single parent waiting behind all of its own calls. `TurnLock`
hands the lock over in turn instead.

Guarantees:
- Mutual exclusion: at most one holder at a time.
- Waiters are grouped by a *turn key* (a controller's name). On release the lock goes to the
  oldest waiter of the next key in rotation: keys with waiters take turns one call each, and
  calls of one key are served first come, first served. The holder's own key goes last in the
  rotation, so a key that starts waiting is served after the running call and at most one call
  of each other key already waiting.
- A waiter keeps its place while it waits, however often it wakes to check whether to give up
  (``abandon``); one that gives up leaves the queue without taking the lock.
- Release hands the lock directly to the chosen waiter: no other thread can take it in between.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable


class TurnLock:
    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._held = False
        self._holder = ""  # the key of the current holder
        self._waiters: dict[str, deque[threading.Lock]] = {}
        self._order: deque[str] = deque()  # keys with waiters, next to be served first

    def acquire(
        self, key: str = "", tick: float = 0.1, abandon: Callable[[], bool] | None = None
    ) -> bool:
        """Take the lock, waiting in ``key``'s turn. Every ``tick`` seconds of waiting,
        ``abandon()`` is asked; True gives up (returns False, the lock not taken)."""
        with self._mutex:
            if not self._held:
                self._held, self._holder = True, key
                return True
            gate = threading.Lock()
            gate.acquire()
            queue = self._waiters.get(key)
            if queue is None:
                queue = self._waiters[key] = deque()
                self._order.append(key)
            queue.append(gate)
        while not gate.acquire(timeout=tick):
            if abandon is None or not abandon():
                continue
            with self._mutex:
                queue = self._waiters.get(key)
                if queue is not None and gate in queue:
                    queue.remove(gate)
                    if not queue:
                        del self._waiters[key]
                        self._order.remove(key)
                    return False
            # Handed over while deciding to give up: the lock is ours; pass it on.
            gate.acquire()
            self.release()
            return False
        return True

    def release(self) -> None:
        """Give the lock to the next waiter in turn, or free it."""
        with self._mutex:
            if not self._held:
                raise RuntimeError("release of an unheld TurnLock")
            if not self._order:
                self._held = False
                return
            if self._order[0] == self._holder and len(self._order) > 1:
                self._order.rotate(-1)  # the key that just ran waits for the others' turns
            key = self._order.popleft()
            queue = self._waiters[key]
            gate = queue.popleft()
            if queue:
                self._order.append(key)  # its next call waits for every other key's turn
            else:
                del self._waiters[key]
            self._holder = key
            gate.release()  # the lock stays held: ownership passes to that waiter

    def waiting(self) -> dict[str, int]:
        """Waiters by key (for tests and diagnostics)."""
        with self._mutex:
            return {k: len(q) for k, q in self._waiters.items()}
