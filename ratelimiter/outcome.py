"""What an attempt's outcome allows next: the answer, another attempt, a reply as a push, or a
batch split into pushes. Pure decisions (no I/O, no clock of their own), so the at-most-once
rules are tested case by case on their own (tests/unit/test_outcome.py, test_decide.py);
ratelimiter/sending.py carries them out.

An attempt is *ambiguous* when the request may have reached LINE and no answer says what LINE
did: the connection failed after the request was sent, or LINE answered 5xx. After that, only a
request LINE drops a repeat of may go again (a retry key, a GET, a single-use reply token), and a
reply must never become a push while its first attempt may have been delivered: a reply token
works once, so LINE refusing it as invalid within its lifetime means an earlier attempt used it.
Past its lifetime the refusal cannot tell "used" from "expired", and the outcome stays unknown
(docs/ratelimiter.md, "Reply vs push").
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from frontdesk.protocol.backoff import doubling_delay
from frontdesk.protocol.line_endpoints import TABLE
from frontdesk.protocol.rpc import api_error

from .line_api import HttpRequest, HttpResponse, response_error

BACKOFF_FIRST_S = 0.05      # first retry delay after a 5xx or connection error; doubles each time
BACKOFF_429_FIRST_S = 0.2   # first pause of an endpoint after a 429; doubles each time
BACKOFF_MAX_S = 5.0


def why_a_repeat_is_dropped(request: HttpRequest, sent_as: str) -> str | None:
    """Why LINE would not act twice on this request sent again, or None when it might."""
    if request.retry_key is not None:
        return "LINE drops a repeat of its retry key"
    if request.method == "GET":
        return "a GET changes nothing"
    if TABLE.uses_reply_token(sent_as):
        return "a reply token works once"
    return None


def connection_error_text(reason: str, sent: bool, repeat_dropped_because: str | None) -> str:
    """The message of a call that got no answer, saying whether it may be sent again."""
    if not sent:
        return reason
    if repeat_dropped_because is not None:
        return (f"{reason}; the request was sent, so LINE may have acted on it (a repeat is safe: "
                f"{repeat_dropped_because})")
    return f"{reason}; the request was sent, so whether LINE acted on it is unknown (not sent again)"


def reply_goes_as(age_s: float, alive_s: float, maybe_delivered: bool) -> str:
    """"reply" or "push" for a reply call about to go out. A token older than alive_s
    (reply_max_age_s) would be refused, so the messages go as a push, unless an earlier attempt
    may have delivered them: then the token is tried (a refusal settles it, refused_reply)."""
    if age_s > alive_s and not maybe_delivered:
        return "push"
    return "reply"


class Refusal(Enum):
    """What LINE's "Invalid reply token" means for the reply."""
    DELIVERED = "delivered"   # an earlier attempt of ours used the token: done, nothing more to send
    PUSH = "push"             # no attempt of ours can have used it: expired or never valid, push instead
    UNKNOWN = "unknown"       # an earlier attempt may have used it, and it may also have expired


def refused_reply(age_s: float, alive_s: float, maybe_delivered: bool) -> Refusal:
    """The meaning of a refused reply token, `age_s` after its event, when tokens are taken to
    live at least `alive_s` (reply_max_age_s)."""
    if not maybe_delivered:
        return Refusal.PUSH
    if age_s <= alive_s:
        return Refusal.DELIVERED
    return Refusal.UNKNOWN


# --- one attempt's outcome, decided ------------------------------------------------------------------
@dataclass(frozen=True)
class Rules:
    """The settings the decisions read."""
    max_retries: int        # api_max_retries
    reply_max_age_s: float  # how long a reply token is taken to live
    content_max: int        # the largest content download (content_max_bytes, within a frame)


@dataclass(frozen=True)
class Attempt:
    """What one attempt ended with: LINE's answer, or none (`reason`; `sent`: the request may
    have left, so LINE may have acted on it)."""
    response: HttpResponse | None
    reason: str = ""
    sent: bool = False

    @property
    def status(self) -> int:
        return self.response.status if self.response is not None else 0


class Next(Enum):
    RETRY = "retry"                          # queue it again after `delay_s`
    ANSWER = "answer"                        # final: the calls get `error`
    SUCCEED = "succeed"                      # final: the calls get LINE's answer (results.py)
    DELIVERED_BEFORE = "delivered_before"    # final: an earlier attempt used the reply token
    REPLY_UNKNOWN = "reply_unknown"          # final: the token may have been used by an earlier attempt, or expired
    AS_PUSH = "as_push"                      # the refused reply's messages go as a push
    SPLIT_BATCH = "split_batch"              # LINE refused the multicast whole: each member as a push


@dataclass(frozen=True)
class Decision:
    next: Next
    error: dict | None = None        # ANSWER: the calls' error; SPLIT_BATCH: LINE's refusal
    delay_s: float = 0.0             # RETRY
    pause_endpoint: bool = False     # RETRY after a 429: the whole endpoint waits
    reached_line: bool = False       # this attempt may have reached LINE (the Send is a repeat from now on)
    refused: bool = False            # ANSWER: LINE refused the request (a 4xx, passed on as it is)
    age_s: float = 0.0               # the reply's age, for a refused reply token


def decide(attempt: Attempt, send, rules: Rules, now: float) -> Decision:
    """The next step for `send` (calls.Send, its `attempts` counting this one) after `attempt`,
    at epoch time `now` (a reply token's age)."""
    if attempt.response is None:
        return _unanswered(attempt, send, rules)
    response, status = attempt.response, attempt.status
    if status == 429:   # LINE did nothing: the endpoint waits, the call goes again
        if send.attempts <= rules.max_retries:
            return Decision(Next.RETRY, delay_s=doubling_delay(BACKOFF_429_FIRST_S, send.attempts, BACKOFF_MAX_S),
                            pause_endpoint=True)
        return Decision(Next.ANSWER, response_error(response, retryable=True))
    if status >= 500:   # LINE may have acted on it
        safe = why_a_repeat_is_dropped(send.request, send.sent_as) is not None
        if safe and send.attempts <= rules.max_retries:
            return Decision(Next.RETRY, delay_s=doubling_delay(BACKOFF_FIRST_S, send.attempts, BACKOFF_MAX_S),
                            reached_line=True)
        error = response_error(response, retryable=safe)
        if not safe:
            error["message"] += " (LINE may have acted on it; not sent again)"
        return Decision(Next.ANSWER, error, reached_line=True)
    if 200 <= status < 300 or (status == 409 and send.request.retry_key):
        return Decision(Next.SUCCEED)   # a 409 to a retry key: LINE dropped a repeat
    if status == 413 and response.body is None:
        return Decision(Next.ANSWER, api_error(
            f"content is larger than the limit of {rules.content_max} bytes (content_max_bytes, "
            "and at most max_frame_bytes)", 413))
    error = response_error(response, retryable=False)
    if send.sent_as == "reply" and status == 400 and "invalid reply token" in error["message"].lower():
        return _refused_reply(error, send, rules, now)
    if send.sent_as == "multicast" and status == 400 and len(send.calls) > 1:
        return Decision(Next.SPLIT_BATCH, error)
    return Decision(Next.ANSWER, error, refused=True)


def _unanswered(attempt: Attempt, send, rules: Rules) -> Decision:
    """No answer: sent again only when it never left or LINE drops a repeat (outcome unknown else)."""
    repeat_dropped_because = why_a_repeat_is_dropped(send.request, send.sent_as)
    safe = not attempt.sent or repeat_dropped_because is not None
    if safe and send.attempts <= rules.max_retries:
        return Decision(Next.RETRY, delay_s=doubling_delay(BACKOFF_FIRST_S, send.attempts, BACKOFF_MAX_S),
                        reached_line=attempt.sent)
    message = connection_error_text(attempt.reason, attempt.sent, repeat_dropped_because)
    return Decision(Next.ANSWER, api_error(message, 0, retryable=safe), reached_line=attempt.sent)


def _refused_reply(error: dict, send, rules: Rules, now: float) -> Decision:
    """LINE refused the reply token (used or expired). After an attempt that may have reached
    LINE, a refusal within the token's lifetime means that attempt delivered the reply; past it
    the outcome is unknown and nothing more is sent. Otherwise nothing was delivered: the
    messages go as a push."""
    age_s = send.calls[0].age_s(now)
    meaning = refused_reply(age_s, rules.reply_max_age_s, send.repeat)
    if meaning is Refusal.DELIVERED:
        return Decision(Next.DELIVERED_BEFORE, age_s=age_s)
    if meaning is Refusal.UNKNOWN:
        return Decision(Next.REPLY_UNKNOWN, dict(error, retryable=False, message=(
            f"{error['message']}: outcome unknown: an earlier attempt may have delivered this reply, "
            f"but the token is {age_s:.0f} s old (past reply_max_age_s={rules.reply_max_age_s:g}) and "
            "may have expired unused; not sent as a push (at most once)")), age_s=age_s)
    return Decision(Next.AS_PUSH, error, age_s=age_s)
