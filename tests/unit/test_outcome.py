"""The at-most-once rules for a reply and for sending again (ratelimiter/outcome.py), in-process."""
from __future__ import annotations

import pytest

from frontdesk.ratelimiter.line_api import HttpRequest
from frontdesk.ratelimiter.outcome import (Refusal, connection_error_text, refused_reply, reply_goes_as,
                                           why_a_repeat_is_dropped)

ALIVE_S = 50.0


def test_after_an_ambiguous_attempt_a_token_refused_within_its_lifetime_means_delivered():
    assert refused_reply(age_s=3.0, alive_s=ALIVE_S, maybe_delivered=True) is Refusal.DELIVERED
    assert refused_reply(age_s=ALIVE_S, alive_s=ALIVE_S, maybe_delivered=True) is Refusal.DELIVERED


def test_after_an_ambiguous_attempt_a_token_refused_past_its_lifetime_leaves_the_outcome_unknown():
    assert refused_reply(age_s=ALIVE_S + 0.1, alive_s=ALIVE_S, maybe_delivered=True) is Refusal.UNKNOWN


@pytest.mark.parametrize("age_s", [0.0, 10.0, 70.0])
def test_a_token_no_attempt_of_ours_can_have_used_is_refused_unused_so_the_reply_goes_as_a_push(age_s):
    assert refused_reply(age_s=age_s, alive_s=ALIVE_S, maybe_delivered=False) is Refusal.PUSH


def test_a_reply_goes_as_a_push_only_when_its_token_is_too_old_and_no_attempt_may_have_delivered_it():
    assert reply_goes_as(age_s=10.0, alive_s=ALIVE_S, maybe_delivered=False) == "reply"
    assert reply_goes_as(age_s=60.0, alive_s=ALIVE_S, maybe_delivered=False) == "push"
    assert reply_goes_as(age_s=60.0, alive_s=ALIVE_S, maybe_delivered=True) == "reply"   # the token settles it
    assert reply_goes_as(age_s=10.0, alive_s=ALIVE_S, maybe_delivered=True) == "reply"


@pytest.mark.parametrize("request_, sent_as, why", [
    (HttpRequest("POST", "/v2/bot/message/push", {}, retry_key="k"), "push", "retry key"),
    (HttpRequest("GET", "/v2/bot/info", None), "call", "GET"),
    (HttpRequest("POST", "/v2/bot/message/reply", {}), "reply", "reply token works once"),
])
def test_a_repeat_is_safe_with_a_retry_key_a_get_or_a_reply_token(request_, sent_as, why):
    assert why in why_a_repeat_is_dropped(request_, sent_as)


def test_a_post_without_retry_key_may_be_acted_on_twice():
    assert why_a_repeat_is_dropped(HttpRequest("POST", "/v2/bot/richmenu", {}), "call") is None


def test_a_sent_request_that_may_go_again_never_says_not_sent_again():
    text = connection_error_text("no answer", sent=True, repeat_dropped_because="a reply token works once")
    assert "not sent again" not in text
    assert "LINE may have acted on it" in text and "a reply token works once" in text


def test_a_sent_request_that_may_not_go_again_says_so():
    text = connection_error_text("no answer", sent=True, repeat_dropped_because=None)
    assert text.endswith("whether LINE acted on it is unknown (not sent again)")


def test_a_request_that_never_left_is_described_by_its_reason_alone():
    assert connection_error_text("cannot connect", sent=False, repeat_dropped_because=None) == "cannot connect"
