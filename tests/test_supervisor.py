"""Worker crashes as the leader sees them: who is blamed, and how restarts are paced."""

from operatord.controller import _blame, _InFlight
from operatord.supervisor import RestartPacer, worker_context


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
