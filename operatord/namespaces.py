"""The namespaces a daemon serves: literal names, globs, negations and a Namespace selector.

Rules (the same patterns kopf's ``--namespace`` takes):
- A pattern is a namespace name, or a glob (``*`` any run of characters, ``?`` one character),
  optionally negated with a leading ``!``.
- Patterns are evaluated in order and the last one that matches a namespace decides: a plain
  pattern admits it, a negated one refuses it. A namespace no pattern matches is refused,
  unless the first pattern is a negation (``["!kube-system"]`` serves everything else).
- No patterns: every namespace. A ``namespaceSelector`` must also match the namespace's labels.

How it is watched (`NamespaceScope.watch_namespaces`):
- Only literal names: every namespaced type is listed and watched once per name, so the
  operator needs read access in those namespaces only (namespaced RBAC) and never a
  cluster-wide list. A watch per namespace and type costs one connection each.
- A glob, a negation or a selector: every namespaced type is watched cluster-wide and
  filtered here, and Namespaces are watched too, so a namespace created (or relabelled) later
  starts being served without a restart and one that stops matching is released. One watch
  per type, whatever the number of namespaces; it needs cluster-wide read access.
- No scope: one cluster-wide watch per type, unfiltered.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from operatord.selectors import parse_selector

__all__ = ["NamespaceScope"]

_GLOB = frozenset("*?[")


@dataclass(frozen=True)
class NamespaceScope:
    """``patterns`` (config ``namespaces``, or the legacy ``namespace`` as one name) and
    ``selector`` (config ``namespaceSelector``)."""

    patterns: tuple[str, ...] = ()
    selector: str = ""

    def __post_init__(self) -> None:
        # Fails early on a selector that does not parse (the config check names the key).
        object.__setattr__(self, "_matcher", parse_selector(self.selector or None))

    @property
    def everything(self) -> bool:
        """Every namespace is served (no patterns, no selector)."""
        return not self.patterns and not self.selector

    @property
    def literal(self) -> bool:
        """Only literal names (no glob, no negation, no selector): watched per namespace."""
        return (
            bool(self.patterns)
            and not self.selector
            and not any(p.startswith("!") or _GLOB & set(p) for p in self.patterns)
        )

    @property
    def names(self) -> tuple[str, ...]:
        """The literal names, in order, without repeats (only meaningful when `literal`)."""
        return tuple(dict.fromkeys(self.patterns))

    @property
    def watch_namespaces(self) -> bool:
        """Namespaces must be watched: the served set can change while the daemon runs."""
        return not self.everything and not self.literal

    def admits_name(self, name: str) -> bool:
        """Whether the patterns admit namespace ``name`` (the selector aside)."""
        if not self.patterns:
            return True
        verdict = self.patterns[0].startswith("!")
        for pattern in self.patterns:
            negated = pattern.startswith("!")
            if fnmatchcase(name, pattern[1:] if negated else pattern):
                verdict = not negated
        return verdict

    def admits(self, name: str, labels: dict[str, str] | None = None) -> bool:
        """Whether namespace ``name`` with ``labels`` is served."""
        if not self.admits_name(name):
            return False
        if self.selector:
            return bool(self._matcher(labels or {}))  # type: ignore[attr-defined]
        return True
