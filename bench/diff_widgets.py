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
        for child in response.children:
            child["data"]["version"] = "2"
        return response
