"""The restart policy (protocol/children/policy.py) case by case, with a clock the test moves: each
member's backoff, what counts as served, the degraded mark and its clearing."""
from __future__ import annotations

import logging
from types import SimpleNamespace

from frontdesk.protocol.children.policy import FIRST_RESTART_DELAY_S, SERVED_AFTER_S, RestartPolicy
from tests.unit.clock import Clock

SETTINGS = SimpleNamespace(restart_intensity=2, restart_period_s=60.0, restart_backoff_max_s=5.0)


def policy(clock) -> RestartPolicy:
    return RestartPolicy(SETTINGS, "handlers", logging.getLogger("test.policy"), clock)


def crash_young(p: RestartPolicy, clock: Clock, member: str = "h1", reason: str = "boom") -> float:
    p.started(member)
    clock.advance(0.1)
    return p.crashed(reason, member)


def test_the_delay_doubles_with_each_death_before_serving():
    clock = Clock()
    p = policy(clock)
    assert [crash_young(p, clock) for _ in range(3)] == [FIRST_RESTART_DELAY_S, 2 * FIRST_RESTART_DELAY_S,
                                                          4 * FIRST_RESTART_DELAY_S]


def test_each_member_keeps_its_own_backoff():
    clock = Clock()
    p = policy(clock)
    crash_young(p, clock, "h1")
    crash_young(p, clock, "h1")
    assert crash_young(p, clock, "h2") == FIRST_RESTART_DELAY_S


def test_a_member_that_served_restarts_at_once_and_its_next_early_death_starts_over():
    clock = Clock()
    p = policy(clock)
    crash_young(p, clock)
    crash_young(p, clock)
    p.started("h1")
    assert p.crashed("one bad event", "h1", served=True) == 0.0
    assert crash_young(p, clock) == FIRST_RESTART_DELAY_S


def test_living_served_after_s_counts_as_served():
    clock = Clock()
    p = policy(clock)
    p.started("h1")
    clock.advance(SERVED_AFTER_S)
    assert p.crashed("boom", "h1") == 0.0


def test_the_delay_stops_at_restart_backoff_max_s():
    clock = Clock()
    p = policy(clock)
    for _ in range(10):
        p.crashed("cannot start", "h3")
    assert p.crashed("cannot start", "h3") == SETTINGS.restart_backoff_max_s


def test_deaths_after_serving_never_mark_the_group_degraded():
    clock = Clock()
    p = policy(clock)
    for _ in range(20):
        p.started("h1")
        clock.advance(0.5)
        p.crashed("one event in ten", "h1", served=True)
    assert p.degraded is None and p.crashes == 20


def test_more_young_deaths_than_the_intensity_within_the_period_mark_it_degraded_with_the_reason(caplog):
    clock = Clock()
    p = policy(clock)
    with caplog.at_level(logging.ERROR, logger="test.policy"):
        for n in range(3):
            p.crashed("cannot start", f"h{n}")
    assert p.degraded == ("handlers: 3 crashes within restart_period_s=60 (restart_intensity=2); "
                          "last: cannot start")
    assert "event=pool_degraded group=handlers crashes=3" in caplog.text


def test_young_deaths_spread_wider_than_the_period_do_not_add_up():
    clock = Clock()
    p = policy(clock)
    for _ in range(3):
        p.crashed("boom", "h1")
        clock.advance(SETTINGS.restart_period_s + 1)
    assert p.degraded is None


def test_the_mark_clears_after_a_whole_period_without_a_young_death():
    clock = Clock()
    p = policy(clock)
    for n in range(3):
        p.crashed("cannot start", f"h{n}")
    p.refresh()
    assert p.degraded is not None                       # the window still holds them
    clock.advance(SETTINGS.restart_period_s + 1)
    p.refresh()
    assert p.degraded is None
