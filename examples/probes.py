"""Example of an async handler: each ``Widget`` with ``spec.endpoint: "host:port"`` gets
``status.reachable`` from a TCP connect, plus the ConfigMap of the Widget example.

An ``async def sync`` lets one worker process hold many parents waiting on slow I/O at once
(up to ``inFlightPerWorker``), where a plain ``def`` would wait for one endpoint at a time.
Blocking calls (``time.sleep``, ``requests``, a synchronous client) inside it would stall
every other parent of the worker: use asyncio libraries, or ``await asyncio.to_thread(...)``.
"""

from __future__ import annotations

import asyncio

from examples.widgets import Widgets
from operatord import SyncRequest, SyncResponse

CONNECT_TIMEOUT = 2.0


async def reachable(endpoint: str) -> bool:
    """True when a TCP connection to ``host:port`` opens within CONNECT_TIMEOUT seconds."""
    host, _, port = endpoint.rpartition(":")
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, int(port)), CONNECT_TIMEOUT
        )
    except (OSError, ValueError, TimeoutError):
        return False
    writer.close()
    await writer.wait_closed()
    return True


class Probes(Widgets):
    async def sync(self, request: SyncRequest) -> SyncResponse:
        response = super().sync(request)  # the ConfigMap and readiness of the Widget example
        endpoint = (request.parent.get("spec") or {}).get("endpoint")
        status = dict(response.status or {})
        status["reachable"] = await reachable(endpoint) if endpoint else None
        return SyncResponse(status=status, children=response.children)
