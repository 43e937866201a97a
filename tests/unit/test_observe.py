"""observe.py's figures in-process: counters to rates between two status documents, a restarted
process counted from zero, the queue's arrivals and completions, and an Observer over a real
SQLite store with its clocks injected (samples kept, the costly per-key count paced)."""
from __future__ import annotations

import pytest

from frontdesk.protocol.process import HANDLING_BUCKETS_S
from frontdesk.observe import (BUSIEST_KEYS_EVERY_S, BUSIEST_KEYS_MIN, Observer, Sample, handler_view, queue_view,
                               ratelimiter_view)
from frontdesk.store import open_store
from tests.unit.clock import Clock


def test_a_handler_view_rates_its_counters_over_the_seconds_between_documents():
    old = {"name": "h", "pid": 7, "handled": 10, "busy_s": 1.0}
    new = {"name": "h", "pid": 7, "state": "ready", "handled": 30, "busy_s": 2.5, "in_flight": 2, "restarts": 1}
    view = handler_view(new, old, 2.0)
    assert (view["events_per_s"], view["busy_share"], view["in_flight"], view["restarts"]) == (10.0, 0.75, 2, 1)


def test_a_handler_with_a_new_pid_counts_from_zero_and_busy_share_is_capped_at_one():
    view = handler_view({"pid": 8, "handled": 4, "busy_s": 9.0}, {"pid": 7, "handled": 1000, "busy_s": 1.0}, 2.0)
    assert view["events_per_s"] == 2.0 and view["busy_share"] == 1.0


def test_a_handler_without_a_process_is_not_busy_and_without_an_interval_has_no_rate():
    assert handler_view({"pid": None, "busy_s": 5.0}, None, 1.0)["busy_share"] == 0.0
    assert handler_view({"pid": 1, "handled": 5}, None, 0.0)["events_per_s"] == 0.0


def test_handling_percentiles_come_from_the_histogram_grown_between_documents():
    counts_old, counts_new = [0] * (len(HANDLING_BUCKETS_S) + 1), [0] * (len(HANDLING_BUCKETS_S) + 1)
    counts_old[0], counts_new[0], counts_new[4] = 100, 100, 10     # only the 20 ms bucket grew
    view = handler_view({"pid": 1, "handling_counts": counts_new}, {"pid": 1, "handling_counts": counts_old}, 1.0)
    assert view["p50_ms"] == view["p99_ms"] == 20.0


def test_a_rate_limiter_view_uses_the_default_limit_for_an_endpoint_without_its_own():
    new = {"pid": 2, "limits_per_s": {"default": 2000.0}, "stats": {"calls": {"push": {"200": 30, "429": 4}},
                                                                      "queues": {"push": {"queued": 3}}}}
    old = {"pid": 2, "stats": {"calls": {"push": {"200": 10, "429": 2}}}}
    (push,) = ratelimiter_view(new, old, 2.0)["endpoints"]
    assert push == {"endpoint": "push", "calls_per_s": 11.0, "limit_per_s": 2000.0, "queued": 3, "429s": 4,
                    "429s_per_s": 1.0, "calls": 34}


def test_a_restarted_rate_limiter_counts_from_zero():
    new = {"pid": 3, "stats": {"calls": {"reply": {"200": 5}}, "batches": 1}}
    old = {"pid": 2, "stats": {"calls": {"reply": {"200": 500}}, "batches": 90}}
    view = ratelimiter_view(new, old, 1.0)
    assert view["endpoints"][0]["calls_per_s"] == 5.0 and view["batches_per_s"] == 1.0


def _events(**counts):
    return {"pending": 0, "in_flight": 0, "done": 0, "dead": 0, **counts}


def test_arrivals_and_completions_per_second_and_a_purge_is_no_negative_arrival():
    old = Sample(100.0, _events(pending=10, done=1000), {})
    new = Sample(102.0, _events(pending=30, done=1010, dead=2), {})
    view = queue_view(new, old)
    assert (view["arrivals_per_s"], view["completions_per_s"]) == (16.0, 6.0)
    purged = Sample(104.0, _events(pending=30, done=10), {})
    assert queue_view(purged, new)["arrivals_per_s"] == 0.0


def test_the_first_sample_has_no_rates_and_the_busiest_key_is_a_share_of_what_waits():
    view = queue_view(Sample(100.0, _events(pending=30, in_flight=10), {}, busiest_key=("U1", 10)), None)
    assert view["arrivals_per_s"] is None and view["completions_per_s"] is None
    assert view["busiest_key"] == {"key": "U1", "events": 10, "share": 0.25}


@pytest.fixture
def store(tmp_path):
    opened = open_store(f"sqlite:///{tmp_path / 'fd.db'}")
    try:
        yield opened
    finally:
        opened.close()


def _event(n: int, user: str) -> dict:
    return {"type": "message", "timestamp": 1, "webhookEventId": f"ev{n}", "source": {"type": "user", "userId": user},
            "message": {"type": "text", "id": str(n), "text": "hi"}}


def test_an_observer_reads_the_busiest_key_every_few_seconds_and_keeps_the_last_one_between(store):
    store.append("Ubot", [_event(n, "Uhot") for n in range(BUSIEST_KEYS_MIN)], 0)
    clock, wall = Clock(50.0), Clock(1000.0)
    observer = Observer(store, clock=clock, wall=wall)
    assert observer.sample().busiest_key == ("Uhot", BUSIEST_KEYS_MIN)
    store.append("Ubot", [_event(100 + n, "Uother") for n in range(2 * BUSIEST_KEYS_MIN)], 0)
    clock.now += BUSIEST_KEYS_EVERY_S - 0.1
    assert observer.sample().busiest_key == ("Uhot", BUSIEST_KEYS_MIN)      # not read again yet
    clock.now += 0.1
    assert observer.sample().busiest_key == ("Uother", 2 * BUSIEST_KEYS_MIN)


def test_an_observer_keeps_samples_for_keep_s_and_views_rates_over_its_window(store):
    wall = Clock(1000.0)
    observer = Observer(store, keep_s=3.0, wall=wall)
    with pytest.raises(ValueError, match="no sample"):
        observer.view()
    for _ in range(6):
        observer.sample()
        wall.now += 1.0
    assert [s.at for s in observer.samples] == [1002.0, 1003.0, 1004.0, 1005.0]
    assert observer.view()["at"] == 1005.0
