"""Two versions of one handler, for `operatord diff` end to end.

V1 keeps two ConfigMaps per Widget (``<name>-a`` with key ``k1``, ``<name>-b``) and reports
``version: v1``. V2 adds key ``k2`` to ``<name>-a``, drops ``<name>-b`` and reports
``version: v2``. V2Broken is V2 that raises for the Widget named ``w1``.
"""

from __future__ import annotations

from operatord import Handler, SyncResponse


def config_map(name: str, data: dict) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


class V1(Handler):
    def sync(self, request):
        name = request.parent["metadata"]["name"]
        children = [config_map(f"{name}-a", {"k1": "one"}), config_map(f"{name}-b", {"k": "b"})]
        return SyncResponse(status={"version": "v1"}, children=children)


class V2(Handler):
    def sync(self, request):
        name = request.parent["metadata"]["name"]
        children = [config_map(f"{name}-a", {"k1": "one", "k2": "two"})]
        return SyncResponse(status={"version": "v2"}, children=children)


class V2Broken(V2):
    def sync(self, request):
        if request.parent["metadata"]["name"] == "w1":
            raise RuntimeError("v2 cannot handle w1")
        return super().sync(request)
