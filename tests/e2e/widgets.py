"""Reading and writing the e2e test types (Widget, example.com/v1) through the official client."""

from __future__ import annotations

from kubernetes import client
from kubernetes.client.exceptions import ApiException

GROUP, VERSION, PLURAL = "example.com", "v1", "widgets"


def custom(kube) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube)


def _none_if_missing(call):
    try:
        return call()
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def create_widget(kube, ns, name, **spec):
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Widget", "metadata": {"name": name}}
    body["spec"] = spec
    return custom(kube).create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)


def get_widget(kube, ns, name):
    return _none_if_missing(
        lambda: custom(kube).get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
    )


def patch_spec(kube, ns, name, **spec):
    return custom(kube).patch_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, name, {"spec": spec}
    )


def delete_widget(kube, ns, name):
    custom(kube).delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)


def configmap(kube, ns, name):
    return _none_if_missing(lambda: client.CoreV1Api(kube).read_namespaced_config_map(name, ns))


def ready(kube, ns, name) -> bool:
    """The Widget reports ready for its current generation."""
    w = get_widget(kube, ns, name)
    if not w:
        return False
    st = w.get("status") or {}
    return st.get("ready") is True and st.get("observedGeneration") == w["metadata"]["generation"]
