"""The leader <-> worker protocol: wire round trips and what each result means for the queue."""

import os
import pickle
import subprocess
import sys

import pytest

from operatord import protocol
from operatord.protocol import (
    LeaseUpdate,
    Ready,
    Results,
    Step,
    Stop,
    SyncResult,
    SyncTask,
    Tasks,
    decode,
    encode,
    next_step,
)

PARENT = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"uid": "u1"}}


@pytest.mark.parametrize(
    "message",
    [
        Tasks((SyncTask("u1", PARENT, [{"kind": "ConfigMap"}], 12.5), SyncTask("u2", PARENT, []))),
        Tasks(
            (
                SyncTask(
                    "u1",
                    PARENT,
                    [],
                    None,
                    related=[{"kind": "Secret", "metadata": {"name": "tls"}}],
                    selection=(("v1", "Secret", ("tls",), None, None),),
                ),
            )
        ),
        Results(
            (
                SyncResult(
                    "u1",
                    protocol.OK,
                    written=({"action": "upsert", "object": PARENT},),
                    resync_after=3.0,
                    handler_calls=2,
                ),
                SyncResult("u2", protocol.ERROR, error="boom", error_kind="error"),
                SyncResult(
                    "u3",
                    protocol.OK,
                    selection=(("v1", "Namespace", (), None, "team=a"),),
                    reselect=True,
                ),
            ),
            metrics=(("inc", "syncs_total", (("result", "ok"),), 1.0),),
            exiting=True,
        ),
        LeaseUpdate(99.0),
        LeaseUpdate(None),
        LeaseUpdate(12.5, shard=3),
        Tasks((SyncTask("u9", PARENT, [], 7.0, shard=5),)),
        Tasks((SyncTask("u10", PARENT, [], None, controller="carts"),)),
        Tasks((SyncTask("u10", PARENT, [], retry=3),)),
        protocol.Credentials({"authorization": "Bearer t"}),
        Stop(),
        Ready(1234, ()),
    ],
)
def test_messages_survive_the_wire(message):
    assert decode(encode(message)) == message


def test_the_wire_carries_plain_data_only():
    selection = (("v1", "Secret", ("tls",), "ns", "a=b"),)
    wire = pickle.loads(
        encode(Tasks((SyncTask("u1", PARENT, [], related=[PARENT], selection=selection),)))
    )

    def plain(value):
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, list | tuple):
            return all(plain(v) for v in value)
        return value is None or isinstance(value, str | int | float | bool)

    assert plain(wire)


def test_garbage_is_refused():
    with pytest.raises(ValueError):
        decode(b"not a pickle")
    with pytest.raises(ValueError):
        decode(pickle.dumps(("launch",)))
    with pytest.raises(TypeError):
        encode({"op": "sync"})


def test_finalizing_follows_the_deletion_timestamp():
    deleting = {"metadata": {"uid": "u", "deletionTimestamp": "2026-01-01T00:00:00Z"}}
    assert SyncTask("u", deleting, []).finalizing
    assert not SyncTask("u", PARENT, []).finalizing


@pytest.mark.parametrize(
    ("result", "streak", "step"),
    [
        (SyncResult("u", protocol.OK), False, Step(forget=True, resync=True)),
        (
            SyncResult("u", protocol.OK, resync_after=5.0),
            False,
            Step(forget=True, after=5.0, resync=True),
        ),
        (SyncResult("u", protocol.OK, children_changed=True), False, Step(forget=True, again=True)),
        (
            SyncResult("u", protocol.OK, children_changed=True),
            True,
            Step(backoff=True, log="not_converging"),
        ),
        (SyncResult("u", protocol.ERROR, error="x"), False, Step(backoff=True, log="failed")),
        (SyncResult("u", protocol.FINALIZED), False, Step(forget=True)),
        (SyncResult("u", protocol.FINALIZE_PENDING), False, Step(backoff=True)),
        (SyncResult("u", protocol.FINALIZE_PENDING, retry_after=2.0), False, Step(after=2.0)),
        (SyncResult("u", protocol.ABANDONED), False, Step(again=True)),
        # the related selection changed: nothing was synced; dispatch again with its objects
        (SyncResult("u", protocol.OK, selection=(), reselect=True), False, Step(again=True)),
        (
            SyncResult("u", protocol.OK, selection=(), reselect=True),
            True,
            Step(backoff=True, log="unstable_selection"),
        ),
        (SyncResult("u", protocol.OK, selection=()), False, Step(forget=True, resync=True)),
    ],
)
def test_next_step(result, streak, step):
    assert next_step(result, streak_exceeded=streak) == step


# ---- the call board ---------------------------------------------------------------------------


def test_the_call_board_shows_the_calls_marked_and_not_the_cleared_ones():
    board = protocol.CallBoard.create(4)
    try:
        assert board.running() == []
        board.mark(0, "sync-uid")
        a, b = board.enter("async-a"), board.enter("async-b")
        assert sorted(board.running()) == ["async-a", "async-b", "sync-uid"]
        board.clear(0)
        board.leave(a)
        assert board.running() == ["async-b"]
        board.leave(b)
        assert board.running() == []
        board.mark(0, "x" * 300)  # too long to record: running, uid unknown
        assert board.running() == [None]
        board.clear(0)
        entries = [board.enter(f"u{i}") for i in range(5)]  # 3 async entries: 2 overflow
        assert entries.count(-1) == 2
        assert sorted(board.running(), key=str) == [None, None, "u0", "u1", "u2"]
        for e in entries:
            board.leave(e)
        assert board.running() == []
    finally:
        board.close()
    assert not os.path.exists(board.path)


def test_the_leader_reads_the_board_of_a_worker_that_died_mid_call(tmp_path):
    board = protocol.CallBoard.create(2)
    code = (
        "import os, sys; from operatord.protocol import CallBoard; "
        f"b = CallBoard.attach({board.path!r}, 2); b.mark(0, 'done'); b.clear(0); "
        "b.mark(0, 'the-culprit'); os._exit(1)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 1, done.stderr
    board.unlink()  # the mapping outlives the file and the process
    assert board.running() == ["the-culprit"]
    board.close()


def test_describe_changes_names_each_child_and_its_fields():
    changing = (
        ("v1", "ConfigMap", "ns", "web", ("data.at", "metadata.labels.x")),
        ("v1", "Namespace", "", "team", ("created",)),
    )
    assert protocol.describe_changes(changing) == (
        "ConfigMap ns/web: data.at, metadata.labels.x; Namespace team: created"
    )
    assert protocol.describe_changes(()) == "unknown children"


def test_changed_paths_ignores_server_metadata_and_stops_at_the_limit():
    from operatord.apply import changed_paths

    before = {"metadata": {"resourceVersion": "1", "labels": {"a": "1"}}, "data": {"x": "1"}}
    after = {"metadata": {"resourceVersion": "2", "labels": {"a": "2"}}, "data": {"y": "1"}}
    assert changed_paths(before, after) == ["data.x", "data.y", "metadata.labels.a"]
    assert changed_paths(before, after, limit=1) == ["data.x"]
    assert changed_paths({"spec": [1]}, {"spec": [2]}) == ["spec"]
