"""Example operator: every ``Widget`` (example.com/v1) gets a ConfigMap holding its spec.

A Widget named ``w`` in namespace ``ns`` with ``spec: {size: 3, message: hi}`` makes operatord
keep a ConfigMap ``ns/w`` with ``data: {size: "3", message: "hi"}``, and sets the Widget's
status to ``{"ready": <the observed ConfigMap matches>, "configMap": "w"}``. ``ready`` is False
on the first sync (the ConfigMap does not exist yet) and becomes True on the sync that follows
its creation: handlers describe the desired state and report what they observe.

Run it with ``config/example.yaml``; the CRD is ``examples/widget-crd.yaml``.
"""

from __future__ import annotations

from operatord import FinalizeResponse, Handler, SyncRequest, SyncResponse

DEFAULT_SIZE = 1


class Widgets(Handler):
    """Desires one ConfigMap per Widget and reports whether it is in place."""

    def sync(self, request: SyncRequest) -> SyncResponse:
        widget = request.parent
        name = widget["metadata"]["name"]
        spec = widget.get("spec") or {}
        desired_data = {
            "size": str(spec.get("size", DEFAULT_SIZE)),
            "message": str(spec.get("message", "")),
        }
        config_map = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            # No namespace: children of a namespaced parent go to the parent's namespace.
            "metadata": {"name": name, "labels": {"example.com/widget": name}},
            "data": desired_data,
        }
        observed = request.children.of_type("v1", "ConfigMap").get(name)
        ready = observed is not None and (observed.get("data") or {}) == desired_data
        return SyncResponse(status={"ready": ready, "configMap": name}, children=[config_map])

    def finalize(self, request: SyncRequest) -> FinalizeResponse:
        # The ConfigMap is owned by the Widget and garbage-collected with it; nothing external
        # to clean up. A real operator would release external resources here and return
        # finalized=False until they are gone.
        return FinalizeResponse(finalized=True)
