"""One Send through its attempts: journaled "started", sent, its outcome decided (outcome.py) and
carried out, journaled "done" or "failed".

A sender of the pool (senders.py) hands each Send the scheduler gives it to `Sending.serve`. A
Send whose callers are all gone is withdrawn before it goes out (calls.may_withdraw); a Send the
journal cannot record is answered "not sent" (retryable). After an attempt the decision is one of:
another attempt (back to its queue after the backoff), the answer, a refused reply as a push, or a
refused batch as one push per member.
"""
from __future__ import annotations

import logging
import time
from typing import Callable

from frontdesk.protocol.line_endpoints import ArgsError
from frontdesk.protocol.rpc import api_error
from frontdesk.store import StoreError

from .buckets import Scheduler
from .callers import Callers
from .calls import Send, may_withdraw, unneeded_at_stop
from .http import ApiConnectionError
from .journal import CallJournal
from .line_api import LineApi, build_request, reply_as_push, trace_header
from .outcome import Attempt, Decision, Next, Rules, decide
from .profiles import Profiles
from .results import fetched_profile, result_of
from .stats import Counters

log = logging.getLogger("frontdesk.ratelimiter")

STOPPING = api_error("not sent: the rate limiter is stopping")


class Sending:
    """What happens to a Send between its queue and its answer; one instance serves every sender.

    It owns no state of its own: the calls' waiting msgids are the Callers', the journal's entries
    and calls in flight the CallJournal's, the queues the Scheduler's."""

    def __init__(self, rules: Rules, scheduler: Scheduler, journal: CallJournal, callers: Callers,
                 profiles: Profiles, counters: Counters, trace: bool = False,
                 clock: Callable[[], float] = time.time,
                 accepted: Callable[[Send], None] = lambda send: None,
                 expired_reply: Callable[[object, str], dict | None] = lambda call, why: None):
        self._rules = rules
        self._scheduler = scheduler
        self._journal = journal
        self._callers = callers
        self._profiles = profiles
        self._counters = counters
        self._trace = trace
        self._clock = clock
        self._accepted = accepted              # LINE accepted a Send: the month's count (quota_watch.py)
        self._expired_reply = expired_reply    # reply_expiry's choice: None (a push) or the call's error
        self._stopping = False

    def stop(self, dropped: list[Send]) -> None:
        """The input has ended: the rate limiter's own reads are answered unsent (`dropped`, taken
        out of the queues) and not retried any more (unneeded_at_stop)."""
        self._stopping = True
        for send in dropped:
            self._finish(send, STOPPING, None)

    async def serve(self, api: LineApi, send: Send) -> None:
        """Send until answered or queued again; a bug costs this Send, not the sender."""
        if self._withdrawn(send):
            return
        try:
            if await self._started(send) and await self._attempt(api, send):
                self._journal.finished(send)
        except Exception as exc:
            log.exception("event=send_failed endpoint=%s", send.endpoint)
            self._finish(send, api_error(f"rate limiter internal error: {exc!r}"), None)
            self._journal.finished(send)

    def _withdrawn(self, send: Send) -> bool:
        """Forget a Send that may be withdrawn (may_withdraw) instead of sending it."""
        if not may_withdraw(send):
            return False
        for call in send.calls:
            self._journal.forget(call)
        self._counters.add("calls_withdrawn", len(send.calls))
        return True

    async def _started(self, send: Send) -> bool:
        """Journal "started"; False: the journal failed and the calls were answered unsent."""
        try:
            await self._journal.started(send)
            return True
        except StoreError as exc:
            log.error("event=journal_write_failed entries=%d reason=%r action=calls_not_sent",
                      len(send.calls), str(exc))
            self._finish(send, api_error(f"call journal unavailable, not sent: {exc}", retryable=True), None)
            for call in send.calls:
                self._journal.forget(call)
            return False

    async def _attempt(self, api: LineApi, send: Send) -> bool:
        """One attempt: True when the Send is answered, False when it went back to a queue."""
        send.attempts += 1
        request = send.request
        response = None
        try:
            response = await api.send(request, self._rules.content_max if request.data_api else None,
                                      trace_header(send.calls) if self._trace else None)
            attempt = Attempt(response)
        except ApiConnectionError as exc:
            attempt = Attempt(None, str(exc), exc.sent)
        decision = decide(attempt, send, self._rules, self._clock())
        self._note(send, attempt, decision)
        send.repeat = send.repeat or decision.reached_line
        return self._carry_out(send, decision, response)

    def _note(self, send: Send, attempt: Attempt, decision: Decision) -> None:
        """Count and log an attempt."""
        endpoint, status = send.endpoint, attempt.status
        self._counters.http(endpoint, status)
        if attempt.response is None:
            log.warning("event=api_connection_error endpoint=%s attempt=%d sent=%s reason=%r",
                        endpoint, send.attempts, attempt.sent, attempt.reason)
        elif status == 429:
            self._counters.add("429s")
            log.warning("event=api_429 endpoint=%s attempt=%d", endpoint, send.attempts)
        elif status >= 500:
            log.warning("event=api_5xx endpoint=%s status=%d attempt=%d retry=%s", endpoint, status,
                        send.attempts, decision.next is Next.RETRY)
        elif status == 409 and decision.next is Next.SUCCEED:
            self._counters.add("409s")
        elif decision.refused:
            log.info("event=api_error endpoint=%s status=%d", endpoint, status)

    def _carry_out(self, send: Send, decision: Decision, response) -> bool:
        """Do what the decision says; True when the calls are answered."""
        step = decision.next
        if step is Next.RETRY and self._stopping and unneeded_at_stop(send):
            return self._finish(send, STOPPING, None)
        if step is Next.RETRY:
            self._counters.add("retries")
            self._scheduler.retry(send.endpoint, send, decision.delay_s, send.enqueued_at,
                                  pause_endpoint=decision.pause_endpoint)
            return False
        if step is Next.SUCCEED:
            profile = fetched_profile(send, response)
            if profile is not None:
                self._profiles.fetched(*profile)
            self._accepted(send)
            return self._finish(send, None, result_of(send, response))
        if step is Next.ANSWER:
            return self._finish(send, decision.error, None)
        if step is Next.DELIVERED_BEFORE:
            self._counters.add("replies_delivered_before")
            self._log_refusal(send, decision, "taken_as_delivered")
            return self._finish(send, None, {"sent_as": "reply", "delivered_by_earlier_attempt": True})
        if step is Next.REPLY_UNKNOWN:
            self._counters.add("replies_outcome_unknown")
            self._log_refusal(send, decision, "outcome_unknown")
            return self._finish(send, decision.error, None)
        if step is Next.AS_PUSH:
            return self._as_push(send, decision.error)
        return self._split_batch(send, decision.error)

    def _log_refusal(self, send: Send, decision: Decision, action: str) -> None:
        call = send.calls[0]
        log.warning("event=reply_repeat_refused event_id=%s call_no=%d age_s=%.1f action=%s",
                    call.event_id, call.call_no or 0, decision.age_s, action)

    def _as_push(self, send: Send, error: dict) -> bool:
        """LINE refused a reply token no attempt of ours used: the messages go as a push."""
        call = send.calls[0]
        refused = self._expired_reply(call, f"LINE refused the token unused ({error['message']})")
        if refused is not None:
            return self._finish(send, refused, None)
        try:
            send.request = reply_as_push(call.args, call.context.get("source"), call.retry_key())
        except ArgsError as exc:
            return self._finish(send, dict(error, message=f"{error['message']}; {exc}"), None)
        self._counters.add("replies_as_push")
        send.sent_as, send.attempts, send.journal = "push", 0, True
        self._scheduler.retry("push", send, 0.0, send.enqueued_at, pause_endpoint=False)
        return False

    def _split_batch(self, send: Send, error: dict) -> bool:
        """LINE refused the multicast as a whole (nothing sent): each member goes as its own push,
        so one bad member cannot fail the others."""
        log.info("event=batch_refused members=%d reason=%r action=push_each", len(send.calls), error["message"])
        for call in send.calls:
            single = Send(build_request("push", call.args, call.retry_key()), [call], "push")
            self._scheduler.submit(single.endpoint, single)
        return False

    def _finish(self, send: Send, error, result) -> bool:
        for call in send.calls:
            self._callers.answer(call, error, result)
        return True
