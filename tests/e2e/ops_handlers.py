"""Handlers for tests/e2e/test_operability.py.

``Stamped`` marks every write with the pid of the ``operatord run`` process whose worker made it
(captured when the worker imports this module, so an orphaned worker keeps its leader's pid), so a
test can attribute each object version in the API server's history to one replica.

spec keys:
- ``resyncAfter``: ask for another sync after that many seconds (a steady stream of writes).
- ``sleep``: seconds to sleep in sync before returning.
- ``fail``: raise in sync.
- ``secretValue``: also desire a Secret child whose ``stringData.token`` is that value.
Every call is appended to ``$E2E_LOG_DIR/<name>.log`` as in tests/e2e/handlers.py.
"""

from __future__ import annotations

import os
import time

from handlers import log_call
from multiprocess import parent_process

from operatord import Handler, SyncResponse

#: In a worker: the pid of its leader process (``operatord run``), fixed at import. (Not
#: os.getppid(): workers are forked by the leader's fork server.)
LEADER_PID = getattr(parent_process(), "pid", os.getpid())


class Stamped(Handler):
    def sync(self, request):
        log_call(request, "sync")
        p = request.parent
        spec = p.get("spec") or {}
        name = p["metadata"]["name"]
        if spec.get("sleep"):
            time.sleep(float(spec["sleep"]))
        if spec.get("fail"):
            raise RuntimeError(f"asked to fail ({name})")
        children = [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name},
                "data": {"writer": str(LEADER_PID)},
            }
        ]
        if spec.get("secretValue"):
            children.append(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": f"{name}-secret"},
                    "stringData": {"token": str(spec["secretValue"])},
                    "type": "Opaque",
                }
            )
        status = {"writer": str(LEADER_PID), "at": f"{time.time():.6f}"}
        return SyncResponse(status=status, children=children, resync_after=spec.get("resyncAfter"))
