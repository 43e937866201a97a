"""Crashing handlers with real processes: a crash is charged only to the event it is tied to, and a
handler that crashes on one delivery in ten keeps the pool's throughput (the restart policy's rules
one by one: tests/unit/test_restart_policy.py)."""
from __future__ import annotations

import time

from tests.helpers import wait_until


def test_a_crash_is_charged_only_to_the_event_it_is_tied_to_and_that_event_is_dead_lettered(harness):
    """Four events in flight per handler; one event kills its handler on every attempt. Its
    neighbours are given back uncharged and each retried alone, so only the culprit's attempts are
    counted: it becomes a dead letter after max_attempts, every other event is done at attempt 1."""
    texts = {f"U{k}": ["hi"] * 6 for k in range(8)}
    texts["U3"][2] = "crashalways"
    appended = harness.append(texts)
    culprit = appended[2 * 8 + 3]
    dispatcher = harness.start(handlers=2, max_attempts=3, env={"FD_TEST_DELAY_MS": "30"})
    wait_until(lambda: harness.store.stats()["done"] + harness.store.stats()["dead"] == len(appended), 60,
               message="every event done or dead")
    (dead,) = harness.store.dead_letters()
    assert dead["id"] == culprit and dead["attempts"] == 3 and "exited with status 1" in dead["error"]
    ends = [r for r in harness.records() if r[0] == "end"]
    assert sorted(r[1] for r in ends) == sorted(i for i in appended if i != culprit)   # each once
    assert {r[4] for r in ends} == {1}                     # no innocent event was charged
    assert "events_isolated" in harness.log_text()
    assert dispatcher.poll() is None


def _run(harness, events: int, rate: float, **env) -> float:
    """Offer `events` at `rate` per second (one per key, keys reused) to a fresh dispatcher; the
    throughput in events per second from the first offer until every one is done or dead."""
    dispatcher = harness.start(handlers=2, env={"FD_TEST_DELAY_MS": "40", **env}, restart_backoff_max_s=30,
                               restart_intensity=5, restart_period_s=60)   # the defaults, not the harness's
    wait_until(lambda: (harness.status(dispatcher) or {}).get("handlers") and
               all(h["state"] == "ready" for h in harness.status(dispatcher)["handlers"]), 20,
               message="handlers ready")
    before = harness.store.stats()
    started = time.monotonic()
    for n in range(events):
        due = started + n / rate
        time.sleep(max(0.0, due - time.monotonic()))   # pacing the load, not synchronisation
        harness.append({f"U{n % 50}": ["hi"]})
    target = before["done"] + before["dead"] + events
    wait_until(lambda: harness.store.stats()["done"] + harness.store.stats()["dead"] >= target, 60,
               message=f"{events} events done or dead")
    elapsed = time.monotonic() - started
    dispatcher.terminate()
    dispatcher.wait(timeout=15)
    return events / elapsed


def test_a_handler_crashing_on_one_delivery_in_ten_keeps_half_the_pools_throughput(harness):
    """Measured at an offered 30 events/s, 40 ms of work each (docs/benchmarks.md has more figures):
    the pool used to turn degraded and restart every 30 s (142 of 400 events in two minutes)."""
    healthy = _run(harness, 120, 30.0)    # 4 s each: ~12 crashes, over twice restart_intensity=5
    crashing = _run(harness, 120, 30.0, FD_TEST_CRASH_PERCENT="10")
    print(f"\nthroughput healthy={healthy:.1f}/s crashing_10pct={crashing:.1f}/s ratio={crashing / healthy:.2f}")
    assert crashing >= 0.5 * healthy, (healthy, crashing)
    assert harness.store.stats()["dead"] == 0
    assert "pool_degraded" not in harness.log_text(1)
