"""Which queued calls the rate limiter withdraws after the dispatcher's `cancel`
(ratelimiter/calls.py, may_withdraw), in-process."""
from __future__ import annotations

from frontdesk.ratelimiter.calls import Call, Send, may_withdraw
from frontdesk.ratelimiter.line_api import HttpRequest

PUSH = HttpRequest("POST", "/v2/bot/message/push", {"to": "U1", "messages": []}, retry_key="k")


def call(event_id: str | None = "ev", cancelled: bool = True) -> Call:
    made = Call(event_id, 1 if event_id else None, "push", {}, {}, None)
    made.cancelled = cancelled
    return made


def test_a_call_of_an_event_nobody_waits_for_that_has_not_gone_out_is_withdrawn():
    assert may_withdraw(Send(PUSH, [call()], "push"))


def test_a_call_someone_still_waits_for_goes_out():
    assert not may_withdraw(Send(PUSH, [call(cancelled=False)], "push"))


def test_a_batch_goes_out_while_one_member_is_still_wanted():
    assert not may_withdraw(Send(PUSH, [call(), call(cancelled=False)], "multicast"))
    assert may_withdraw(Send(PUSH, [call(), call()], "multicast"))


def test_a_call_made_for_no_event_is_made_anyway():
    assert not may_withdraw(Send(PUSH, [call(event_id=None)], "push"))


def test_a_call_that_went_out_once_or_was_journaled_goes_on():
    tried = Send(PUSH, [call()], "push")
    tried.attempts = 1
    assert not may_withdraw(tried)
    journaled = Send(PUSH, [call()], "push")
    journaled.journal = False      # "started" written (or a repeat from the journal)
    assert not may_withdraw(journaled)
