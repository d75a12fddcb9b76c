"""Kubernetes label selectors and the wire form of a related-objects selection.

`parse_selector` implements the equality- and set-based label selector grammar of Kubernetes
(``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``, ``k``, ``!k``, comma = and).
It is the one grammar of the engine: the config check, the worker's validation of a handler's
``related(parent)`` and the leader's `operatord.related.RelatedIndex` all use it.

This module imports nothing of operatord, so every layer may use it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# The wire form of one selector: (apiVersion, kind, names, namespace, labelSelector); names is a
# tuple of strings (empty: not by name), namespace and labelSelector None when not given.
WireSelector = tuple[str, str, tuple[str, ...], str | None, str | None]
# A parent's selection: a tuple of WireSelector, in the order related() returned them.
Selection = tuple[WireSelector, ...]

Labels = dict[str, str]
Matcher = Callable[[Labels], bool]


class SelectorError(ValueError):
    """A label selector that does not parse; the message says why."""


_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_REQUIREMENT = re.compile(
    r"^\s*(?:(?P<not>!)\s*(?P<nkey>[^\s=!(),]+)"
    r"|(?P<key>[^\s=!(),]+)(?:\s*(?P<op>==|!=|=)\s*(?P<value>[^\s=!(),]*)"
    r"|\s+(?P<setop>in|notin)\s*\((?P<values>[^()]*)\))?)\s*$"
)


def _split_requirements(selector: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(selector):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError(f"unbalanced ')' in label selector {selector!r}")
        elif ch == "," and depth == 0:
            parts.append(selector[start:i])
            start = i + 1
    if depth:
        raise SelectorError(f"unbalanced '(' in label selector {selector!r}")
    parts.append(selector[start:])
    return parts


def _check(pattern: re.Pattern, text: str, what: str, selector: str, limit: int) -> str:
    if len(text) > limit or not pattern.match(text):
        raise SelectorError(f"invalid label {what} {text!r} in label selector {selector!r}")
    return text


def parse_selector(selector: str | None) -> Matcher:
    """A predicate over a labels dict. ``None`` or ``""`` matches everything; a selector that
    does not parse raises `SelectorError`."""
    if selector is None or not selector.strip():
        return _everything
    checks: list[Matcher] = []
    for part in _split_requirements(selector):
        m = _REQUIREMENT.match(part)
        if not m:
            raise SelectorError(f"cannot parse requirement {part.strip()!r} of {selector!r}")
        if m["nkey"]:
            key = _check(_KEY, m["nkey"], "key", selector, 316)
            checks.append(_requirement(key, "!", frozenset()))
            continue
        key = _check(_KEY, m["key"], "key", selector, 316)
        if m["op"]:
            value = _check(_VALUE, m["value"], "value", selector, 63)
            checks.append(_requirement(key, "!=" if m["op"] == "!=" else "=", frozenset([value])))
        elif m["setop"]:
            values = frozenset(
                _check(_VALUE, v.strip(), "value", selector, 63) for v in m["values"].split(",")
            )
            checks.append(_requirement(key, m["setop"], values))
        else:
            checks.append(_requirement(key, "exists", frozenset()))
    if len(checks) == 1:
        return checks[0]
    return lambda labels: all(check(labels) for check in checks)


def _requirement(key: str, op: str, values: frozenset[str]) -> Matcher:
    """The predicate of one parsed requirement; ``op`` is ``exists``, ``!``, ``=``, ``!=``,
    ``in`` or ``notin``; ``values`` holds the one value of ``=`` and ``!=``."""
    if op == "exists":
        return lambda labels: key in labels
    if op == "!":
        return lambda labels: key not in labels
    if op in ("=", "in"):
        return lambda labels: labels.get(key) in values
    return lambda labels: labels.get(key) not in values


def _everything(labels: Labels) -> bool:
    return True
