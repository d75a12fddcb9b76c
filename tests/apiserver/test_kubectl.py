"""kubectl against the embedded server: apply a CRD and an object, get, wait, delete."""

import json
import shutil
import threading

import pytest

from .conftest import wait_for

KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed on this machine")

CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gizmos.kubectl.example.com
spec:
  group: kubectl.example.com
  scope: Namespaced
  names: {plural: gizmos, singular: gizmo, kind: Gizmo, shortNames: [gz]}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
    subresources: {status: {}}
"""

OBJ = """
apiVersion: kubectl.example.com/v1
kind: Gizmo
metadata: {name: g1, namespace: NS}
spec: {size: SIZE}
"""


def test_kubectl_apply_get_wait_delete(kubectl, custom, ns):
    out = kubectl("apply", "-f", "-", stdin=CRD).stdout
    assert "gizmos.kubectl.example.com created" in out
    kubectl(
        "wait", "--for=condition=Established", "crd/gizmos.kubectl.example.com", "--timeout=20s"
    )
    obj = OBJ.replace("NS", ns)
    assert "created" in kubectl("apply", "-f", "-", stdin=obj.replace("SIZE", "3")).stdout
    assert "configured" in kubectl("apply", "-f", "-", stdin=obj.replace("SIZE", "4")).stdout
    got = json.loads(kubectl("get", "gizmo", "g1", "-n", ns, "-o", "json").stdout)
    assert got["spec"] == {"size": 4} and got["kind"] == "Gizmo" and got["metadata"]["uid"]
    assert "g1" in kubectl("get", "gz", "-n", ns).stdout

    def mark_ready():
        custom.patch_namespaced_custom_object_status(
            "kubectl.example.com",
            "v1",
            ns,
            "gizmos",
            "g1",
            {"status": {"conditions": [{"type": "Ready", "status": "True"}]}},
        )

    waiter = threading.Timer(0.5, mark_ready)
    waiter.start()
    try:
        kubectl("wait", "--for=condition=Ready", "gizmo/g1", "-n", ns, "--timeout=20s")
    finally:
        waiter.join()
    assert '"g1" deleted' in kubectl("delete", "gizmo", "g1", "-n", ns).stdout
    p = kubectl("get", "gizmo", "g1", "-n", ns, check=False)
    assert p.returncode != 0 and "NotFound" in p.stderr


def test_kubectl_waits_for_deletion_behind_a_finalizer(kubectl, core, ns):
    core.create_namespaced_config_map(
        ns, {"metadata": {"name": "held", "finalizers": ["x.io/hold"]}}
    )
    kubectl("delete", "configmap", "held", "-n", ns, "--wait=false")
    wait_for(lambda: core.read_namespaced_config_map("held", ns).metadata.deletion_timestamp)
    core.patch_namespaced_config_map("held", ns, [{"op": "remove", "path": "/metadata/finalizers"}])
    kubectl("wait", "--for=delete", "configmap/held", "-n", ns, "--timeout=20s")
