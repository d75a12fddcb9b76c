"""Replica shards: FNV-1a 64 (the API server's shardRange hash), ranges, selectors, config."""

from __future__ import annotations

import random
import uuid

import pytest

from operatord.config import Config, ConfigError
from operatord.shards import SPACE, fnv1a64, range_selector, shard_bounds, shard_of


@pytest.mark.parametrize(
    ("text", "expected"),
    [  # reference vectors of the FNV-1a 64-bit function (Fowler/Noll/Vo test suite)
        ("", 0xCBF29CE484222325),
        ("a", 0xAF63DC4C8601EC8C),
        ("foobar", 0x85944171F73967E8),
        ("chongo was here!\n", 0x46810940EFF5F915),
    ],
)
def test_fnv1a64_known_vectors(text, expected):
    assert fnv1a64(text) == expected
    assert fnv1a64(text.encode()) == expected


def test_fnv1a64_hashes_utf8_bytes():
    assert fnv1a64("é") == fnv1a64("é".encode())


@pytest.mark.parametrize("shards", [1, 2, 3, 7, 8, 256])
def test_bounds_partition_the_hash_space(shards):
    bounds = [shard_bounds(k, shards) for k in range(shards)]
    assert bounds[0][0] == 0
    assert bounds[-1][1] == SPACE
    for (_, end), (start, _) in zip(bounds, bounds[1:], strict=False):
        assert end == start


@pytest.mark.parametrize("shards", [1, 3, 8])
def test_shard_of_agrees_with_the_bounds(shards):
    rng = random.Random(7)
    uids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(2000)]
    for uid in uids:
        k = shard_of(uid, shards)
        start, end = shard_bounds(k, shards)
        assert start <= fnv1a64(uid) < end
    counts = [0] * shards
    for uid in uids:
        counts[shard_of(uid, shards)] += 1
    assert min(counts) > 0.7 * len(uids) / shards  # spread evenly


def test_boundary_hashes_fall_on_the_right_side():
    # 2**64 / 3 is not an integer: the first integer of shard 1 is its ceiling.
    start1, _ = shard_bounds(1, 3)
    assert start1 == -(-SPACE // 3)
    assert ((start1 - 1) * 3) >> 64 == 0
    assert (start1 * 3) >> 64 == 1


def test_range_selector_merges_adjacent_shards():
    assert range_selector([], 8) == ""
    assert range_selector([0, 1, 2, 3], 8) == (
        "shardRange(object.metadata.uid, '0x0000000000000000', '0x8000000000000000')"
    )
    assert range_selector([7, 0], 8) == (
        "shardRange(object.metadata.uid, '0x0000000000000000', '0x2000000000000000') || "
        "shardRange(object.metadata.uid, '0xe000000000000000', '0x10000000000000000')"
    )


def test_shard_of_rejects_bad_counts():
    with pytest.raises(ValueError):
        shard_of("u", 0)
    with pytest.raises(ValueError):
        shard_bounds(3, 3)


BASE = {"name": "demo", "handler": "m:h", "parent": {"apiVersion": "v1", "kind": "ConfigMap"}}


def test_sharding_defaults_to_one_shard_and_the_leader_lease():
    cfg = Config.from_dict(dict(BASE))
    assert cfg.shards == 1
    assert cfg.lease_name == "demo-leader"
    assert cfg.to_dict()["sharding"] == {"shards": 1}


def test_sharding_round_trips_and_names_shard_leases():
    cfg = Config.from_dict({**BASE, "sharding": {"shards": 8}})
    assert cfg.shards == 8
    assert cfg.shard_lease_name(3) == "demo-shard-3"
    assert Config.from_dict(cfg.to_dict()) == cfg
    assert Config.from_trusted_dict(cfg.to_dict()).shards == 8


@pytest.mark.parametrize(
    ("sharding", "message"),
    [
        ({"shards": 0}, "sharding.shards"),
        ({"shards": 257}, "sharding.shards"),
        ({"shards": "2"}, "sharding.shards"),
        ({"replicas": 2}, "sharding"),
    ],
)
def test_sharding_rejects_bad_values(sharding, message):
    with pytest.raises(ConfigError) as err:
        Config.from_dict({**BASE, "sharding": sharding})
    assert err.value.errors[0].startswith(message)


def test_shards_need_leader_election():
    with pytest.raises(ConfigError) as err:
        Config.from_dict({**BASE, "sharding": {"shards": 2}, "leaderElection": {"enabled": False}})
    assert "leaderElection.enabled" in str(err.value)
