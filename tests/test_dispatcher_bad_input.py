"""One bad event or one bad API call never stops the dispatcher (real processes): an event whose
every attempt ran out without an answer is dead-lettered with the reason; a call the dispatcher
cannot relay is answered with an error; any stored event is delivered or dead-lettered naming why.
(An event msgpack cannot carry, and calls past max_calls_per_event: tests/unit/test_arbiter.py.)"""
from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.helpers import wait_until
from tests.sandbox_harness import TOKEN, running_sandbox


def test_an_api_call_the_dispatcher_cannot_relay_gets_an_error_answer_and_nothing_else_notices(harness):
    appended = harness.append({"Udeep": ["deepcall", "hi"], "Uother": ["hi"] * 3})
    dispatcher = harness.start(handlers=1)
    harness.wait_done(len(appended))          # "deepcall" acks only once its call was refused
    harness.check_history(appended)
    assert harness.store.dead_letters() == []
    doc = harness.wait_status(dispatcher, lambda d: d["handled"] == len(appended), message="all handled")
    assert dispatcher.poll() is None and doc["ratelimiter"]["restarts"] == 0
    assert all(h["restarts"] == 0 for h in doc["handlers"])


def test_an_event_whose_attempts_ran_out_in_dead_dispatchers_is_dead_lettered_not_delivered(harness):
    """Two dispatchers died holding it (their leases ran out): with max_attempts=2 the third claim
    buries it with the reason, and the next event of its conversation goes out."""
    appended = harness.append({"Ulost": ["hi", "hi"], "Uok": ["hi"]})
    for owner in ("dead-1", "dead-2"):   # each lease runs out at once (lease_s=0)
        assert [d["o"]["_id"] for d in harness.store.claim(owner, 1, 0)] == [appended[0]]
    harness.start(handlers=1, max_attempts=2)
    harness.wait_done(2)
    (dead,) = harness.store.dead_letters()
    assert dead["id"] == appended[0] and dead["attempts"] == 2
    assert "max_attempts=2 deliveries made, none answered" in dead["error"]
    assert appended[0] not in {r[1] for r in harness.records()}    # never handed to a handler


def test_time_a_call_waits_in_frontdesks_rate_limiter_does_not_count_against_the_event_deadline(harness, tmp_path):
    """LINE's bucket here allows one call per 3 s: the handler's second call waits ~3 s in the rate
    limiter's queue, twice event_deadline_s=1.5. The handler is waiting on frontdesk, not stuck."""
    with running_sandbox(tmp_path) as sandbox:
        appended = harness.append({"Uwait": ["wait2"]})
        dispatcher = harness.start(handlers=1, rate_limits="default=20/m",
                                   env={"FRONTDESK_API_BASE": sandbox.url, "LINE_CHANNEL_ACCESS_TOKEN": TOKEN})
        harness.wait_done(len(appended), timeout=30)
        ended = [r for r in harness.records() if r[0] == "end"]
        assert [r[4] for r in ended] == [1]                 # first attempt, never killed and retried
        assert sandbox.stats()["calls"]["bot_info.get"] == {"200": 2}   # (the sandbox counts per endpoint)
        doc = harness.wait_status(dispatcher, lambda d: d["handled"] == 1, message="handled")
        assert all(h["restarts"] == 0 for h in doc["handlers"])


def test_a_handler_that_stops_reading_is_declared_stuck_at_the_outbound_bound_and_its_event_retried(harness):
    """40 answers of 60 KB each pile up for a handler that no longer reads: at 1 MB queued the
    dispatcher kills it (unbounded, such a handler grew the dispatcher from 33 MB to 1.23 GB) and the event goes to the next attempt."""
    harness.store.user_set_data("Ubig", {"blob": "x" * 60_000})
    appended = harness.append({"Udeaf": ["deaf"], "Uother": ["hi"] * 3})
    # (a long deadline: the other events in flight on the deaf handler are never read, and must
    # not run out of time first)
    dispatcher = harness.start(handlers=1, handler_outbound_max_bytes=1 << 20, max_frame_bytes=1 << 17,
                               event_deadline_s=30, env={"FD_TEST_DEAF_CALLS": "40"})
    harness.wait_done(len(appended))
    harness.check_history(appended, exactly_once=False)
    # (retried alone first, uncharged, when other events were in flight beside it)
    assert [r[4] for r in harness.records() if r[0] == "start" and r[1] == appended[0]] in ([1, 2], [1, 1, 2])
    assert "stuck: stopped reading its stdin" in harness.log_text()
    assert "handler_outbound_max_bytes=1048576" in harness.log_text()
    assert dispatcher.poll() is None




JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=20)
    | st.integers(min_value=-(2**80), max_value=2**80),   # beyond 64 bits now and then
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(extras=st.lists(JSON_VALUES, min_size=15, max_size=15))
def test_any_stored_event_is_delivered_or_dead_lettered_with_a_reason_and_the_dispatcher_lives(harness, extras):
    """Events carrying arbitrary JSON (as the store may hold it) against one long-lived dispatcher:
    each is acked by the handler or becomes a dead letter naming why; the dispatcher never dies."""
    if not harness.processes:
        harness.start(handlers=2)
    dispatcher = harness.processes[0]
    before = harness.store.stats()
    now = int(time.time() * 1000)
    batch = time.monotonic_ns()   # each example's events are new ones
    events = [{"type": "message", "timestamp": now, "webhookEventId": f"prop-{batch}-{n}",
               "replyToken": "r", "source": {"type": "user", "userId": f"U{n % 5}"}, "extra": value,
               "message": {"type": "text", "id": str(n), "text": "hi"}} for n, value in enumerate(extras)]
    harness.store.append("Udest", events, now)
    wait_until(lambda: sum(harness.store.stats()[s] for s in ("done", "dead")) ==
               before["done"] + before["dead"] + len(events), 20, message="every event done or dead")
    unframeable = {e["webhookEventId"] for e in events if _too_big(e["extra"])}
    dead = {d["id"]: d["error"] for d in harness.store.dead_letters(limit=10_000)}
    assert unframeable <= set(dead)
    assert all("cannot be encoded as msgpack" in dead[i] for i in unframeable)
    acked = {r[1] for r in harness.records() if r[0] == "end"}
    assert all(e["webhookEventId"] in acked for e in events if e["webhookEventId"] not in unframeable)
    assert dispatcher.poll() is None


def _too_big(value) -> bool:
    if isinstance(value, bool) or value is None:
        return False
    if isinstance(value, int):
        return not -(2**63) <= value < 2**64
    if isinstance(value, list):
        return any(_too_big(v) for v in value)
    if isinstance(value, dict):
        return any(_too_big(v) for v in value.values())
    return False
