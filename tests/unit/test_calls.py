"""A call as it comes off the rate limiter's pipe (ratelimiter/calls.py parse_call): what is
refused and how it is named, and what a call knows of itself."""
from __future__ import annotations

import pytest

from frontdesk.ratelimiter.calls import fingerprint, parse_call
from frontdesk.ratelimiter.line_api import retry_key
from tests.unit.limiter_parts import TEXT

PUSH = {"to": "U1", "messages": TEXT}


def params(event_id="ev", call_no=1, method="push", context=None, args=PUSH) -> list:
    call = {"event_id": event_id, "call_no": call_no, "method": method}
    if context is not None:
        call["context"] = context
    return [call, args]


@pytest.mark.parametrize("bad, message", [
    ("not a list", "call params must be [ {event_id, call_no, method, context}, args ]"),
    (["not a map", {}], "call params must be"),
    ([{}], "call params must be"),
    (params(event_id=""), "`event_id` must be a non-empty string or nil"),
    (params(event_id=5), "`event_id` must be a non-empty string or nil"),
    (params(call_no=0), "`call_no` must be an integer >= 1 when `event_id` is given"),
    (params(call_no=True), "`call_no` must be an integer >= 1"),
    (params(method="teleport"), "unknown API method 'teleport'"),
    (params(args=[1]), "push: `args` must be a map"),
    (params(context=[1]), "`context` must be a map"),
])
def test_a_malformed_call_is_refused_naming_what_is_wrong(bad, message):
    with pytest.raises(ValueError) as refused:
        parse_call(bad)
    assert message in str(refused.value)


def test_args_too_deep_for_json_are_refused_when_the_call_is_journaled():
    deep: list = []
    for _ in range(2000):
        deep = [deep]
    with pytest.raises(ValueError, match="push: args nest too deeply to be sent as JSON"):
        parse_call(params(args={"to": "U1", "messages": deep}))
    assert parse_call(params(event_id=None, args={"to": "U1", "messages": deep})).fingerprint is None


def test_only_a_journaled_call_of_an_event_has_a_fingerprint_and_a_key():
    push = parse_call(params())
    assert push.key == ("ev", 1) and push.fingerprint == fingerprint("push", PUSH)
    assert push.retry_key() == retry_key("ev", 1)
    assert parse_call(params(method="profile", args={"userId": "U1"})).fingerprint is None
    alone = parse_call(params(event_id=None, call_no=7))
    assert (alone.key, alone.call_no, alone.fingerprint, alone.retry_key()) == (None, None, None, None)


def test_the_fingerprint_tells_calls_apart_and_bytes_are_content():
    assert fingerprint("push", PUSH) == fingerprint("push", {"messages": TEXT, "to": "U1"})   # key order
    assert fingerprint("push", PUSH) != fingerprint("multicast", PUSH)
    assert fingerprint("call", {"body": b"\x00"}) != fingerprint("call", {"body": b"\x01"})


def test_a_calls_age_is_counted_from_when_its_event_came():
    call = parse_call(params(context={"received_at": 10_000}))
    assert call.age_s(now=15.0) == 5.0
    assert parse_call(params()).age_s(now=15.0) == 0.0     # no received_at: as young as can be
