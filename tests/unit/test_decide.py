"""What an attempt's outcome leads to (ratelimiter/outcome.py decide), case by case: another
attempt after the backoff, the answer, a reply as a push, a batch as pushes."""
from __future__ import annotations

import pytest

from frontdesk.ratelimiter.calls import Call, Send
from frontdesk.ratelimiter.line_api import HttpRequest, HttpResponse
from frontdesk.ratelimiter.outcome import Attempt, Next, Rules, decide

NOW = 1_000_000.0     # epoch seconds
RULES = Rules(max_retries=3, reply_max_age_s=50.0, content_max=1000)
PUSH = HttpRequest("POST", "/v2/bot/message/push", {"to": "U1"}, retry_key="key")
REPLY = HttpRequest("POST", "/v2/bot/message/reply", {"replyToken": "t"})
RICHMENU = HttpRequest("POST", "/v2/bot/richmenu", {})
INFO = HttpRequest("GET", "/v2/bot/info")
MULTICAST = HttpRequest("POST", "/v2/bot/message/multicast", {"to": ["U1", "U2"]}, retry_key="batch")


def send(request: HttpRequest, sent_as: str, attempts: int = 1, repeat: bool = False, members: int = 1,
         age_s: float = 2.0) -> Send:
    calls = [Call(f"ev{n}", 1, sent_as, {}, {"received_at": (NOW - age_s) * 1000}, None) for n in range(members)]
    made = Send(request, calls, sent_as, enqueued_at=0.0)
    made.attempts, made.repeat = attempts, repeat
    return made


def answered(status: int, body=None, headers=None) -> Attempt:
    return Attempt(HttpResponse(status, {} if body is None else body, "application/json", headers or {}))


def unanswered(sent: bool, reason: str = "no answer from api.line.me: connection lost") -> Attempt:
    return Attempt(None, reason, sent)


# --- LINE answered ------------------------------------------------------------------------------------
@pytest.mark.parametrize("status", [200, 204])
def test_a_2xx_succeeds(status):
    assert decide(answered(status), send(PUSH, "push"), RULES, NOW).next is Next.SUCCEED


def test_a_409_to_a_retry_key_succeeds_it_is_a_repeat_line_dropped():
    assert decide(answered(409), send(PUSH, "push"), RULES, NOW).next is Next.SUCCEED


def test_a_409_without_a_retry_key_is_lines_refusal():
    decision = decide(answered(409, {"message": "conflict"}), send(RICHMENU, "call"), RULES, NOW)
    assert decision.next is Next.ANSWER and decision.refused
    assert decision.error == {"message": "conflict", "status": 409, "retryable": False}


@pytest.mark.parametrize("attempts, delay_s", [(1, 0.2), (2, 0.4), (3, 0.8)])
def test_a_429_pauses_the_endpoint_with_a_doubling_delay_and_goes_again(attempts, delay_s):
    decision = decide(answered(429), send(PUSH, "push", attempts=attempts), RULES, NOW)
    assert decision.next is Next.RETRY and decision.pause_endpoint and decision.delay_s == pytest.approx(delay_s)
    assert not decision.reached_line   # LINE did nothing with it


def test_a_429_after_the_last_retry_is_a_retryable_error_with_lines_message():
    decision = decide(answered(429, {"message": "The API rate limit has been exceeded. Try again later."}),
                      send(PUSH, "push", attempts=4), RULES, NOW)
    assert decision.next is Next.ANSWER and not decision.refused
    assert decision.error == {"message": "The API rate limit has been exceeded. Try again later.", "status": 429,
                              "retryable": True}


def test_the_delay_is_capped():
    decision = decide(answered(500), send(PUSH, "push", attempts=30), Rules(100, 50.0, 1000), NOW)
    assert decision.delay_s == 5.0


@pytest.mark.parametrize("request_, sent_as", [(PUSH, "push"), (REPLY, "reply"), (INFO, "call")])
def test_a_5xx_goes_again_when_line_drops_a_repeat_and_may_have_reached_line(request_, sent_as):
    decision = decide(answered(503), send(request_, sent_as, attempts=2), RULES, NOW)
    assert decision.next is Next.RETRY and decision.delay_s == pytest.approx(0.1) and not decision.pause_endpoint
    assert decision.reached_line


def test_a_5xx_of_a_post_line_cannot_recognise_is_not_sent_again():
    decision = decide(answered(500, {"message": "Internal error"}), send(RICHMENU, "call"), RULES, NOW)
    assert decision.next is Next.ANSWER and decision.reached_line
    assert decision.error == {"message": "Internal error (LINE may have acted on it; not sent again)",
                              "status": 500, "retryable": False}


def test_a_5xx_after_the_last_retry_is_retryable_when_a_repeat_is_safe():
    decision = decide(answered(500), send(PUSH, "push", attempts=4), RULES, NOW)
    assert decision.next is Next.ANSWER and decision.error["retryable"] is True and decision.reached_line
    assert decision.error["message"] == "LINE API answered HTTP 500"


def test_a_content_download_over_the_limit_names_the_limit():
    over = Attempt(HttpResponse(413, None, "image/png", {}))
    decision = decide(over, send(HttpRequest("GET", "/v2/bot/message/1/content", data_api=True), "content"),
                      RULES, NOW)
    assert decision.next is Next.ANSWER and decision.error["status"] == 413
    assert "larger than the limit of 1000 bytes (content_max_bytes" in decision.error["message"]


def test_other_4xx_are_lines_refusal_passed_on_not_retryable():
    decision = decide(answered(400, {"message": "The request body has 1 error(s)", "details": [{"property": "to"}]}),
                      send(PUSH, "push"), RULES, NOW)
    assert decision.next is Next.ANSWER and decision.refused
    assert decision.error == {"message": "The request body has 1 error(s)", "status": 400, "retryable": False,
                              "details": [{"property": "to"}]}


def test_a_multicast_of_batched_pushes_refused_whole_is_split_into_pushes():
    decision = decide(answered(400, {"message": "bad member"}), send(MULTICAST, "multicast", members=2), RULES, NOW)
    assert decision.next is Next.SPLIT_BATCH and decision.error["message"] == "bad member"


def test_a_handlers_own_multicast_refused_is_answered():
    decision = decide(answered(400, {"message": "bad"}), send(MULTICAST, "multicast", members=1), RULES, NOW)
    assert decision.next is Next.ANSWER


# --- a refused reply token ------------------------------------------------------------------------------
TOKEN_REFUSED = {"message": "Invalid reply token"}


def test_a_refused_token_no_attempt_of_ours_used_sends_the_messages_as_a_push():
    decision = decide(answered(400, TOKEN_REFUSED), send(REPLY, "reply"), RULES, NOW)
    assert decision.next is Next.AS_PUSH and decision.error["message"] == "Invalid reply token"


def test_a_refused_token_after_an_ambiguous_attempt_within_its_lifetime_was_delivered_before():
    decision = decide(answered(400, TOKEN_REFUSED), send(REPLY, "reply", repeat=True, age_s=10), RULES, NOW)
    assert decision.next is Next.DELIVERED_BEFORE and decision.age_s == pytest.approx(10)


def test_a_refused_token_after_an_ambiguous_attempt_past_its_lifetime_is_outcome_unknown():
    decision = decide(answered(400, TOKEN_REFUSED), send(REPLY, "reply", repeat=True, age_s=70), RULES, NOW)
    assert decision.next is Next.REPLY_UNKNOWN and decision.error["retryable"] is False
    assert decision.error["message"].startswith("Invalid reply token: outcome unknown: an earlier attempt may have")
    assert "70 s old (past reply_max_age_s=50)" in decision.error["message"]


def test_a_refused_token_of_a_push_is_just_a_refusal():
    decision = decide(answered(400, TOKEN_REFUSED), send(PUSH, "push"), RULES, NOW)
    assert decision.next is Next.ANSWER and decision.refused


# --- no answer ------------------------------------------------------------------------------------------
def test_a_request_that_never_left_goes_again_and_reached_nothing():
    decision = decide(unanswered(sent=False), send(RICHMENU, "call"), RULES, NOW)
    assert decision.next is Next.RETRY and decision.delay_s == pytest.approx(0.05) and not decision.reached_line


@pytest.mark.parametrize("request_, sent_as", [(PUSH, "push"), (REPLY, "reply"), (INFO, "call")])
def test_a_sent_request_line_drops_a_repeat_of_goes_again(request_, sent_as):
    decision = decide(unanswered(sent=True), send(request_, sent_as), RULES, NOW)
    assert decision.next is Next.RETRY and decision.reached_line


def test_a_sent_post_line_cannot_recognise_is_outcome_unknown_and_not_sent_again():
    decision = decide(unanswered(sent=True), send(RICHMENU, "call"), RULES, NOW)
    assert decision.next is Next.ANSWER and decision.reached_line
    assert decision.error["status"] == 0 and decision.error["retryable"] is False
    assert decision.error["message"].endswith("whether LINE acted on it is unknown (not sent again)")


def test_no_answer_after_the_last_retry_says_whether_line_may_have_acted():
    never = decide(unanswered(sent=False, reason="cannot connect"), send(PUSH, "push", attempts=4), RULES, NOW)
    assert never.error == {"message": "cannot connect", "status": 0, "retryable": True}
    sent = decide(unanswered(sent=True), send(REPLY, "reply", attempts=4), RULES, NOW)
    assert sent.error["retryable"] is True
    assert "LINE may have acted on it (a repeat is safe: a reply token works once)" in sent.error["message"]
