"""From published counters to rates (command/observe.py) and from rates to advice
(command/advice.py), in-process: samples are built as the store would return them."""
from __future__ import annotations

import pytest

from frontdesk.advice import advise
from frontdesk.observe import Sample, build_view, percentile
from frontdesk.protocol.process import HANDLING_BUCKETS_S

NAME = "dispatcher:host:1"


def handler(name: str, pid: int, handled: int, busy_s: float, counts=None, state="ready") -> dict:
    return {"name": name, "pid": pid, "state": state, "in_flight": 1, "max_in_flight": 8, "handled": handled,
            "busy_s": busy_s, "restarts": 0,
            "handling_counts": counts or [0] * (len(HANDLING_BUCKETS_S) + 1)}


def dispatcher(at: float, handlers: list[dict], calls: dict | None = None, queued: int = 0,
               degraded=None, autoscale=None) -> dict:
    return {"pid": 1, "host": "host", "state": "running", "updated_at": at, "handlers_target": len(handlers),
            "handlers": handlers, "degraded": degraded, "autoscale": autoscale,
            "ratelimiter": {"pid": 2, "restarts": 0, "pending_calls": queued,
                            "limits_per_s": {"reply": 2000.0, "default": 2000.0},
                            "stats": {"calls": {"reply": calls or {}}, "queues": {"reply": {"queued": queued}}}}}


def events(pending=0, done=0, dead=0, oldest=0.0) -> dict:
    return {"pending": pending, "in_flight": 0, "done": done, "dead": dead, "oldest_pending_s": oldest}


def view_of(old: Sample, new: Sample) -> dict:
    return build_view(new, [old])


def test_percentile_is_the_upper_bound_of_the_bucket_holding_the_quantile():
    counts = [0] * (len(HANDLING_BUCKETS_S) + 1)
    counts[2], counts[5] = 98, 2          # 98 events <= 5 ms, 2 events <= 50 ms
    assert percentile(counts, 0.5) == 0.005 and percentile(counts, 0.99) == 0.05
    assert percentile([0] * len(counts), 0.5) is None
    counts[-1] = 1000
    assert percentile(counts, 0.99) == float("inf")


def test_rates_come_from_two_documents_and_a_restarted_process_counts_from_zero():
    counts_old, counts_new = [0] * 15, [0] * 15
    counts_new[3] = 100
    old = Sample(100.0, events(done=0), {NAME: dispatcher(100.0, [handler("handler-1", 11, 50, 1.0, counts_old),
                                                                   handler("handler-2", 12, 500, 1.0)],
                                                         calls={"200": 1000})})
    new = Sample(102.0, events(done=300, pending=100),
                 {NAME: dispatcher(102.0, [handler("handler-1", 11, 250, 2.9, counts_new),
                                           handler("handler-2", 99, 40, 0.5)],   # a new process in that slot
                                   calls={"200": 1400, "429": 6})})
    view = view_of(old, new)
    h1, h2 = view["dispatchers"][0]["handlers"]
    assert h1["events_per_s"] == 100.0 and h1["busy_share"] == 0.95 and h1["p50_ms"] == 10.0
    assert h2["events_per_s"] == 20.0 and h2["busy_share"] == 0.25
    reply = view["dispatchers"][0]["ratelimiter"]["endpoints"][0]
    assert reply["calls_per_s"] == 203.0 and reply["429s_per_s"] == 3.0 and reply["limit_per_s"] == 2000.0
    assert view["queue"]["arrivals_per_s"] == 200.0 and view["queue"]["completions_per_s"] == 150.0


def test_a_busy_pool_behind_a_growing_queue_gets_a_handler_count():
    old = Sample(100.0, events(done=1000), {NAME: dispatcher(100.0, [handler("handler-1", 1, 0, 0.0),
                                                                     handler("handler-2", 2, 0, 0.0)])})
    new = Sample(101.0, events(done=1100, pending=120, oldest=3.0),   # 220 arrived, 100 done
                 {NAME: dispatcher(101.0, [handler("handler-1", 1, 50, 0.97), handler("handler-2", 2, 50, 0.95)])})
    advice = advise(view_of(old, new))
    assert advice == ["handlers 96 % busy and the queue grows 120 events/s: about 5 handlers would keep up "
                      "(frontdesk scale 5)"]


def test_at_the_rate_limit_more_handlers_will_not_help():
    old = Sample(100.0, events(done=0), {NAME: dispatcher(100.0, [handler("handler-1", 1, 0, 0.0)],
                                                         calls={"200": 0})})
    new = Sample(101.0, events(done=1950, pending=3000, oldest=4.0),
                 {NAME: dispatcher(101.0, [handler("handler-1", 1, 1950, 1.0)], calls={"200": 1950},
                                   queued=2500)})
    advice = advise(view_of(old, new))
    assert advice == ["rate limiter at its reply limit (1950 of 2000 calls/s, 2500 queued): "
                      "more handlers will not help"]


def test_an_idle_pool_under_traffic_may_shrink_but_an_idle_system_gets_no_advice():
    handlers_old = [handler(f"handler-{n}", n, 0, 0.0) for n in range(1, 7)]
    handlers_new = [handler(f"handler-{n}", n, 10, 0.1) for n in range(1, 7)]
    old = Sample(100.0, events(done=0), {NAME: dispatcher(100.0, handlers_old)})
    new = Sample(101.0, events(done=60), {NAME: dispatcher(101.0, handlers_new)})
    assert advise(view_of(old, new)) == ["handlers 10 % busy with nothing waiting: 1 would do (frontdesk scale 1)"]
    quiet = Sample(101.0, events(done=0), {NAME: dispatcher(101.0, handlers_old)})
    assert advise(view_of(old, quiet)) == []


def test_dead_letters_degraded_pools_429s_and_a_missing_dispatcher_are_named():
    old = Sample(100.0, events(), {NAME: dispatcher(100.0, [handler("handler-1", 1, 0, 0.0)], calls={"429": 0})})
    new = Sample(101.0, events(dead=3),
                 {NAME: dispatcher(101.0, [handler("handler-1", 1, 0, 0.0)], calls={"429": 2},
                                   degraded="handlers: 6 crashes within restart_period_s=60")})
    advice = advise(view_of(old, new))
    assert advice[0].startswith("handler pool degraded (handlers: 6 crashes") and "will not help" in advice[0]
    assert advice[1].startswith("LINE answers 429 on reply (2.0/s): lower its rate_limits entry (now 2000/s)")
    assert advice[2] == "3 dead letters: see `frontdesk dead-letters list`, then retry or drop them"
    orphaned = Sample(101.0, events(pending=50, oldest=40.0), {})
    assert advise(build_view(orphaned, [])) == [
        "50 events pending (oldest 40 s) and no dispatcher publishing a status: start one "
        "(`frontdesk run` or `frontdesk dispatcher`)"]


def test_a_status_that_stopped_coming_is_stale_and_gives_no_advice():
    old = Sample(100.0, events(), {NAME: dispatcher(100.0, [handler("handler-1", 1, 0, 0.0)])})
    late = Sample(130.0, events(pending=5, oldest=30.0), {NAME: dispatcher(100.0, [handler("handler-1", 1, 0, 0.0)])})
    view = build_view(late, [old])
    assert view["dispatchers"][0]["stale"] is True
    assert advise(view)[0].startswith("5 events pending (oldest 30 s) and no dispatcher publishing")


def test_one_conversation_holding_much_of_the_queue_is_named_a_hot_key():
    busy = Sample(101.0, events(pending=90, oldest=20.0), {NAME: dispatcher(101.0, [handler("handler-1", 1, 0, 0.1)])},
                  busiest_key=("Uhot", 36))
    (advice,) = [line for line in advise(build_view(busy, [])) if "hot key" in line]
    assert advice.startswith("one conversation (Uhot) holds 40 % of the waiting events (36): they go one at a time")
    spread = Sample(101.0, events(pending=90), {}, busiest_key=("Ucalm", 9))
    assert not [line for line in advise(build_view(spread, [])) if "hot key" in line]


# --- each rule, case by case --------------------------------------------------------------------

def _busy_view(busy_s: float, done_before: int, done_after: int, pending: int, oldest: float = 0.0,
               autoscale=None, count: int = 2) -> dict:
    old = Sample(100.0, events(done=done_before), {NAME: dispatcher(100.0, [
        handler(f"handler-{n}", n, 0, 0.0) for n in range(1, count + 1)], autoscale=autoscale)})
    new = Sample(101.0, events(done=done_after, pending=pending, oldest=oldest), {NAME: dispatcher(101.0, [
        handler(f"handler-{n}", n, 10, busy_s) for n in range(1, count + 1)], autoscale=autoscale)})
    return view_of(old, new)


def test_a_busy_autoscaled_pool_is_told_to_raise_handlers_max_not_to_scale():
    (advice,) = advise(_busy_view(0.95, 1000, 1100, 120, autoscale={"min": 1, "max": 2}))
    assert advice.endswith("(raise handlers_max)")


def test_a_busy_pool_whose_queue_does_not_grow_and_whose_oldest_event_is_young_gets_no_advice():
    assert advise(_busy_view(0.95, 1000, 1100, 0, oldest=1.0)) == []


def test_a_busy_pool_whose_oldest_event_waits_is_told_how_long_even_when_the_queue_shrinks():
    (advice,) = advise(_busy_view(0.95, 1000, 1100, 0, oldest=8.0))
    assert "the oldest event waits 8 s: about 3 handlers would keep up" in advice


def test_a_busy_pool_that_completed_nothing_is_told_one_handler_more():
    (advice,) = advise(_busy_view(0.95, 1000, 1000, 50, oldest=9.0))
    assert "about 3 handlers would keep up (frontdesk scale 3)" in advice


def test_an_idle_autoscaled_pool_or_a_single_handler_is_never_told_to_shrink():
    assert advise(_busy_view(0.05, 0, 60, 0, autoscale={"min": 1, "max": 6}, count=6)) == []
    assert advise(_busy_view(0.05, 0, 60, 0, count=1)) == []


def test_an_idle_pool_with_events_waiting_is_not_told_to_shrink():
    assert advise(_busy_view(0.05, 0, 60, 3, count=6)) == []


def test_the_first_sample_has_no_rates_so_the_pool_rule_stays_silent():
    first = Sample(101.0, events(pending=500, oldest=60.0), {NAME: dispatcher(101.0, [handler("handler-1", 1, 0, 1.0)])})
    assert [line for line in advise(build_view(first, [])) if "handlers" in line and "busy" in line] == []


def test_an_endpoint_with_a_limits_worth_queued_counts_as_at_its_limit_whatever_its_rate():
    old = Sample(100.0, events(), {NAME: dispatcher(100.0, [handler("handler-1", 1, 0, 0.0)], calls={"200": 0})})
    new = Sample(101.0, events(pending=10, oldest=9.0),
                 {NAME: dispatcher(101.0, [handler("handler-1", 1, 10, 1.0)], calls={"200": 10}, queued=2000)})
    (advice,) = advise(view_of(old, new))
    assert advice.startswith("rate limiter at its reply limit (10 of 2000 calls/s, 2000 queued)")


def test_a_degraded_rate_limiter_is_named():
    view = _busy_view(0.5, 0, 10, 0)
    view["dispatchers"][0]["ratelimiter"]["degraded"] = "5 crashes within 60 s"
    assert advise(view) == ["rate limiter degraded (5 crashes within 60 s)"]


@pytest.mark.parametrize("share, named", [(0.29, False), (0.30, True)])
def test_a_hot_key_is_named_from_its_share_of_the_waiting_events(share, named):
    view = build_view(Sample(101.0, events(pending=100), {}, busiest_key=("Uhot", int(share * 100))), [])
    assert any("hot key" in line for line in advise(view)) is named


def test_advice_comes_most_urgent_first():
    view = _busy_view(0.5, 0, 10, 0)
    view["dispatchers"][0]["degraded"] = "handlers: 6 crashes"
    view["queue"]["dead"] = 2
    advice = advise(view)
    assert advice[0].startswith("handler pool degraded") and advice[-1].startswith("2 dead letters")
