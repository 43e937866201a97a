"""What an attempt's outcome allows next: sending again, a reply as a push, or nothing. Pure
decisions (no I/O), so the at-most-once rules are tested on their own (tests/unit/test_outcome.py).

An attempt is *ambiguous* when the request may have reached LINE and no answer says what LINE
did: the connection failed after the request was sent, or LINE answered 5xx. After that, only a
request LINE drops a repeat of may go again (a retry key, a GET, a single-use reply token), and a
reply must never become a push while its first attempt may have been delivered: a reply token
works once, so LINE refusing it as invalid within its lifetime means an earlier attempt used it.
Past its lifetime the refusal cannot tell "used" from "expired", and the outcome stays unknown
(docs/ratelimiter.md, "Reply vs push").
"""
from __future__ import annotations

from enum import Enum

from .line_api import HttpRequest


def why_a_repeat_is_dropped(request: HttpRequest, sent_as: str) -> str | None:
    """Why LINE would not act twice on this request sent again, or None when it might."""
    if request.retry_key is not None:
        return "LINE drops a repeat of its retry key"
    if request.method == "GET":
        return "a GET changes nothing"
    if sent_as == "reply":
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
