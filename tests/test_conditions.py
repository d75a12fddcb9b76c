"""set_condition: Kubernetes condition semantics, usable from any handler."""

import pytest

from operatord import set_condition


def test_a_new_condition_is_appended_with_its_transition_time():
    out = set_condition([], "Ready", True, "Built", "all good", observed_generation=3, now="T1")
    assert out == [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Built",
            "message": "all good",
            "lastTransitionTime": "T1",
            "observedGeneration": 3,
        }
    ]


def test_the_transition_time_moves_only_when_the_status_changes():
    first = set_condition(None, "Ready", False, "Waiting", now="T1")
    same = set_condition(first, "Ready", False, "StillWaiting", "x", now="T2")
    assert same[0]["lastTransitionTime"] == "T1" and same[0]["reason"] == "StillWaiting"
    flipped = set_condition(same, "Ready", True, now="T3")
    assert flipped[0]["lastTransitionTime"] == "T3" and flipped[0]["reason"] == "Ready"
    assert first[0]["reason"] == "Waiting"  # the input is not modified


def test_other_conditions_keep_their_place():
    conds = set_condition(set_condition([], "A", True, now="T"), "B", "Unknown", now="T")
    out = set_condition(conds, "A", False, now="T2")
    assert [c["type"] for c in out] == ["A", "B"] and out[1] == conds[1]


def test_status_must_be_a_kubernetes_condition_status():
    with pytest.raises(ValueError):
        set_condition([], "Ready", "yes")


@pytest.mark.parametrize(
    ("type_", "status", "reason"),
    [
        ("Ready", True, "Ready"),
        ("Ready", False, "NotReady"),
        ("Ready", "Unknown", "ReadyUnknown"),
        ("example.com/backup-done", False, "NotBackupDone"),
        ("2fast", True, "Fast"),
        ("...", True, "Condition"),
    ],
)
def test_the_default_reason_is_a_valid_camel_case_word_from_type_and_status(type_, status, reason):
    import re

    got = set_condition([], type_, status)[0]["reason"]
    assert got == reason
    # metav1.Condition's reason pattern
    assert re.fullmatch(r"[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?", got)
