"""Label and field selectors with the grammar of Kubernetes' `labels.Parse` and `fields.Parse`.

Guarantees: `parse_labels` accepts exactly the documented grammar (`k=v`, `k==v`, `k!=v`,
`k in (a,b)`, `k notin (a,b)`, `k`, `!k`, `k>n`, `k<n`, comma-separated, all must hold) and
raises `SelectorError` for anything else; an empty selector matches everything.
"""

from __future__ import annotations

import re
from collections.abc import Callable

Matcher = Callable[[dict], bool]


class SelectorError(ValueError):
    """The selector string does not parse; the API answers 400 BadRequest."""


_TOKEN = re.compile(r"\s*(==|!=|=|\(|\)|,|!|>|<|[^\s=!(),<>]+)")
_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


def _tokens(s: str) -> list[str]:
    out: list[str] = []
    pos = 0
    s = s.strip()
    while pos < len(s):
        m = _TOKEN.match(s, pos)
        if not m:
            raise SelectorError(f"unable to parse requirement: {s!r}")
        out.append(m.group(1))
        pos = m.end()
        while pos < len(s) and s[pos].isspace():
            pos += 1
    return out


def _check_key(k: str) -> None:
    if len(k) > 316 or not _KEY.match(k):
        raise SelectorError(f"invalid label key {k!r}")


def _check_value(v: str) -> None:
    if len(v) > 63 or not _VALUE.match(v):
        raise SelectorError(f"invalid label value: {v!r}")


def parse_labels(selector: str | None) -> Matcher | None:
    """A predicate over an object's labels, or None when the selector is empty."""
    if not selector or not selector.strip():
        return None
    toks = _tokens(selector)
    reqs: list[Matcher] = []
    i = 0
    n = len(toks)

    def expect_value(j: int) -> str:
        if j >= n or toks[j] in ("(", ")", ",", "=", "==", "!=", "!"):
            raise SelectorError(f"found missing value in {selector!r}")
        return toks[j]

    while i < n:
        t = toks[i]
        if t == "!":
            if i + 1 >= n:
                raise SelectorError("missing key after '!'")
            key = toks[i + 1]
            _check_key(key)
            reqs.append(_absent(key))
            i += 2
        else:
            key = t
            _check_key(key)
            op = toks[i + 1] if i + 1 < n else ","
            if op == ",":
                reqs.append(_present(key))
                i += 1
            elif op in ("=", "==", "!="):
                val = toks[i + 2] if i + 2 < n and toks[i + 2] != "," else ""
                _check_value(val)
                if op == "!=":
                    reqs.append(_label_is(key, val, False))
                else:
                    reqs.append(_label_is(key, val, True))
                i += 3 if val or (i + 2 < n and toks[i + 2] != ",") else 2
            elif op in ("in", "notin"):
                if i + 2 >= n or toks[i + 2] != "(":
                    raise SelectorError(f"expected '(' after {op} in {selector!r}")
                j = i + 3
                vals: set[str] = set()
                while True:
                    if j >= n:
                        raise SelectorError(f"unterminated value set in {selector!r}")
                    if toks[j] == ")":
                        j += 1
                        break
                    if toks[j] == ",":
                        j += 1
                        continue
                    _check_value(toks[j])
                    vals.add(toks[j])
                    j += 1
                if op == "in":
                    if not vals:
                        raise SelectorError("for 'in' operator, values set can't be empty")
                    reqs.append(_label_in(key, frozenset(vals), True))
                else:
                    reqs.append(_label_in(key, frozenset(vals), False))
                i = j
            elif op in (">", "<"):
                val = expect_value(i + 2)
                try:
                    num = int(val)
                except ValueError:
                    raise SelectorError(
                        f"for {op} operator, the value must be an integer"
                    ) from None
                reqs.append(_numeric(key, op, num))
                i += 3
            else:
                raise SelectorError(f"unable to parse requirement: {selector!r}")
        if i < n:
            if toks[i] != ",":
                raise SelectorError(f"expected ',' in {selector!r}")
            i += 1
            if i >= n:
                raise SelectorError(f"trailing ',' in {selector!r}")

    def match(obj: dict) -> bool:
        lb = (obj.get("metadata") or {}).get("labels") or {}
        return all(r(lb) for r in reqs)

    return match


# Requirements over an object's labels (a `Matcher` applied to the labels dict).


def _absent(key: str) -> Matcher:
    return lambda lb: key not in lb


def _present(key: str) -> Matcher:
    return lambda lb: key in lb


def _label_is(key: str, value: str, equal: bool) -> Matcher:
    if equal:
        return lambda lb: lb.get(key) == value
    return lambda lb: lb.get(key) != value


def _label_in(key: str, values: frozenset[str], inside: bool) -> Matcher:
    if inside:
        return lambda lb: lb.get(key) in values
    return lambda lb: lb.get(key) not in values


def _numeric(key: str, op: str, num: int) -> Matcher:
    def m(lb: dict) -> bool:
        v = lb.get(key)
        if v is None:
            return False
        try:
            x = int(v)
        except ValueError:
            return False
        return x > num if op == ">" else x < num

    return m


# Fields selectable on every type, plus a few well-known per-kind extras.
_COMMON_FIELDS = {"metadata.name", "metadata.namespace"}
_EXTRA_FIELDS = {
    "Pod": {"status.phase", "spec.nodeName", "spec.restartPolicy", "spec.serviceAccountName"},
    "Event": {
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "type",
        "source",
        "regarding.kind",
        "regarding.name",
        "regarding.namespace",
        "regarding.uid",
    },
    "Secret": {"type"},
    "Namespace": {"status.phase"},
}


def _get_path(obj: dict, path: str) -> str:
    cur: object = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    return cur if isinstance(cur, str) else str(cur)


def _field_is(field: str, value: str, equal: bool) -> Matcher:
    if equal:
        return lambda o: _get_path(o, field) == value
    return lambda o: _get_path(o, field) != value


def parse_fields(selector: str | None, kind: str) -> Matcher | None:
    """A predicate over an object for a field selector, or None when the selector is empty."""
    if not selector or not selector.strip():
        return None
    allowed = _COMMON_FIELDS | _EXTRA_FIELDS.get(kind, set())
    reqs: list[Matcher] = []
    for part in selector.split(","):
        part = part.strip()
        if not part:
            raise SelectorError(f"invalid field selector: {selector!r}")
        m = re.fullmatch(r"([^=!]+?)\s*(==|!=|=)\s*(.*)", part)
        if not m:
            raise SelectorError(f"invalid selector: {part!r}; can't understand {part!r}")
        field, op, value = m.group(1).strip(), m.group(2), m.group(3).strip()
        if field not in allowed:
            raise SelectorError(f'field label not supported: "{field}"')
        if op == "!=":
            reqs.append(_field_is(field, value, False))
        else:
            reqs.append(_field_is(field, value, True))

    def match(obj: dict) -> bool:
        return all(r(obj) for r in reqs)

    return match


def combine(*matchers: Matcher | None) -> Matcher | None:
    """All given predicates must hold; None when there are none."""
    ms = [m for m in matchers if m is not None]
    if not ms:
        return None
    if len(ms) == 1:
        return ms[0]
    return lambda o: all(m(o) for m in ms)
