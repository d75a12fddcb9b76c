"""Leases: microsecond timestamps and optimistic concurrency, as leader election uses them."""

import datetime

import kubernetes
import pytest
from kubernetes.client import ApiException


def test_lease_microtime_round_trip_and_concurrency(client, ns):
    coord = kubernetes.client.CoordinationV1Api(client)
    t = datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=datetime.UTC)
    lease = coord.create_namespaced_lease(
        ns,
        {
            "metadata": {"name": "leader"},
            "spec": {
                "holderIdentity": "a",
                "leaseDurationSeconds": 15,
                "acquireTime": t.isoformat(),
                "renewTime": t.isoformat(),
            },
        },
    )
    assert lease.spec.renew_time == t and lease.spec.acquire_time == t
    raw = client.sanitize_for_serialization(lease)
    assert raw["spec"]["renewTime"].startswith("2024-05-06T07:08:09.123456")
    # two candidates race from the same read: exactly one wins
    first = coord.read_namespaced_lease("leader", ns)
    second = coord.read_namespaced_lease("leader", ns)
    first.spec.holder_identity = "b"
    first.spec.renew_time = t + datetime.timedelta(microseconds=1)
    won = coord.replace_namespaced_lease("leader", ns, first)
    assert won.spec.holder_identity == "b" and won.spec.renew_time.microsecond == 123457
    second.spec.holder_identity = "c"
    with pytest.raises(ApiException) as e:
        coord.replace_namespaced_lease("leader", ns, second)
    assert e.value.status == 409
    assert coord.read_namespaced_lease("leader", ns).spec.holder_identity == "b"


def test_lease_stored_timestamp_format(client, ns):
    from .conftest import raw

    status, body = raw(
        client,
        "POST",
        f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases",
        {"metadata": {"name": "l"}, "spec": {"renewTime": "2024-01-01T00:00:00.5+00:00"}},
    )
    assert status == 201 and body["spec"]["renewTime"] == "2024-01-01T00:00:00.500000Z"
