"""The status page's sampler in-process: /healthz from the age of its last good read (a clock
injected), and the figures each chart keeps per moment (history_point)."""
from __future__ import annotations

from frontdesk.statuspage import HEALTHY_SAMPLE_AGE_S, Sampler, history_point
from frontdesk.store import open_store
from tests.unit.clock import Clock

START = 1000.0   # the injected clock's start


def test_healthz_says_503_with_the_reason_once_the_store_has_not_answered_for_a_while(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/fd.db")
    clock = Clock(START)
    sampler = Sampler(store, clock=clock)
    sampler.read_once()
    assert sampler.health() == (200, {"status": "ok"})
    store.close()
    sampler.read_once()                           # fails: the last good read stands
    clock.now += HEALTHY_SAMPLE_AGE_S             # not yet too old
    assert sampler.health() == (200, {"status": "ok"})
    clock.now += 0.1
    status, body = sampler.health()
    assert status == 503 and "is closed" in body["reason"]
    assert sampler.status_json()["error"] == body["reason"]


def test_healthz_before_any_read_is_503_saying_how_long_none_came(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/fd.db")
    try:
        status, body = Sampler(store, clock=Clock(12.0)).health()
    finally:
        store.close()
    assert status == 503 and body == {"status": "unavailable", "reason": "no store read for 12 s"}


def _dispatcher(e2e_p50, e2e_p99, endpoints):
    return {"e2e_p50_ms": e2e_p50, "e2e_p99_ms": e2e_p99,
            "ratelimiter": {"endpoints": [{"endpoint": e, "calls_per_s": r} for e, r in endpoints]}}


def test_a_history_point_adds_calls_per_endpoint_and_keeps_the_worst_latency():
    view = {"at": 100.04, "queue": {"pending": 3, "oldest_pending_s": 1.5, "arrivals_per_s": 10.0,
                                    "completions_per_s": 9.0},
            "dispatchers": [_dispatcher(5.0, 20.0, [("reply", 1.005), ("push", 2.0)]),
                            _dispatcher(None, 40.0, [("reply", 3.0)])]}
    assert history_point(view) == {"t": 100.0, "pending": 3, "oldest_s": 1.5, "arrivals": 10.0,
                                   "completions": 9.0, "e2e_p50_ms": 5.0, "e2e_p99_ms": 40.0,
                                   "calls": {"reply": 4.0, "push": 2.0}}


def test_a_history_point_without_dispatchers_has_no_latency():
    point = history_point({"at": 1.0, "queue": {}, "dispatchers": []})
    assert point["e2e_p50_ms"] is None and point["e2e_p99_ms"] is None and point["pending"] == 0
