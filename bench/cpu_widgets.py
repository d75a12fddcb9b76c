"""The example Widget handler (examples/widgets.py) burning 10 ms of CPU per sync call: the
operatord side of the ``cpu`` scenario of bench/vs_kopf.py.

Loaded by operatord's workers as ``cpu_widgets:Widgets`` with ``pythonPath`` holding ``bench/``
and the repository root. The kopf twin (bench/kopf_widgets.py) burns the same per call.
"""

from __future__ import annotations

from burn import burn_cpu

from examples.widgets import Widgets as _Widgets
from operatord import SyncRequest, SyncResponse

BURN_SECONDS = 0.010


class Widgets(_Widgets):
    def sync(self, request: SyncRequest) -> SyncResponse:
        burn_cpu(BURN_SECONDS)
        return super().sync(request)
