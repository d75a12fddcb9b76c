"""Services get the real server's defaults and `status.loadBalancer`."""

import json


def test_kubectl_created_service_has_the_real_defaults(kubectl, ns):
    kubectl("create", "service", "clusterip", "web", "-n", ns, "--tcp=80:8080")
    svc = json.loads(kubectl("get", "service", "web", "-n", ns, "-o", "json").stdout)
    spec = svc["spec"]
    ip = spec.pop("clusterIP")
    assert ip.startswith("10.96.") and spec.pop("clusterIPs") == [ip]
    assert spec == {
        "type": "ClusterIP",
        "selector": {"app": "web"},
        "ports": [{"name": "80-8080", "port": 80, "protocol": "TCP", "targetPort": 8080}],
        "sessionAffinity": "None",
        "ipFamilies": ["IPv4"],
        "ipFamilyPolicy": "SingleStack",
        "internalTrafficPolicy": "Cluster",
    }
    assert svc["status"] == {"loadBalancer": {}}


def test_node_ports_traffic_policies_and_updates(core, ns):
    svc = core.create_namespaced_service(
        ns,
        {"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "ports": [{"port": 443}]}},
    )
    port = svc.spec.ports[0]
    assert port.protocol == "TCP" and port.target_port == 443
    assert 30000 <= port.node_port <= 32767
    assert svc.spec.external_traffic_policy == "Cluster"
    assert svc.spec.allocate_load_balancer_node_ports is True
    # a replace that omits the allocated values keeps them
    body = {
        "metadata": {"name": "lb", "labels": {"x": "y"}},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 443}]},
    }
    again = core.replace_namespaced_service("lb", ns, body)
    assert again.spec.cluster_ip == svc.spec.cluster_ip
    assert again.spec.ports[0].node_port == port.node_port
    assert again.status.load_balancer is not None


def test_external_name_and_headless(core, ns):
    ext = core.create_namespaced_service(
        ns, {"metadata": {"name": "ext"}, "spec": {"type": "ExternalName", "externalName": "a.b"}}
    )
    assert ext.spec.cluster_ip is None and ext.spec.ip_families is None
    assert ext.spec.session_affinity == "None"
    headless = core.create_namespaced_service(
        ns, {"metadata": {"name": "hl"}, "spec": {"clusterIP": "None", "ports": [{"port": 1}]}}
    )
    assert headless.spec.cluster_ips == ["None"]
    assert headless.spec.ip_family_policy == "SingleStack"
