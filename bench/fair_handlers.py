"""The handler of bench/fairness.py's two controllers: a ConfigMap per parent, status ready."""

from __future__ import annotations

from operatord import SyncResponse


def sync(request):
    p = request.parent
    n = str((p.get("spec") or {}).get("n", 0))
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": p["metadata"]["name"]},
        "data": {"n": n},
    }
    return SyncResponse(status={"ready": True, "n": n}, children=[cm])
