"""handlers = auto with a real dispatcher under a burst: it grows within seconds, drains every event
once and in order per conversation, stays within its bounds, and shrinks back when idle (the
Autoscaler's rules case by case: tests/unit/test_autoscale.py)."""
from __future__ import annotations

import threading


def test_a_burst_scales_a_real_pool_up_drains_in_order_and_idle_scales_it_down(harness):
    process = harness.start(handlers="auto", handlers_min=1, handlers_max=4, autoscale_backlog_s=0.5,
                            autoscale_idle_s=1, env={"FD_TEST_WINDOW": "1", "FD_TEST_DELAY_MS": "40"})
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
