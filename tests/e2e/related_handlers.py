"""Handlers for the related-objects e2e tests; what they select is driven by the parent's spec.

spec keys:
- ``secret``: select that Secret by name (same namespace); status ``secret`` is a digest of its
  data (None when it does not exist), never the data itself.
- ``configMap``: select that ConfigMap by name; status ``setting`` is its ``data.setting``.
- ``team``: select Namespaces labelled ``team=<team>``; status ``namespaces`` lists them.
- ``undeclared``: also select a Service, a type the config does not declare.
Every sync is logged like the other e2e handlers (``handlers.log_call``).
"""

from __future__ import annotations

import hashlib
import json

from handlers import log_call

from operatord import Handler, Related, SyncResponse


def digest(data: dict | None) -> str | None:
    if data is None:
        return None
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


class Selecting(Handler):
    def related(self, parent):
        spec = parent.get("spec") or {}
        out = []
        if spec.get("secret"):
            out.append(Related("v1", "Secret", names=[spec["secret"]]))
        if spec.get("configMap"):
            out.append(Related("v1", "ConfigMap", names=[spec["configMap"]]))
        if spec.get("team"):
            out.append(Related("v1", "Namespace", label_selector=f"team={spec['team']}"))
        if spec.get("undeclared"):
            out.append(Related("v1", "Service", names=["anything"]))
        return out

    def sync(self, request):
        log_call(request, "sync")
        spec = request.parent.get("spec") or {}
        status = {}
        if spec.get("secret"):
            secret = request.related.of_type("v1", "Secret").get(spec["secret"])
            status["secret"] = digest(secret.get("data") or {}) if secret else None
        if spec.get("configMap"):
            cm = request.related.of_type("v1", "ConfigMap").get(spec["configMap"])
            status["setting"] = ((cm or {}).get("data") or {}).get("setting")
        if spec.get("team"):
            namespaces = request.related.of_type("v1", "Namespace")
            status["namespaces"] = sorted(n["metadata"]["name"] for n in namespaces)
        return SyncResponse(status=status)
