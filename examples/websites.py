"""Example operator with related objects: a ``Website`` (example.com/v1) reads the TLS Secret it
names and the Namespaces of its team, which it does not own.

``spec: {host: www.example.com, tlsSecret: www-tls, team: web}`` makes operatord keep a
ConfigMap ``<name>-site`` with the site's settings, including the SHA-256 fingerprint of the
certificate in ``www-tls`` (never the key), and set the status to::

    {"tls": "ready" | "missing" | "invalid", "certSha256": "<first 16 hex digits>" | None,
     "teamNamespaces": ["<namespaces labelled team=web>", ...]}

The Secret and the Namespaces are *related* objects: ``related()`` selects them, operatord
caches them (``related:`` in ``examples/websites.yaml``) and passes them in
``request.related``, and a change to the Secret (rotation, deletion, re-creation) or to a
Namespace's ``team`` label re-syncs the Website at once. Pointing ``tlsSecret`` at another
Secret takes effect on the next sync; the old Secret is no longer watched for this Website.

Run it with ``examples/websites.yaml``; the CRD is ``examples/website-crd.yaml``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from operatord import Handler, Related, SyncRequest, SyncResponse


class Websites(Handler):
    def related(self, parent: dict) -> list[Related]:
        spec = parent.get("spec") or {}
        selected = []
        if spec.get("tlsSecret"):  # by name, in the Website's namespace
            selected.append(Related("v1", "Secret", names=[spec["tlsSecret"]]))
        if spec.get("team"):  # by label; Namespaces are cluster-scoped
            selected.append(Related("v1", "Namespace", label_selector=f"team={spec['team']}"))
        return selected

    def sync(self, request: SyncRequest) -> SyncResponse:
        website = request.parent
        name = website["metadata"]["name"]
        spec = website.get("spec") or {}
        secret_name = spec.get("tlsSecret", "")
        secret = request.related.of_type("v1", "Secret").get(secret_name) if secret_name else None
        tls, fingerprint = _certificate(secret)
        namespaces = sorted(
            ns["metadata"]["name"] for ns in request.related.of_type("v1", "Namespace")
        )
        site = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"{name}-site"},
            "data": {
                "host": str(spec.get("host", "")),
                "tlsSecret": secret_name,
                "certSha256": fingerprint or "",
            },
        }
        status = {"tls": tls, "certSha256": fingerprint, "teamNamespaces": namespaces}
        return SyncResponse(status=status, children=[site])


def _certificate(secret: dict | None) -> tuple[str, str | None]:
    """("ready", fingerprint) for a Secret with a decodable ``tls.crt``; the Secret's data is
    only hashed, never copied into a child, the status or a log line."""
    if secret is None:
        return "missing", None
    encoded = (secret.get("data") or {}).get("tls.crt")
    if not encoded:
        return "invalid", None
    try:
        cert = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return "invalid", None
    return "ready", hashlib.sha256(cert).hexdigest()[:16]
