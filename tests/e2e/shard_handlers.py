"""The handler of the sharding end-to-end tests: a Widget wants one ConfigMap, and every handler
call is recorded for the overlap checks.

Each call appends one line to ``$SHARD_LOG``: ``<leader pid> <parent uid> <start> <end>``
(``time.monotonic()``, the host-wide clock the test uses for the lease history). The worker's
leader pid names the replica. One ``write`` of a short line to a file opened with O_APPEND is
atomic, so replicas never interleave lines.
"""

from __future__ import annotations

import os
import time

from multiprocess import parent_process

from operatord import Handler, SyncResponse


class Recorded(Handler):
    def sync(self, request):
        start = time.monotonic()
        parent = request.parent
        name = parent["metadata"]["name"]
        data = {"size": str((parent.get("spec") or {}).get("size", 1))}
        observed = request.children.of_type("v1", "ConfigMap").get(name)
        time.sleep(0.005)  # a sync takes a little while: overlaps would show
        response = SyncResponse(
            status={"ready": observed is not None and observed.get("data") == data},
            children=[
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}
            ],
        )
        end = time.monotonic()
        path = os.environ.get("SHARD_LOG")
        if path:
            line = f"{parent_process().pid} {parent['metadata']['uid']} {start:.6f} {end:.6f}\n"
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        return response
