"""Namespace scope: names, globs, negations in order, and a Namespace label selector."""

from __future__ import annotations

import pytest

from operatord.namespaces import NamespaceScope


@pytest.mark.parametrize(
    ("patterns", "admitted", "refused"),
    [
        ((), ["a", "kube-system"], []),
        (("a", "b"), ["a", "b"], ["c", "ab"]),
        (("a", "team-*", "!team-x"), ["a", "team-y", "team-new"], ["b", "team-x"]),
        (("!kube-*",), ["default", "shop"], ["kube-system", "kube-public"]),
        (("team-?",), ["team-a"], ["team-ab", "team-"]),
        # the last matching pattern decides
        (("team-*", "!team-x", "team-x"), ["team-x", "team-y"], ["a"]),
        (("!team-x", "team-*"), ["team-x", "a"], []),  # first a negation: unmatched admitted
    ],
)
def test_patterns_in_order(patterns, admitted, refused):
    scope = NamespaceScope(patterns)
    assert [n for n in admitted if not scope.admits(n)] == []
    assert [n for n in refused if scope.admits(n)] == []


def test_how_a_scope_is_watched():
    assert NamespaceScope().everything and not NamespaceScope().watch_namespaces
    literal = NamespaceScope(("b", "a", "b"))
    assert literal.literal and literal.names == ("b", "a") and not literal.watch_namespaces
    for dynamic in (NamespaceScope(("team-*",)), NamespaceScope(("!x",)), NamespaceScope((), "t")):
        assert dynamic.watch_namespaces and not dynamic.literal


def test_a_selector_must_match_the_namespace_labels_too():
    scope = NamespaceScope(("team-*",), "tier in (gold,silver)")
    assert scope.admits("team-a", {"tier": "gold"})
    assert not scope.admits("team-a", {"tier": "bronze"})
    assert not scope.admits("team-a", None)
    assert not scope.admits("other", {"tier": "gold"})
