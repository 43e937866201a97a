"""handlers = auto: the Autoscaler's decisions in-process (time injected), then a real dispatcher
under a burst: it grows within seconds, drains every event once and in order per conversation,
stays within its bounds, and shrinks back when idle."""
from __future__ import annotations

import threading

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


def test_a_burst_scales_a_real_pool_up_drains_in_order_and_idle_scales_it_down(harness):
    process = harness.start(handlers="auto", handlers_min=1, handlers_max=4, autoscale_backlog_s=0.5,
                            autoscale_idle_s=2, env={"FD_TEST_WINDOW": "1", "FD_TEST_DELAY_MS": "40"})
    harness.wait_status(process, lambda d: d["autoscale"] and len([h for h in d["handlers"]
                                                                  if h["state"] == "ready"]) == 1, timeout=30)
    seen, stop = [], threading.Event()

    def watch():   # every pool size the dispatcher publishes, for the bounds
        while not stop.wait(0.2):
            doc = harness.status(process)
            if doc:
                seen.append((doc["handlers_target"], len(doc["handlers"])))
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        appended = harness.append(keys=40, per_key=10)     # 400 events, ~20 s for one handler alone
        grown = harness.wait_status(process, lambda d: d["handlers_target"] >= 3, timeout=15,
                                    message="the pool grew under the burst")
        assert "oldest event" in grown["autoscale"]["last_change"]
        harness.wait_done(len(appended), timeout=60)
        shrunk = harness.wait_status(process, lambda d: d["handlers_target"] == 1 and len(d["handlers"]) == 1,
                                     timeout=30, message="the pool shrank back when idle")
        assert "with nothing waiting" in shrunk["autoscale"]["last_change"]
    finally:
        stop.set()
        watcher.join()
    harness.check_history(appended)        # each event once, in order per conversation
    assert max(target for target, _ in seen) <= 4 and min(target for target, _ in seen) >= 1
    assert max(count for _, count in seen) <= 4       # a retiring process is one of the four slots' worth
    log = harness.log_text()
    assert "autoscale from=1 to=2" in log and "autoscale from=2 to=1" in log
