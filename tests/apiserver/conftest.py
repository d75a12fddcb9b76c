"""Fixtures for the embedded API server contract tests: one server per test module, one fresh
namespace per test, clients from the official `kubernetes` package."""

from __future__ import annotations

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
