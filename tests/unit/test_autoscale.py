"""`handlers = auto`: the Autoscaler's decisions (dispatcher/autoscale.py) case by case, time injected."""
from __future__ import annotations

from frontdesk.dispatcher.autoscale import Autoscaler


def scaler(**changes) -> Autoscaler:
    return Autoscaler(**{"minimum": 1, "maximum": 6, "backlog_s": 1.0, "idle_s": 10.0, **changes})


def test_it_grows_by_half_the_pool_while_events_wait_and_handlers_are_busy():
    s = scaler()
    assert s.decide(0.0, target=1, ready=1, busy_share=0.9, oldest_pending_s=2.0) == 2
    assert s.decide(1.0, target=2, ready=1, busy_share=0.9, oldest_pending_s=3.0) == 2   # one still starting
    assert s.decide(2.0, target=2, ready=2, busy_share=0.9, oldest_pending_s=3.0) == 3
    assert s.decide(3.0, target=3, ready=3, busy_share=0.9, oldest_pending_s=3.0) == 4
    assert s.decide(4.0, target=4, ready=4, busy_share=0.9, oldest_pending_s=3.0) == 6
    assert s.decide(5.0, target=6, ready=6, busy_share=1.0, oldest_pending_s=9.0) == 6   # the maximum
    assert "4 -> 6: oldest event 3.0 s old, handlers 90 % busy" in s.last_change


def test_old_events_behind_idle_handlers_do_not_grow_the_pool():
    """One conversation's queue waits on its own previous event: more processes would not help."""
    s = scaler()
    assert s.decide(0.0, target=2, ready=2, busy_share=0.2, oldest_pending_s=30.0) == 2


def test_it_shrinks_one_at_a_time_after_each_quiet_spell_down_to_the_minimum():
    s = scaler(minimum=2)
    assert s.decide(0.0, target=4, ready=4, busy_share=0.1, oldest_pending_s=0.0) == 4
    assert s.decide(9.0, target=4, ready=4, busy_share=0.1, oldest_pending_s=0.0) == 4
    assert s.decide(10.0, target=4, ready=4, busy_share=0.1, oldest_pending_s=0.0) == 3
    assert s.decide(15.0, target=3, ready=3, busy_share=0.1, oldest_pending_s=0.0) == 3
    assert s.decide(20.0, target=3, ready=3, busy_share=0.1, oldest_pending_s=0.0) == 2
    assert s.decide(99.0, target=2, ready=2, busy_share=0.0, oldest_pending_s=0.0) == 2


def test_hysteresis_a_moderately_busy_pool_keeps_its_size_and_busy_moments_restart_the_quiet_spell():
    s = scaler()
    for second in range(30):   # between the thresholds: neither grows nor shrinks
        assert s.decide(float(second), target=3, ready=3, busy_share=0.5, oldest_pending_s=0.5) == 3
    assert s.decide(30.0, target=3, ready=3, busy_share=0.1, oldest_pending_s=0.0) == 3
    assert s.decide(39.0, target=3, ready=3, busy_share=0.4, oldest_pending_s=0.0) == 3   # busy again
    assert s.decide(41.0, target=3, ready=3, busy_share=0.1, oldest_pending_s=0.0) == 3   # quiet from 41
    assert s.decide(50.0, target=3, ready=3, busy_share=0.1, oldest_pending_s=0.0) == 3
    assert s.decide(51.0, target=3, ready=3, busy_share=0.1, oldest_pending_s=0.0) == 2


def test_a_target_outside_the_bounds_is_brought_inside():
    assert scaler().decide(0.0, target=0, ready=0, busy_share=0.0, oldest_pending_s=0.0) == 1
    assert scaler().decide(0.0, target=9, ready=9, busy_share=1.0, oldest_pending_s=5.0) == 6
