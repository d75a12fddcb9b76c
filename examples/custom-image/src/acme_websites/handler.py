"""Every Website (acme.example.com/v1) gets an nginx Deployment and a Service in front of it."""

from __future__ import annotations

from operatord import SyncRequest, SyncResponse


def sync(request: SyncRequest) -> SyncResponse:
    """Desire one Deployment and one Service per Website; report ready replicas."""
    website = request.parent
    name = website["metadata"]["name"]
    spec = website.get("spec") or {}
    labels = {"app.kubernetes.io/name": "website", "app.kubernetes.io/instance": name}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": int(spec.get("replicas", 1)),
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "image": spec.get("image", "nginxinc/nginx-unprivileged:1.27"),
                            "ports": [{"name": "http", "containerPort": 8080}],
                        }
                    ]
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels},
        "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }
    observed = request.children.of_type("apps/v1", "Deployment").get(name)
    ready = ((observed or {}).get("status") or {}).get("readyReplicas", 0)
    return SyncResponse(status={"readyReplicas": ready}, children=[deployment, service])
