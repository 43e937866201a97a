"""The MongoDB store's health and the server's clock, learnt off the caller's thread (no server needed)."""
from __future__ import annotations

import threading
import time

import pytest

from frontdesk.store.mongo_health import MAX_ROUND_TRIP_S, HealthCheck, ServerClock
from tests.helpers import wait_until


@pytest.fixture
def checks():
    made = []
    yield made
    for check in made:
        check.stop()


def test_health_answers_at_once_while_the_check_is_stuck_and_says_so_after_the_stall(checks):
    """An election: `hello` waits for a primary for up to 5 s; the receiver's loop must not."""
    released, calls = threading.Event(), []

    def check():
        calls.append(time.monotonic())
        released.wait(30)

    health = HealthCheck(check, interval_s=0.0, stall_s=0.2).start()
    checks.append(health)
    started = time.monotonic()
    assert health.problem() is None                      # asks for a check, does not wait for it
    wait_until(lambda: calls, message="the check ran on its thread")
    assert time.monotonic() - started < 5.0
    problem = wait_until(health.problem, timeout=10, message="the stalled check reported")
    assert "no answer from MongoDB" in problem
    released.set()
    wait_until(lambda: health.problem() is None, timeout=10, message="healthy again once answered")


def test_a_failed_check_is_the_problem_until_a_check_passes(checks):
    failing = threading.Event()
    failing.set()

    def check():
        if failing.is_set():
            raise RuntimeError("no primary")

    health = HealthCheck(check, interval_s=0.0).start()
    checks.append(health)
    assert wait_until(health.problem, timeout=10) == "no primary"
    failing.clear()
    wait_until(lambda: health.problem() is None, timeout=10)


def test_checks_come_at_most_once_per_interval_however_often_health_is_asked(checks):
    calls = []
    health = HealthCheck(lambda: calls.append(1), interval_s=3600.0, refresh_s=3600.0).start()
    checks.append(health)
    for _ in range(1000):
        assert health.problem() is None
    assert calls == []      # the last check (at start) is younger than the interval


def test_server_clock_takes_the_offset_at_the_middle_of_the_round_trip():
    local = [1000.0]
    clock = ServerClock(lambda: local[0])
    clock.observe(server_time=1005.0, sent_at=999.9, answered_at=1000.1)
    assert clock.offset == pytest.approx(5.0)
    assert clock.now() == pytest.approx(1005.0)
    assert clock.to_local(1010.0) == pytest.approx(1005.0) and clock.to_server(1005.0) == pytest.approx(1010.0)


def test_server_clock_ignores_a_reading_whose_round_trip_was_too_long():
    clock = ServerClock(lambda: 0.0)
    clock.observe(server_time=1005.0, sent_at=1000.0, answered_at=1000.0 + MAX_ROUND_TRIP_S + 0.1)
    assert clock.offset == 0.0
