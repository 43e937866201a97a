"""What the rate limiter works on: a handler's call (`Call`), checked as it comes off the pipe
(`parse_call`), and an HTTP request with the calls it answers (`Send`).

A Call lives from its frame to its answer (and in the journal's "in flight" until its outcome is
written); a Send from its queue to its last attempt. A batched multicast is one Send answering
many Calls; a repeat of a call still in flight joins the first Call's waiting msgids.
"""
from __future__ import annotations

import hashlib
import json
import time

from frontdesk.protocol.line_endpoints import TABLE, EndpointTable

from .line_api import HttpRequest, batch_request, build_request, retry_key

RECOVERED = "recovered"   # the method of a Call rebuilt from a journal entry after a restart


class Call:
    """One handler call (or a journal entry of one, recovered after a restart), and who waits for it."""
    __slots__ = ("event_id", "call_no", "method", "args", "context", "fingerprint", "msgids", "answer",
                 "repeat", "cancelled")

    def __init__(self, event_id, call_no, method, args, context, fp):
        self.event_id, self.call_no, self.method = event_id, call_no, method
        self.args, self.context, self.fingerprint = args, context, fp
        self.msgids: list[int] = []
        self.answer: tuple | None = None    # (error, result) once known
        self.repeat = False   # an earlier attempt may have reached LINE (a reply's token may be used)
        self.cancelled = False   # everyone who asked for it is gone (the dispatcher's `cancel`)

    @property
    def key(self) -> tuple[str, int] | None:
        """(event id, call number): the call journal's key; None for a call made for no event."""
        return None if self.event_id is None else (self.event_id, self.call_no)

    def age_s(self, now: float) -> float:
        """Seconds since the call's event reached frontdesk at epoch `now` (its reply token's age,
        near enough)."""
        return now - self.context.get("received_at", now * 1000) / 1000.0

    def retry_key(self) -> str | None:
        return retry_key(*self.key) if self.key is not None else None


class OwnCall(Call):
    """A call the rate limiter makes of its own accord (the quota, a group's member count): no
    handler waits for it, its answer goes to `answered(error, result)`. `needed_at_stop` False:
    a read nothing depends on once the input has ended (it is dropped, not waited for)."""
    __slots__ = ("answered", "needed_at_stop")

    def __init__(self, method: str, args: dict, answered, needed_at_stop: bool = True):
        super().__init__(None, None, method, args, {}, None)
        self.answered = answered
        self.needed_at_stop = needed_at_stop


class Send:
    """One HTTP request to send and the calls it answers (several for a batched multicast)."""
    __slots__ = ("request", "calls", "sent_as", "attempts", "enqueued_at", "journal", "repeat")

    def __init__(self, request: HttpRequest, calls: list[Call], sent_as: str, enqueued_at: float | None = None):
        self.request, self.calls, self.sent_as = request, calls, sent_as
        self.attempts = 0
        self.enqueued_at = time.monotonic() if enqueued_at is None else enqueued_at
        self.journal = True     # write "started" before the next attempt
        self.repeat = False     # an earlier attempt (or a killed rate limiter) may have reached LINE

    @property
    def endpoint(self) -> str:
        return self.request.endpoint

    @classmethod
    def of_batch(cls, calls: list[Call]) -> "Send":
        """A closed batch of pushes (batcher.py): one multicast, or the plain push it was alone."""
        if len(calls) == 1:
            call = calls[0]
            return cls(build_request("push", call.args, call.retry_key()), calls, "push")
        return cls(batch_request([(call.args, call.key) for call in calls]), calls, "multicast")


def unneeded_at_stop(send) -> bool:
    """A Send only of the rate limiter's own reads that nothing needs once its input has ended
    (LINE's quota, a chat's member count): at stop it is dropped rather than sent or retried, so a
    stop while LINE cannot be reached does not wait out their retries (4-5 s)."""
    return all(isinstance(call, OwnCall) and not call.needed_at_stop for call in send.calls)


def may_withdraw(send: Send) -> bool:
    """A Send whose calls were all cancelled (the handlers that asked are gone), each made for an
    event, and that has not gone out, is not sent: nothing of it was journaled, and the event's
    next delivery makes its calls again. A call made for no event is made anyway (nobody else
    would), its answer dropped; one that went out once goes on (its journal entry says so)."""
    return send.journal and not send.attempts and all(c.cancelled and c.key is not None for c in send.calls)


def fingerprint(method: str, args) -> str:
    """Identifies a call's content, so a journal entry is never used to answer a different call.
    Raises ValueError for args nested too deep for JSON (LINE takes JSON bodies)."""
    try:
        text = json.dumps([method, args], sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          default=lambda value: value.hex() if isinstance(value, bytes) else repr(value))
    except RecursionError:
        raise ValueError(f"{method}: args nest too deeply to be sent as JSON") from None
    return hashlib.sha256(text.encode()).hexdigest()


def parse_call(params, table: EndpointTable = TABLE) -> Call:
    """The params of a `call` request, checked; raises ValueError naming what is wrong. The args
    stand beside the call map, not in it, so the relayed frame nests no deeper than the handler's
    own request: whatever the dispatcher could decode, the rate limiter can decode too."""
    if not isinstance(params, list) or len(params) != 2 or not isinstance(params[0], dict):
        raise ValueError("call params must be [ {event_id, call_no, method, context}, args ]")
    call, args = params
    event_id, call_no, method = call.get("event_id"), call.get("call_no"), call.get("method")
    context = call.get("context") or {}
    if event_id is not None and (not isinstance(event_id, str) or not event_id):
        raise ValueError("`event_id` must be a non-empty string or nil")
    if event_id is not None and (type(call_no) is not int or call_no < 1):
        raise ValueError("`call_no` must be an integer >= 1 when `event_id` is given")
    if method not in table.names:
        raise ValueError(f"unknown API method {method!r}")
    if not isinstance(args, dict):
        raise ValueError(f"{method}: `args` must be a map")
    if not isinstance(context, dict):
        raise ValueError("`context` must be a map")
    # the fingerprint guards the journal: only journaled calls need one
    fp = fingerprint(method, args) if event_id is not None and table.journaled(method, args) else None
    return Call(event_id, call_no if event_id is not None else None, method, args, context, fp)
