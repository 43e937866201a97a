"""The one life cycle of a supervised child (protocol/children/lifecycle.py), transition by
transition, with a fake process and a clock the test moves."""
from __future__ import annotations

import logging
import signal
from types import SimpleNamespace

import pytest

from frontdesk.protocol.children.lifecycle import (BACKOFF, CLOSING, DRAINING, READY, STARTING, STOPPED, STOPPING,
                                                   StateError, SupervisedChild)
from frontdesk.protocol.children.policy import FIRST_RESTART_DELAY_S, RestartPolicy
from tests.unit.clock import Clock
from tests.unit.fake_children import FakeProcess

SETTINGS = SimpleNamespace(restart_intensity=5, restart_period_s=60.0, restart_backoff_max_s=5.0)
log = logging.getLogger("test.lifecycle")


class Child(SupervisedChild):
    """A supervised child whose processes are fakes; `fail_spawn` makes the next spawn fail."""

    def __init__(self, clock, **options):
        super().__init__("child", RestartPolicy(SETTINGS, "child", log, clock), log, clock=clock, **options)
        self.spawned: list[FakeProcess] = []
        self.fail_spawn = False

    def _spawn(self):
        if self.fail_spawn:
            raise FileNotFoundError(2, "No such file or directory")
        self.spawned.append(FakeProcess())
        return self.spawned[-1]


@pytest.fixture
def clock():
    return Clock()


def running(clock, **options) -> Child:
    child = Child(clock, **options)
    child.start()
    child.ready()
    return child


def test_a_child_is_built_stopped_and_does_nothing_until_started(clock):
    child = Child(clock)
    assert child.state is STOPPED and child.spawned == [] and child.next_timer() is None


def test_start_spawns_a_process_and_ready_makes_it_serve(clock):
    child = Child(clock)
    assert child.start() is True
    assert child.state is STARTING and child.pid == child.spawned[0].pid
    child.ready()
    assert child.state is READY


def test_a_spawn_that_fails_is_a_crash_with_a_restart_deadline(clock):
    child = Child(clock)
    child.fail_spawn = True
    assert child.start() is False
    assert child.state is BACKOFF and child.process is None and child.restarts == 1
    assert child.restart_at == clock.now + FIRST_RESTART_DELAY_S and child.next_timer() == child.restart_at
    child.start()   # BACKOFF -> BACKOFF: failed again, the delay doubled
    assert child.state is BACKOFF and child.restart_at == clock.now + 2 * FIRST_RESTART_DELAY_S


def test_a_wanted_child_that_exits_waits_its_backoff_then_starts_again(clock):
    child = running(clock)
    first = child.spawned[0]
    first.exit(1)
    assert child.reap() == 1
    assert child.state is BACKOFF and child.restarts == 1 and child.kill_at is None
    child.check_timers(clock.advance(FIRST_RESTART_DELAY_S / 2))
    assert child.state is BACKOFF                        # not yet
    child.check_timers(clock.advance(FIRST_RESTART_DELAY_S))
    assert child.state is STARTING and child.spawned[1] is not first


def test_reap_is_nothing_while_the_process_runs(clock):
    child = running(clock)
    assert child.reap() is None and child.state is READY


def test_a_child_that_served_restarts_at_once(clock):
    child = running(clock)
    clock.advance(30.0)                                  # lived long enough to have served
    child.spawned[0].exit(1)
    child.reap()
    assert child.restart_at == clock.now


def test_terminate_sends_term_and_kills_at_the_kill_deadline(clock):
    child = running(clock)
    child.terminate(2.0)
    process = child.spawned[0]
    assert child.state is STOPPING and process.signals == [signal.SIGTERM] and child.kill_at == clock.now + 2.0
    assert child.next_timer() == child.kill_at and child.restart_at is None   # two deadlines, never one
    child.check_timers(clock.advance(1.0))
    assert process.signals == [signal.SIGTERM]
    child.check_timers(clock.advance(1.5))
    assert process.signals == [signal.SIGTERM, signal.SIGKILL] and child.kill_at is None
    child.terminate(2.0)                                 # already stopping: nothing more
    assert process.signals == [signal.SIGTERM, signal.SIGKILL]


def test_a_retired_child_ends_stopped_not_restarted(clock):
    child = running(clock)
    child.retire()
    child.terminate(2.0)
    child.spawned[0].exit(-15)
    child.reap()
    assert child.state is STOPPED and child.stopped and child.restarts == 0 and child.next_timer() is None


def test_retiring_a_child_in_backoff_cancels_its_restart(clock):
    child = running(clock)
    child.spawned[0].exit(1)
    child.reap()
    child.retire()
    assert child.state is STOPPED and child.restart_at is None
    child.check_timers(clock.advance(60.0))
    assert len(child.spawned) == 1


def test_drain_then_close_then_exit(clock):
    child = running(clock)
    child.drain()
    assert child.state is DRAINING and not child.wanted
    child.close(3.0)
    assert child.state is CLOSING and child.spawned[0].stdin_closed and child.kill_at == clock.now + 3.0
    child.spawned[0].exit(0)
    child.reap()
    assert child.state is STOPPED


def test_a_child_that_does_not_exit_after_its_stdin_closed_is_killed(clock):
    child = running(clock)
    child.close(3.0)
    child.check_timers(clock.advance(3.0))
    assert child.state is STOPPING and child.spawned[0].signals == [signal.SIGKILL]


def test_kill_is_at_once_from_any_state_with_a_process(clock):
    child = running(clock)
    child.kill()
    assert child.state is STOPPING and child.spawned[0].signals == [signal.SIGKILL] and child.kill_at is None


def test_draining_a_child_before_it_is_ready_is_allowed(clock):
    child = Child(clock)
    child.start()
    child.drain()
    assert child.state is DRAINING


@pytest.mark.parametrize("make, act", [
    (lambda clock: Child(clock), lambda child: child.ready()),              # not started
    (lambda clock: running(clock), lambda child: child.start()),           # already has a process
    (lambda clock: running(clock), lambda child: child.ready()),           # ready twice
    (lambda clock: Child(clock), lambda child: child.close(1.0)),          # nothing to close
])
def test_a_transition_from_the_wrong_state_is_refused_naming_both(clock, make, act):
    child = make(clock)
    before, spawned = child.state, list(child.spawned)
    with pytest.raises(StateError, match=f"child: {before.value} -> "):
        act(child)
    assert child.state is before and child.spawned == spawned   # nothing spawned on the way


def test_every_transition_is_logged_with_where_it_came_from(clock, caplog):
    with caplog.at_level(logging.INFO, logger="test.lifecycle"):
        child = running(clock)
        child.spawned[0].exit(1)
        child.reap()
    lines = [r.getMessage() for r in caplog.records]
    pid = child.spawned[0].pid
    assert lines == [f"event=child_state name=child pid={pid} from=stopped to=starting",
                     f"event=child_state name=child pid={pid} from=starting to=ready",
                     f"event=child_state name=child pid={pid} from=ready to=waiting_restart restart_in_s=0.10 "
                     f"how='exited with status 1'"]
    assert [r.levelname for r in caplog.records] == ["INFO", "INFO", "WARNING"]
