"""The ApiServer object and the `operatord apiserver` CLI: startup, modes, audit log, helpers."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import kubernetes
import pytest

from operatord.testing import ApiServer


def test_audit_log(api, core, custom, widgets, ns):
    api.clear_requests()
    core.create_namespaced_config_map(ns, {"metadata": {"name": "a"}})
    core.read_namespaced_config_map("a", ns)
    core.list_namespaced_config_map(ns)
    core.patch_namespaced_config_map("a", ns, {"data": {"x": "1"}})
    core.delete_namespaced_config_map("a", ns)
    core.delete_collection_namespaced_config_map(ns)
    w = custom.create_namespaced_custom_object(
        "example.com",
        "v1",
        ns,
        "widgets",
        {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}},
    )
    w["status"] = {"ok": True}
    custom.replace_namespaced_custom_object_status("example.com", "v1", ns, "widgets", "w", w)
    list(kubernetes.watch.Watch().stream(core.list_namespaced_config_map, ns, timeout_seconds=1))
    try:
        core.read_namespaced_config_map("missing", ns)
    except kubernetes.client.ApiException:
        pass
    got = [
        (
            r["verb"],
            r["apiGroup"],
            r["resource"],
            r["subresource"],
            r["namespace"],
            r["name"],
            r["code"],
        )
        for r in api.requests()
    ]
    assert got == [
        ("create", "", "configmaps", "", ns, "", 201),
        ("get", "", "configmaps", "", ns, "a", 200),
        ("list", "", "configmaps", "", ns, "", 200),
        ("patch", "", "configmaps", "", ns, "a", 200),
        ("delete", "", "configmaps", "", ns, "a", 200),
        ("deletecollection", "", "configmaps", "", ns, "", 200),
        ("create", "example.com", "widgets", "", ns, "", 201),
        ("update", "example.com", "widgets", "status", ns, "w", 200),
        ("watch", "", "configmaps", "", ns, "", 200),
        ("get", "", "configmaps", "", ns, "missing", 404),
    ]
    api.clear_requests()
    assert api.requests() == []


def test_audit_log_names_each_requests_user_agent(api, ns):
    """Two clients of one server are told apart by their User-Agent (e.g. an operator's watch
    and a test's own watch of the same type)."""
    api.clear_requests()
    for agent in ("kopf/1.45.2", None):
        headers = {"User-Agent": agent} if agent else {}
        url = f"http://127.0.0.1:{api.port}/api/v1/namespaces/{ns}/configmaps"
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers)) as resp:
            assert resp.status == 200
    agents = [r["userAgent"] for r in api.requests()]
    assert agents[0] == "kopf/1.45.2"
    assert agents[1].startswith("Python-urllib/")  # urllib's own default


def test_audit_log_dates_each_request_on_the_callers_monotonic_clock(api, ns):
    api.clear_requests()
    url = f"http://127.0.0.1:{api.port}/api/v1/namespaces/{ns}/configmaps"
    before = time.monotonic()
    with urllib.request.urlopen(url) as resp:
        assert resp.status == 200
    after = time.monotonic()
    (entry,) = api.requests()
    assert before <= entry["time"] <= after


def test_starts_fast_and_stops_cleanly():
    start = time.monotonic()
    server = ApiServer().start()
    try:
        assert time.monotonic() - start < 1.5
        with urllib.request.urlopen(server.url + "/version") as r:
            assert json.loads(r.read())["major"] == "1"
        kubeconfig, url = server.kubeconfig, server.url
        assert os.path.exists(kubeconfig)
    finally:
        server.stop()
    assert not os.path.exists(kubeconfig)
    with pytest.raises(OSError):
        urllib.request.urlopen(url + "/version", timeout=1)


def test_in_process_mode_and_kubeconfig():
    with ApiServer(in_process=True) as server:
        kubernetes.config.load_kube_config(config_file=server.kubeconfig)
        core = kubernetes.client.CoreV1Api()
        assert "default" in [n.metadata.name for n in core.list_namespace().items]
        server.apply_crd("mode.example.com", "v1", "Thing")
        assert server.state()["resourceVersion"].isdigit()


def test_cli_runs_until_sigterm(tmp_path):
    kc = tmp_path / "kubeconfig"
    proc = subprocess.Popen(
        [sys.executable, "-m", "operatord", "apiserver", "--kubeconfig-out", str(kc)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        cfg = json.loads(kc.read_text())
        assert cfg["clusters"][0]["cluster"]["server"] == url
        with urllib.request.urlopen(url + "/api") as r:
            assert json.loads(r.read())["versions"] == ["v1"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def test_keep_alive_reuses_connections(api, core, ns):
    api.clear_requests()
    for i in range(20):
        core.create_namespaced_config_map(ns, {"metadata": {"name": f"k{i}"}})
    pool = core.api_client.rest_client.pool_manager
    conns = sum(p.num_connections for p in pool.pools._container.values())
    assert conns <= 2


def test_many_concurrent_watches(api, core, ns):
    import http.client
    import threading

    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    n = 100
    received = []
    lock = threading.Lock()

    def watcher():
        conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=20)
        conn.request(
            "GET",
            f"/api/v1/namespaces/{ns}/configmaps?watch=true&resourceVersion={rv}&timeoutSeconds=15",
        )
        line = conn.getresponse().readline()
        with lock:
            received.append(json.loads(line)["object"]["metadata"]["name"])
        conn.close()

    threads = [threading.Thread(target=watcher) for _ in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while api.state()["watches"] < n and time.monotonic() < deadline:
        time.sleep(0.02)  # poll until the watches are open or the deadline passes
    core.create_namespaced_config_map(ns, {"metadata": {"name": "fanout"}})
    for t in threads:
        t.join(20)
    assert received == ["fanout"] * n
