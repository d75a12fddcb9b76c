"""The handler bench/related_secrets.py runs: a Reader selects the Secret ``spec.secret`` by name and
reports a digest of its data in ``status.secret`` (None when it does not exist)."""

from __future__ import annotations

import hashlib
import json

from operatord import Handler, Related, SyncResponse


def digest(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


class Reading(Handler):
    def related(self, parent):
        name = (parent.get("spec") or {}).get("secret")
        return [Related("v1", "Secret", names=[name])] if name else []

    def sync(self, request):
        name = (request.parent.get("spec") or {}).get("secret", "")
        secret = request.related.of_type("v1", "Secret").get(name)
        return SyncResponse(status={"secret": digest(secret.get("data") or {}) if secret else None})
