"""Watch fan-out and the per-type event history of the embedded API server.

Guarantees:
- `publish` hands every committed change, in resourceVersion order, to every open watcher of
  its type before it returns; a watcher's filter turns MODIFIED into ADDED/DELETED for objects
  moving into or out of its selector.
- Each type keeps its last `history_size` events; starting a watch from a resourceVersion older
  than what is kept raises 410 Expired.
- A watcher that falls `limit` events behind is marked `overflowed` and gets no more events.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable

from .errors import ApiError
from .objects import Key, Matcher, Obj


class Watcher:
    """One watch stream's server side: a filter and a buffer of pending events."""

    __slots__ = ("key", "ns", "match", "events", "wake", "closed", "overflowed", "limit")

    def __init__(self, key: Key, ns: str, match: Matcher | None, limit: int = 200_000) -> None:
        self.key = key
        self.ns = ns
        self.match = match
        self.events: deque = deque()
        self.wake: Callable[[], None] | None = None
        self.closed = False
        self.overflowed = False
        self.limit = limit

    def classify(self, etype: str, obj: dict, old: dict | None) -> str | None:
        if self.ns and obj["metadata"].get("namespace", "") != self.ns:
            return None
        m = self.match
        if m is None:
            return etype
        now = m(obj)
        if etype == "MODIFIED":
            before = old is not None and m(old)
            if now and before:
                return "MODIFIED"
            if now:
                return "ADDED"
            if before:
                return "DELETED"
            return None
        return etype if now else None

    def offer(self, etype: str, obj: dict, old: dict | None) -> None:
        t = self.classify(etype, obj, old)
        if t is None or self.closed:
            return
        if len(self.events) >= self.limit:
            self.overflowed = True
            return
        self.events.append((t, obj))
        if self.wake is not None:
            self.wake()


class WatchHub:
    """Open watchers and the bounded event history, per type."""

    def __init__(self, history_size: int = 10_000) -> None:
        self.history_size = history_size
        self._history: dict[Key, deque] = {}
        self._evicted: dict[Key, int] = {}  # events with rv <= this are gone
        self._watchers: dict[Key, set[Watcher]] = {}

    def publish(self, key: Key, rv: int, etype: str, obj: Obj, old: Obj | None) -> None:
        hist = self._history.setdefault(key, deque())
        if len(hist) >= self.history_size:
            self._evicted[key] = hist.popleft()[0]
        hist.append((rv, etype, obj, old))
        for w in tuple(self._watchers.get(key, ())):
            w.offer(etype, obj, old)

    def evicted(self, key: Key) -> int:
        """Events of `key` with a resourceVersion up to this one are no longer kept."""
        return self._evicted.get(key, 0)

    def start(
        self, key: Key, ns: str, match: Matcher | None, rv: str | None, current: Iterable[Obj]
    ) -> tuple[Watcher, list[tuple[str, dict]]]:
        """Register a watcher; return it with the events it must send first.

        No resourceVersion (or "0"): synthetic ADDED for every matching object of `current`.
        Otherwise every event after `rv` from the history; 410 Expired if the history no longer
        reaches back."""
        w = Watcher(key, ns, match)
        initial: list[tuple[str, dict]] = []
        if rv in (None, "", "0"):
            for obj in current:
                if match is None or match(obj):
                    initial.append(("ADDED", obj))
        else:
            try:
                since = int(rv)
            except ValueError:
                raise ApiError(400, f"invalid resource version {rv!r}") from None
            if since < self.evicted(key):
                raise ApiError(
                    410,
                    f"too old resource version: {since} ({self.evicted(key) + 1})",
                    "Expired",
                )
            for erv, etype, obj, old in self._history.get(key, ()):
                if erv > since:
                    t = w.classify(etype, obj, old)
                    if t is not None:
                        initial.append((t, obj))
        self._watchers.setdefault(key, set()).add(w)
        return w, initial

    def stop(self, w: Watcher) -> None:
        w.closed = True
        ws = self._watchers.get(w.key)
        if ws is not None:
            ws.discard(w)

    def watchers(self) -> list[Watcher]:
        return [w for ws in self._watchers.values() for w in ws]

    def compact(self, keys: Iterable[Key], rv: int) -> None:
        """Forget all event history of `keys`: every watch from before `rv` gets 410."""
        for key in set(self._history) | set(keys):
            self._history.get(key, deque()).clear()
            self._evicted[key] = rv

    def drop_type(self, key: Key) -> None:
        """A type stops being served: forget its history and close its watchers."""
        self._history.pop(key, None)
        self._evicted.pop(key, None)
        for w in self._watchers.pop(key, set()):
            w.closed = True
            if w.wake:
                w.wake()
