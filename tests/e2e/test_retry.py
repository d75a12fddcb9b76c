"""`request.retry`: the consecutive failed attempts before this one, kept by the leader."""

from __future__ import annotations

import os
import signal

from conftest import wait_for
from kubernetes import client
from widgets import GROUP, PLURAL, VERSION, create_widget, get_widget


def attempts(op, name: str) -> list[tuple[str, int, int]]:
    """(op, request.retry, worker pid) of every call of the `Flaky` handler for ``name``."""
    path = op.log_dir / f"{name}.retries"
    if not path.exists():
        return []
    return [(o, int(r), int(p)) for o, r, p in (ln.split() for ln in path.read_text().splitlines())]


def test_a_sync_failing_while_retry_is_below_two_succeeds_on_the_third_attempt(operator, kube, ns):
    op = operator(namespace=ns, handler="handlers:Flaky", workers=1)
    create_widget(kube, ns, "flaky-sync", flakySync=True)
    wait_for(
        lambda: (
            ((get_widget(kube, ns, "flaky-sync") or {}).get("status") or {}).get("succeededAtRetry")
            == 2
        ),
        30,
        message="sync succeeded at retry 2",
    )
    assert [r for _, r, _ in attempts(op, "flaky-sync")] == [0, 1, 2]


def test_a_finalize_failing_while_retry_is_below_two_finalizes_on_the_third_attempt(
    operator, kube, ns
):
    op = operator(namespace=ns, handler="handlers:Flaky", workers=1)
    _delete_and_wait_finalized(op, kube, ns, "flaky-fin", kill_between=False)
    assert [(o, r) for o, r, _ in attempts(op, "flaky-fin")] == [
        ("finalize", 0),
        ("finalize", 1),
        ("finalize", 2),
    ]


def test_the_retry_count_survives_killing_the_worker_between_attempts(operator, kube, ns):
    # One worker, and a backoff long enough to kill it after each failed attempt: the
    # handler's own state is gone each time, the leader's count is not.
    op = operator(
        namespace=ns,
        handler="handlers:Flaky",
        workers=1,
        backoff={"initialSeconds": 1.5, "maxSeconds": 5, "multiplier": 1.0, "jitter": 0.0},
    )
    _delete_and_wait_finalized(op, kube, ns, "flaky-kill", kill_between=True)
    calls = attempts(op, "flaky-kill")
    assert [(o, r) for o, r, _ in calls] == [("finalize", 0), ("finalize", 1), ("finalize", 2)]
    pids = [p for _, _, p in calls]
    assert len(set(pids)) == 3, pids  # each attempt ran in a fresh worker process


def _delete_and_wait_finalized(op, kube, ns, name: str, kill_between: bool) -> None:
    create_widget(kube, ns, name, size=1)
    wait_for(
        lambda: ((get_widget(kube, ns, name) or {}).get("status") or {}).get("ready"),
        30,
        message=f"{name} ready",
    )
    client.CustomObjectsApi(kube).delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
    if kill_between:
        for failed in (1, 2):
            wait_for(
                lambda failed=failed: (
                    op.metric("operatord_finalizes_total", result="error") >= failed
                ),
                30,
                message=f"failed finalize {failed} recorded by the leader",
            )
            os.kill(attempts(op, name)[-1][2], signal.SIGKILL)
    wait_for(lambda: get_widget(kube, ns, name) is None, 60, message=f"{name} finalized and gone")
