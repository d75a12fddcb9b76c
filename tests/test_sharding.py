"""Tests of operatord.sharding: stable, in range, balanced, minimal movement."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import uuid

import pytest

from operatord.sharding import _jump_consistent_hash, shard_for, uid_key


def _uids(n: int, seed: int = 7) -> list[str]:
    # Deterministic uuid4-shaped uids, like the API server's.
    rng = random.Random(seed)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n)]


@pytest.mark.parametrize(
    ("key", "buckets", "expected"),
    [
        # Published vectors of the paper's reference implementation (also used by ClickHouse's
        # jumpConsistentHash tests and the Go/Rust ports).
        (1, 1, 0),
        (42, 57, 43),
        (256, 1024, 520),
        (0xDEAD10CC, 1, 0),
        (0xDEAD10CC, 666, 361),
        (16045690984833335023, 255, 237),
        (1, 60, 55),
        (2, 60, 46),
    ],
)
def test_jump_hash_matches_reference_vectors(key: int, buckets: int, expected: int) -> None:
    assert _jump_consistent_hash(key, buckets) == expected


def test_uid_key_is_blake2b_64_big_endian() -> None:
    assert uid_key("") == 0xE4A6A0577479B2B4
    assert uid_key("a") == 0x40F89E395B66422F
    assert 0 <= uid_key("0b1c2d3e-0000-4000-8000-000000000001") < 2**64


def test_fixed_known_values() -> None:
    uid = "0b1c2d3e-0000-4000-8000-000000000001"
    assert [shard_for(uid, n) for n in (1, 2, 3, 8, 100)] == [0, 1, 1, 1, 98]
    assert [shard_for("", n) for n in (1, 2, 3, 8, 100)] == [0, 0, 2, 5, 62]
    assert [shard_for("ümlaut", n) for n in (1, 2, 3, 8, 100)] == [0, 0, 0, 5, 57]


def test_stable_across_processes_with_different_hash_seeds() -> None:
    uids = _uids(50)
    expected = [shard_for(u, 7) for u in uids]
    code = (
        "import sys, json; from operatord.sharding import shard_for; "
        "print(json.dumps([shard_for(u, 7) for u in json.loads(sys.stdin.read())]))"
    )
    for seed in ("1", "12345"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            input=json.dumps(uids),
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        assert json.loads(out.stdout) == expected


def test_range_and_invalid_shard_count() -> None:
    for uid in _uids(500):
        for n in (1, 2, 5, 16, 1000):
            assert 0 <= shard_for(uid, n) < n
    with pytest.raises(ValueError):
        shard_for("x", 0)
    with pytest.raises(ValueError):
        shard_for("x", -3)


@pytest.mark.parametrize("shards", [2, 5, 8, 13])
def test_roughly_uniform_over_10k_uids(shards: int) -> None:
    uids = _uids(10_000)
    counts = [0] * shards
    for uid in uids:
        counts[shard_for(uid, shards)] += 1
    expected = len(uids) / shards
    # Chi-square against uniform; the 99.9% critical value for <= 12 dof is < 33.
    chi2 = sum((c - expected) ** 2 / expected for c in counts)
    assert chi2 < 33, counts
    assert all(abs(c - expected) < 0.1 * expected for c in counts), counts


@pytest.mark.parametrize("n", [1, 2, 4, 7, 16])
def test_minimal_movement_when_growing(n: int) -> None:
    uids = _uids(10_000)
    moved = 0
    for uid in uids:
        before, after = shard_for(uid, n), shard_for(uid, n + 1)
        if before != after:
            moved += 1
            assert after == n, "a uid that moves must move to the new shard"
    expected = len(uids) / (n + 1)
    assert abs(moved - expected) < 0.15 * expected, (moved, expected)
