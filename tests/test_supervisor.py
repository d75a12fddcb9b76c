"""Worker crashes as the leader sees them: who is blamed, and how restarts are paced."""

import threading

from operatord.pool import InFlight as _InFlight
from operatord.pool import blame as _blame
from operatord.supervisor import RestartPacer, SpareWorker, WorkerGone, worker_context
from operatord.testing import wait_for


def held(*uids: str) -> list[_InFlight]:
    return [_InFlight(u, {}, {}, False) for u in uids]


def test_the_one_running_call_is_the_culprit_and_nobody_else_is_suspected():
    assert _blame(held("a", "b", "c"), ["b"], exiting=False) == ({"b"}, set())


def test_several_running_calls_are_the_suspects_and_the_others_are_innocent():
    assert _blame(held("a", "b", "c", "d"), ["b", "d"], exiting=False) == (set(), {"b", "d"})


def test_without_a_usable_mark_one_held_parent_is_blamed_and_several_are_suspects():
    assert _blame(held("a"), [], exiting=False) == ({"a"}, set())
    assert _blame(held("a", "b"), [], exiting=False) == (set(), {"a", "b"})
    assert _blame(held("a", "b"), [None], exiting=False) == (set(), {"a", "b"})  # unknown uid
    assert _blame(held("a", "b"), ["gone"], exiting=False) == (set(), {"a", "b"})  # not held


def test_a_worker_that_announced_its_exit_blames_nobody():
    assert _blame(held("a", "b"), ["a"], exiting=True) == (set(), set())
    assert _blame([], ["a"], exiting=False) == (set(), set())


def test_restarts_start_at_once_for_a_burst_then_wait_twice_as_long_each_time():
    pacer = RestartPacer(burst=3, initial=0.1, maximum=0.5, window=60)
    delays = [pacer.next_delay() for _ in range(8)]
    assert delays == [0, 0, 0, 0.1, 0.2, 0.4, 0.5, 0.5]
    assert pacer.recent == 8 and not pacer.quiet()


def test_the_pacing_window_forgets_old_restarts():
    now = [100.0]
    pacer = RestartPacer(burst=1, initial=0.1, window=60, clock=lambda: now[0])
    assert [pacer.next_delay(), pacer.next_delay()] == [0, 0.1]
    now[0] += 59
    assert not pacer.quiet() and pacer.next_delay() == 0.2
    now[0] += 60
    assert pacer.quiet()
    assert pacer.next_delay() == 0


def test_workers_start_from_a_fork_server_with_the_worker_module_preloaded():
    ctx = worker_context()
    assert ctx.get_start_method() == "forkserver"
    assert worker_context("spawn").get_start_method() == "spawn"


class FakeProcess:
    """Stands in for a WorkerProcess: `start` waits until the test lets it finish."""

    def __init__(self, made: list, fail: bool = False) -> None:
        self.release = threading.Event()
        self.fail = fail
        self.started = self.stopped = self.killed = False
        made.append(self)

    def start(self) -> None:
        assert self.release.wait(10)
        if self.fail:
            raise WorkerGone("died while starting")
        self.started = True

    def stop(self) -> None:
        self.stopped = True

    def kill(self) -> None:
        self.killed = True


def test_a_spare_is_started_once_handed_over_once_and_retired_when_asked():
    made: list[FakeProcess] = []
    spare = SpareWorker(0, lambda: FakeProcess(made))
    spare.prepare()
    spare.prepare()  # one is starting already
    wait_for(lambda: made, 5, message="spare being started")
    assert len(made) == 1 and not spare.ready and spare.take() is None
    made[0].release.set()
    wait_for(lambda: spare.ready, 5, message="spare ready")
    spare.prepare()  # one is waiting already
    assert len(made) == 1
    assert spare.take() is made[0] and spare.take() is None and not spare.ready
    spare.prepare()
    wait_for(lambda: len(made) == 2, 5, message="a second spare being started")
    made[1].release.set()
    wait_for(lambda: spare.ready, 5, message="second spare ready")
    spare.retire()
    assert made[1].stopped and not spare.ready and not made[0].stopped


def test_a_spare_that_fails_to_start_leaves_none_and_another_may_be_started():
    made: list[FakeProcess] = []
    spare = SpareWorker(0, lambda: FakeProcess(made, fail=not made))
    spare.prepare()
    wait_for(lambda: made, 5, message="spare being started")
    made[0].release.set()
    wait_for(lambda: made[0].killed, 5, message="the failed spare cleaned up")
    assert not spare.ready
    wait_for(lambda: (spare.prepare(), len(made) == 2)[1], 5, message="a new spare started")
    made[1].release.set()
    wait_for(lambda: spare.ready, 5, message="the new spare ready")


def test_a_closed_spare_keeps_nothing_even_one_that_finishes_starting_afterwards():
    made: list[FakeProcess] = []
    spare = SpareWorker(0, lambda: FakeProcess(made))
    spare.prepare()
    wait_for(lambda: made, 5, message="spare being started")
    spare.close()
    made[0].release.set()
    wait_for(lambda: made[0].stopped, 5, message="the late spare stopped")
    assert not spare.ready and spare.take() is None
    spare.prepare()
    assert len(made) == 1  # closed: no new spare

    killed: list[FakeProcess] = []
    other = SpareWorker(1, lambda: FakeProcess(killed))
    other.prepare()
    wait_for(lambda: killed, 5, message="spare being started")
    killed[0].release.set()
    wait_for(lambda: other.ready, 5, message="spare ready")
    other.close(kill=True)
    assert killed[0].killed and not killed[0].stopped and not other.ready
