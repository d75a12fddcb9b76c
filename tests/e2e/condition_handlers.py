"""Handlers for the standard-conditions end-to-end tests.

``Steps`` moves its ConfigMap's ``step`` one step per handler run towards ``spec.steps``: a
spec change keeps children changing for several runs, so the parent shows Reconciling=True
until the children settle. ``OwnReady`` sets ``Ready`` itself (``spec.ready``) with
`set_condition`.
"""

from __future__ import annotations

from operatord import Handler, SyncResponse, set_condition


class Steps(Handler):
    def sync(self, request):
        name = request.parent["metadata"]["name"]
        target = int((request.parent.get("spec") or {}).get("steps", 1))
        observed = request.children.of_type("v1", "ConfigMap").get(name)
        step = int(((observed or {}).get("data") or {}).get("step", "0"))
        nxt = step + 1 if step < target else target
        child = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name},
            "data": {"step": str(nxt)},
        }
        return SyncResponse(status={"step": step}, children=[child])


class OwnReady(Handler):
    def sync(self, request):
        ready = bool((request.parent.get("spec") or {}).get("ready"))
        live = (request.parent.get("status") or {}).get("conditions")
        conditions = set_condition(
            live, "Ready", ready, "Checked" if ready else "WaitingForDNS", "decided by the handler"
        )
        return SyncResponse(status={"conditions": conditions})
