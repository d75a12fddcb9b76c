"""Fault injection: latency, 5xx/429 by verb and resource, dropped watches, compaction."""

import json
import threading
import time
import urllib.error
import urllib.request

import pytest
import urllib3
from kubernetes import watch
from kubernetes.client import ApiException

from .conftest import raw, wait_for


def test_latency(api, core, ns):
    api.faults.set_latency(0.2)
    start = time.monotonic()
    core.list_namespaced_config_map(ns)
    assert time.monotonic() - start >= 0.2
    api.faults.clear()
    start = time.monotonic()
    core.list_namespaced_config_map(ns)
    assert time.monotonic() - start < 0.2


def test_errors_by_verb_and_resource(api, client, core, ns):
    api.faults.add_error(code=500, verbs=["create"], resources=["configmaps"])
    status, body = raw(
        client, "POST", f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "a"}}
    )
    assert status == 500 and body["reason"] == "InternalError"
    core.create_namespaced_secret(ns, {"metadata": {"name": "s"}})  # other resources unaffected
    core.list_namespaced_config_map(ns)  # other verbs unaffected


def test_429_with_retry_after_and_count(api, client, core, ns):
    api.faults.add_error(code=429, verbs=["list"], resources=["configmaps"], retry_after=1, count=1)
    api.clear_requests()
    start = time.monotonic()
    core.list_namespaced_config_map(ns)  # the official client honours Retry-After and retries
    assert time.monotonic() - start >= 1.0
    codes = [r["code"] for r in api.requests() if r["resource"] == "configmaps"]
    assert codes == [429, 200]
    api.faults.add_error(code=429, verbs=["get"], retry_after=7, count=1)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(api.url + "/api/v1/namespaces/default")
    assert e.value.code == 429 and e.value.headers["Retry-After"] == "7"
    with urllib.request.urlopen(api.url + "/api/v1/namespaces/default") as ok:
        assert ok.status == 200  # count exhausted


def test_fraction(api, client, ns):
    api.faults.add_error(code=503, fraction=0.5, verbs=["get"], seed=1)
    codes = [raw(client, "GET", "/api/v1/namespaces/default")[0] for _ in range(200)]
    assert 60 < codes.count(503) < 140 and codes.count(200) + codes.count(503) == 200


def test_a_seeded_fraction_fails_the_same_requests_every_time(api, client, ns):
    runs = []
    for _ in range(2):
        api.faults.clear()
        api.faults.add_error(code=500, fraction=0.3, verbs=["get"], seed=42)
        runs.append([raw(client, "GET", "/api/v1/namespaces/default")[0] for _ in range(60)])
    assert runs[0] == runs[1]
    assert 0 < runs[0].count(500) < 60
    assert api.faults.get()["errors"][0]["seed"] == 42
    api.faults.clear()
    bad = json.dumps({"errors": [{"code": 500, "fraction": 0.5, "seed": "x"}]}).encode()
    put = urllib.request.Request(api.url + "/_operatord/faults", data=bad, method="PUT")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(put)
    assert e.value.code == 400 and "seed" in json.loads(e.value.read())["error"]
    assert api.faults.get()["errors"] == []  # the malformed configuration changed nothing


def test_drop_watches(api, core, ns):
    errors = []
    started = threading.Event()

    def run():
        try:
            for _ in watch.Watch().stream(
                core.list_namespaced_config_map, ns, timeout_seconds=30, allow_watch_bookmarks=True
            ):
                started.set()
        except (urllib3.exceptions.HTTPError, ApiException, ValueError) as e:
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    started.wait(5)
    wait_for(lambda: api.state()["watches"] >= 1)
    assert api.faults.drop_watches() >= 1
    t.join(5)
    assert not t.is_alive() and errors


def test_compact_forces_410(api, core, ns):
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    core.create_namespaced_config_map(ns, {"metadata": {"name": "a"}})
    api.faults.compact()
    with pytest.raises(ApiException) as e:
        list(
            watch.Watch().stream(
                core.list_namespaced_config_map, ns, resource_version=rv, timeout_seconds=1
            )
        )
    assert e.value.status == 410


def test_faults_over_plain_http(api):
    cfg = {"latency": 0, "errors": [{"code": 500, "verbs": ["delete"], "resources": ["pods"]}]}
    req = urllib.request.Request(
        api.url + "/_operatord/faults", data=json.dumps(cfg).encode(), method="PUT"
    )
    with urllib.request.urlopen(req) as resp:
        assert json.loads(resp.read())["errors"][0]["resources"] == ["pods"]
    assert api.faults.get()["errors"][0]["verbs"] == ["delete"]
    api.faults.clear()
    assert api.faults.get()["errors"] == []
