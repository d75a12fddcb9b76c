"""The leader's related caches by ``cache`` mode, against the embedded API server: ``full``
holds whole objects, ``metadata`` holds names, labels and versions only (no data, no
annotations) yet still finds the parents a change affects, ``none`` starts no informer."""

from __future__ import annotations

import base64
import threading
import uuid

import pytest

from operatord.config import Config
from operatord.kube import ClientSettings, Kube
from operatord.related import RelatedTypes
from operatord.testing import ApiServer
from operatord.testing.waiting import wait_for

MARKER = "zebra-marker-7f3a9"  # 18 characters: base64 of it is whole, and searchable
B64_MARKER = base64.b64encode(MARKER.encode()).decode()


@pytest.fixture(scope="module")
def api():
    with ApiServer() as server:
        yield server


@pytest.fixture
def kube(api):
    k = Kube(ClientSettings(kubeconfig=api.kubeconfig))
    yield k
    k.close()
    api.faults.clear()


def config(*related: dict) -> Config:
    return Config.from_dict(
        {
            "name": "rc",
            "handler": "m:f",
            "parent": {"apiVersion": "example.com/v1", "kind": "Widget"},
            "related": list(related),
        }
    )


class Enqueued:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.uids: list[str] = []

    def __call__(self, uids: set[str]) -> None:
        with self.lock:
            self.uids.extend(sorted(uids))

    def seen(self, uid: str) -> bool:
        with self.lock:
            return uid in self.uids


def secret(name: str, **labels: str) -> dict:
    return {
        "metadata": {
            "name": name,
            "labels": labels,
            # what `kubectl apply` leaves: the whole object, data included
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": f'{{"data":"{B64_MARKER}"}}'
            },
        },
        "data": {"password": B64_MARKER},
    }


def start(kube: Kube, related: RelatedTypes, ns: str) -> list:
    related.resolve(kube.resource)
    informers = related.informers(kube, namespaces=[ns])
    for inf in informers:
        inf.start()
    for inf in informers:
        assert inf.synced.wait(10)
    return informers


@pytest.mark.parametrize("partial_metadata", [True, False], ids=["served", "fallback"])
def test_metadata_mode_holds_no_data_and_still_finds_the_selecting_parents(
    api, kube, partial_metadata
):
    if not partial_metadata:
        api.faults.without_partial_metadata()
    ns = f"rc-{uuid.uuid4().hex[:8]}"
    kube.create(kube.resource("v1", "Namespace"), {"metadata": {"name": ns}})
    secrets = kube.resource("v1", "Secret")
    kube.create(secrets, secret("db", app="x"), ns)
    kube.create(secrets, secret("unrelated"), ns)
    enqueued = Enqueued()
    related = RelatedTypes(config({"apiVersion": "v1", "kind": "Secret"}), enqueued)
    assert related.types[0].cache == "metadata"  # the default for Secrets
    informers = start(kube, related, ns)
    try:
        assert [i.metadata_only for i in informers] == [True]
        related.index.set_selection(
            "parent-1", (("v1", "Secret", ("db",), None, None),), {"metadata": {"namespace": ns}}
        )
        stubs = related.index.selected("parent-1")
        assert [s["metadata"]["name"] for s in stubs] == ["db"]
        assert set(stubs[0]["metadata"]) == {"name", "namespace", "labels", "resourceVersion"}
        assert stubs[0]["metadata"]["labels"] == {"app": "x"}

        # A change of the data only: the parent is re-synced, and nothing of it is held.
        kube.patch(secrets, "db", {"data": {"password": B64_MARKER + "AAAA"}}, ns)
        wait_for(lambda: enqueued.seen("parent-1"), 10, message="re-sync on a data change")
        held = repr(related.index._objects)
        assert "db" in held and MARKER not in held and B64_MARKER not in held
        assert "last-applied-configuration" not in held
        assert related.task_fields("parent-1")["related"][0]["metadata"]["name"] == "db"
        assert informers[0].server_metadata is partial_metadata
    finally:
        for inf in informers:
            inf.stop()


def test_full_mode_holds_whole_objects_and_none_mode_starts_no_informer(api, kube):
    ns = f"rc-{uuid.uuid4().hex[:8]}"
    kube.create(kube.resource("v1", "Namespace"), {"metadata": {"name": ns}})
    kube.create(
        kube.resource("v1", "ConfigMap"), {"metadata": {"name": "c"}, "data": {"k": "v"}}, ns
    )
    kube.create(kube.resource("v1", "Secret"), secret("s"), ns)
    related = RelatedTypes(
        config(
            {"apiVersion": "v1", "kind": "ConfigMap"},
            {"apiVersion": "v1", "kind": "Secret", "cache": "none"},
        ),
        Enqueued(),
    )
    informers = start(kube, related, ns)
    try:
        assert [(i.resource.kind, i.metadata_only) for i in informers] == [("ConfigMap", False)]
        related.index.set_selection(
            "p",
            (("v1", "ConfigMap", ("c",), None, None), ("v1", "Secret", ("s",), None, None)),
            {"metadata": {"namespace": ns}},
        )
        (cm,) = related.task_fields("p")["related"]
        assert cm["data"] == {"k": "v"} and "managedFields" not in cm["metadata"]
        assert related.index.count("v1", "Secret") == 0
        assert [res.kind for res, _ in related.counts()] == ["ConfigMap"]
    finally:
        for inf in informers:
            inf.stop()


def test_a_type_shared_by_two_controllers_needs_one_cache_mode():
    from operatord.config import ConfigError

    def two(mode_a: str, mode_b: str) -> dict:
        return {
            "name": "two",
            "controllers": [
                {
                    "name": n,
                    "handler": "m:f",
                    "parent": {"apiVersion": "example.com/v1", "kind": kind},
                    "related": [{"apiVersion": "v1", "kind": "Secret", "cache": mode}],
                }
                for n, kind, mode in (("a", "A", mode_a), ("b", "B", mode_b))
            ],
        }

    assert Config.from_dict(two("metadata", "metadata")).controllers[1].related[0].cache == (
        "metadata"
    )
    with pytest.raises(ConfigError, match="same cache mode"):
        Config.from_dict(two("metadata", "full"))
