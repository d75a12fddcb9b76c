"""The review APIs kubectl asks about the caller: SelfSubjectAccessReview and
SelfSubjectRulesReview (`kubectl auth can-i`) and SelfSubjectReview (`kubectl auth whoami`).

Guarantees: the server has no authorization, so every access review is allowed and the rules
review grants everything; the caller is the one user every token maps to. Reviews are answered
on create (201) and never stored.
"""

from __future__ import annotations

from typing import Any

from .errors import ApiError

USER = {
    "username": "operatord",
    "groups": ["system:masters", "system:authenticated"],
}

KINDS = {
    ("authorization.k8s.io", "selfsubjectaccessreviews"): "SelfSubjectAccessReview",
    ("authorization.k8s.io", "selfsubjectrulesreviews"): "SelfSubjectRulesReview",
    ("authentication.k8s.io", "selfsubjectreviews"): "SelfSubjectReview",
}


def answer(key: tuple[str, str], api_version: str, body: Any) -> dict:
    """The created review for a request `body`."""
    if not isinstance(body, dict):
        raise ApiError(400, "the body of the request must be a JSON object")
    kind = KINDS[key]
    out: dict[str, Any] = {
        "kind": kind,
        "apiVersion": api_version,
        "metadata": {"creationTimestamp": None},
    }
    if key[1] == "selfsubjectreviews":
        out["status"] = {"userInfo": dict(USER)}
        return out
    out["spec"] = body.get("spec") or {}
    if key[1] == "selfsubjectaccessreviews":
        out["status"] = {"allowed": True, "reason": "the embedded API server allows everything"}
    else:
        out["status"] = {
            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            "incomplete": False,
        }
    return out
