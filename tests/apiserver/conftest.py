"""Fixtures for the embedded API server contract tests: one server per test module, one fresh
namespace per test, clients from the official `kubernetes` package."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator

import kubernetes
import pytest

from operatord.testing import ApiServer
from operatord.testing.waiting import wait_for as _wait_for


@pytest.fixture(scope="module")
def api() -> Iterator[ApiServer]:
    with ApiServer(bookmark_interval=0.5) as server:
        yield server


@pytest.fixture(scope="module")
def client(api: ApiServer) -> Iterator[kubernetes.client.ApiClient]:
    c = api.client()
    yield c
    c.close()


@pytest.fixture(scope="module")
def core(client) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(client)


@pytest.fixture(scope="module")
def custom(client) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(client)


@pytest.fixture()
def ns(core, api) -> Iterator[str]:
    name = "t-" + uuid.uuid4().hex[:10]
    core.create_namespace({"metadata": {"name": name}})
    api.faults.clear()
    yield name
    api.faults.clear()


@pytest.fixture(scope="module")
def widgets(api: ApiServer) -> dict:
    """A namespaced `Widget` CRD (example.com/v1) with a status subresource."""
    api.apply_crd(
        "example.com", "v1", "Widget", "widgets", namespaced=True, status_subresource=True
    )
    return {"group": "example.com", "version": "v1", "plural": "widgets"}


def wait_for(cond: Callable[[], object], timeout: float = 10.0, interval: float = 0.02) -> object:
    """Poll `cond` until it returns a truthy value; fail after `timeout` seconds."""
    return _wait_for(cond, timeout, interval)


def cm(name: str, **labels: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels},
        "data": {"k": "v"},
    }


def raw(client, method: str, path: str, body=None, query=None, ctype: str | None = None):
    """One request through the official client's transport; returns (status, decoded body)."""
    import json

    headers = {"Accept": "application/json"}
    if ctype:
        headers["Content-Type"] = ctype
    elif body is not None:
        headers["Content-Type"] = "application/json"
    req = client.param_serialize(
        method,
        path,
        query_params=list((query or {}).items()),
        header_params=headers,
        body=body,
        auth_settings=["BearerToken"],
    )
    resp = client.call_api(*req)
    data = resp.read()
    return resp.status, (json.loads(data) if data else None)


KUBECTL = shutil.which("kubectl")


@pytest.fixture()
def kubectl(api, tmp_path):
    """`kubectl(*args, stdin=None, check=True)` against `api`; skips when kubectl is absent."""
    if KUBECTL is None:
        pytest.skip("kubectl is not installed on this machine")

    def run(*args, stdin=None, check=True):
        env = dict(os.environ, KUBECONFIG=api.kubeconfig)
        cmd = [KUBECTL, "--cache-dir", str(tmp_path / "cache"), *args]
        p = subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=env, timeout=60)
        if check and p.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed: {p.stderr}")
        return p

    return run


def raw_http(api, method: str, path: str, body=None, ctype: str = "application/json", headers=None):
    """One plain HTTP request; returns (status, headers as a list of pairs, body): decoded
    JSON, or bytes for watch streams (JSON lines) and other content."""
    import http.client
    import json

    conn = http.client.HTTPConnection(api.host, api.port, timeout=30)
    try:
        data = body if isinstance(body, bytes | None) else json.dumps(body).encode()
        hdrs = {"Content-Type": ctype, **(headers or {})}
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        payload = resp.read()
        ctype_out = resp.getheader("Content-Type", "")
        out = payload
        if payload and "json" in ctype_out and "watch=" not in path:
            try:
                out = json.loads(payload)
            except ValueError:
                pass
        return resp.status, resp.getheaders(), out
    finally:
        conn.close()
