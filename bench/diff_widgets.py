"""The example Widget handler (examples/widgets.py), version 2: its ConfigMap gets one more key.

Loaded as ``diff_widgets:Widgets`` with ``pythonPath`` holding ``bench/`` and the repository
root: the "every parent changes" case of bench/diff.py.
"""

from __future__ import annotations

from examples.widgets import Widgets as _Widgets
from operatord import SyncRequest, SyncResponse


class Widgets(_Widgets):
    def sync(self, request: SyncRequest) -> SyncResponse:
        response = super().sync(request)
        (config_map,) = response.children
        config_map["data"]["version"] = "2"
        name = config_map["metadata"]["name"]
        observed = request.children.of_type("v1", "ConfigMap").get(name)
        ready = observed is not None and observed.get("data") == config_map["data"]
        return SyncResponse(
            status={**(response.status or {}), "ready": ready}, children=[config_map]
        )
