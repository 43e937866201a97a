"""WorkRate (protocol/coalesce.py) with a clock the test moves: a pause of coalesce_s is taken
only while it would gather GATHER_MIN units of work (the dispatcher: events handed out)."""
from __future__ import annotations

from frontdesk.protocol.coalesce import WorkRate
from tests.unit.clock import Clock

PAUSE_S = 0.003


def steady(rate: WorkRate, clock: Clock, per_s: int, seconds: float) -> bool:
    """Work at `per_s` for `seconds`, in 10 ms turns that each ask; the last answer."""
    gathers = False
    for _ in range(round(seconds * 100)):
        clock.now += 0.01
        rate.add(per_s // 100)
        gathers = rate.gathers(PAUSE_S)
    return gathers


def test_a_new_loop_does_not_pause():
    assert not WorkRate(Clock()).gathers(PAUSE_S)


def test_1000_events_a_second_gather_three_per_pause_and_300_fewer_than_one():
    clock = Clock()
    rate = WorkRate(clock)
    assert steady(rate, clock, 1000, 2.0) and 900 < rate.per_s < 1100
    assert not steady(rate, clock, 300, 2.0) and 250 < rate.per_s < 350


def test_a_quiet_spell_ends_the_pauses_at_the_first_look_after_it():
    clock = Clock()
    rate = WorkRate(clock)
    assert steady(rate, clock, 2000, 1.0)
    clock.now += 5.0                    # nothing handed out, no turn either
    assert not rate.gathers(PAUSE_S) and rate.per_s == 0.0


def test_no_pause_without_a_pause_length():
    clock = Clock()
    rate = WorkRate(clock)
    steady(rate, clock, 5000, 1.0)
    assert not rate.gathers(0.0)
