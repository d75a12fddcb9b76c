"""The handler bench/related.py runs: a Widget selects the Secret ``spec.secret`` or the
ConfigMap ``spec.configMap`` and reports the ConfigMap's ``data.setting`` (no children)."""

from __future__ import annotations

from operatord import Handler, Related, SyncResponse


class Selecting(Handler):
    def related(self, parent):
        spec = parent.get("spec") or {}
        if spec.get("secret"):
            return [Related("v1", "Secret", names=[spec["secret"]])]
        if spec.get("configMap"):
            return [Related("v1", "ConfigMap", names=[spec["configMap"]])]
        return []

    def sync(self, request):
        spec = request.parent.get("spec") or {}
        if spec.get("configMap"):
            cm = request.related.of_type("v1", "ConfigMap").get(spec["configMap"]) or {}
            return SyncResponse(status={"setting": (cm.get("data") or {}).get("setting")})
        secret = request.related.of_type("v1", "Secret").get(spec.get("secret", ""))
        return SyncResponse(status={"secret": secret is not None})
