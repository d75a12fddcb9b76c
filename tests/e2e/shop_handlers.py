"""Three controllers of one daemon for tests/e2e/test_controllers.py.

- ``orders:Orders`` (Order -> ConfigMap ``order-<name>``).
- ``carts:sync`` (Cart -> ConfigMap ``cart-<name>`` and Secret ``cart-<name>``; reads the
  related Secret named in ``spec.payment``, whose ``data.token`` lands in the ConfigMap).
- ``refunds:Refunds`` (Refund -> ConfigMap ``refund-<name>``; its finalize fails twice and
  succeeds on the third attempt, counted in ``$E2E_LOG_DIR/<name>.finalize``).
"""

from __future__ import annotations

import base64
import os

from operatord import Event, Handler, Related, SyncResponse


def _cm(prefix: str, parent: dict, data: dict) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{prefix}-{parent['metadata']['name']}"},
        "data": data,
    }


class Orders(Handler):
    def sync(self, request):
        p = request.parent
        return SyncResponse(
            status={"ready": True, "by": "orders"},
            children=[_cm("order", p, {"qty": str(p["spec"].get("qty", 1))})],
            events=[Event("Ordered", f"quantity {p['spec'].get('qty', 1)}")],
        )


class Carts(Handler):
    def related(self, parent):
        name = (parent.get("spec") or {}).get("payment")
        return [Related("v1", "Secret", names=(name,))] if name else []

    def sync(self, request):
        p = request.parent
        token = ""
        name = (p.get("spec") or {}).get("payment")
        if name:
            found = request.related.of_type("v1", "Secret").get(name)
            if found is not None:
                token = base64.b64decode(found["data"]["token"]).decode()
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"cart-{p['metadata']['name']}"},
            "stringData": {"items": str(p["spec"].get("items", 0))},
        }
        return SyncResponse(
            status={"ready": True, "by": "carts", "token": token},
            children=[_cm("cart", p, {"token": token}), secret],
        )


sync = Carts()  # an instance is a valid handler too


class Refunds(Handler):
    def sync(self, request):
        p = request.parent
        return SyncResponse(
            status={"ready": True, "by": "refunds"}, children=[_cm("refund", p, {})]
        )

    def finalize(self, request):
        from operatord import FinalizeResponse

        path = os.path.join(
            os.environ["E2E_LOG_DIR"], request.parent["metadata"]["name"] + ".finalize"
        )
        with open(path, "a") as f:
            f.write("x")
        with open(path) as f:
            attempts = len(f.read())
        return FinalizeResponse(finalized=attempts >= 3)
