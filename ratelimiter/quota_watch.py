"""The month's messages live, on the rate limiter's loop: each send LINE accepted counted as LINE
counts it (quota.py), added to the store's month count (every rate limiter's, so a restart keeps
it), compared with LINE's own figures read every `quota_poll_s`; the webhook endpoint checked on
the same timer; and what a reply whose token is too old does (`reply_expiry`).

The counting is per send, never per event: an accepted send adds to a dict, and the store gets
the sum at most every FLUSH_S (one small write), so the cost per event does not change. A push to
a group or room needs its member count: asked of LINE once per MEMBER_COUNT_TTL_S, through the
same queues as a handler's calls (an OwnCall, behind them: limiter.yields), and the push counted
when it is known.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from frontdesk.protocol.rpc import api_error

from .calls import Call, OwnCall
from .quota import (BILLED, CHAT_METHODS, DEAD_LETTER, KINDS, PUSH, UNKNOWN_RECIPIENTS, Allowance, MonthCount,
                    expired_reply_action, recipients)
from .stats import Counters
from .storewriter import StoreWriter

log = logging.getLogger("frontdesk.ratelimiter")

FLUSH_S = 0.5                 # counted sends reach the store at most this late (a kill -9 loses them)
MEMBER_COUNT_TTL_S = 600.0    # a group's member count is asked of LINE again after this
MAX_CACHED_CHATS = 10_000     # past this many, counts older than the TTL are dropped


class QuotaWatch:
    """Counts, reads LINE's figures, checks the webhook, and decides expired replies.

    Built with the rate limiter's layers; `start(loop)` reads the store's count and LINE's figures
    and starts the timer, `close()` writes what is counted. `route(call)` queues an OwnCall like a
    handler's call (router.py)."""

    def __init__(self, settings, writer: StoreWriter, route: Callable[[Call], None], counters: Counters,
                 clock: Callable[[], float] = time.time):
        self._settings = settings
        self._writer = writer
        self._route = route
        self._counters = counters
        self._clock = clock
        self.month = MonthCount(clock())
        self.line = {"quota": None, "used": None, "checked_at": None, "error": None, "month": None}
        self.webhook: dict | None = None
        self.expired = {PUSH: 0, DEAD_LETTER: 0}
        self._warned_month: str | None = None
        self._members: dict[str, tuple[int, float]] = {}        # chat id -> (member count, when asked)
        self._member_waiters: dict[str, list[str]] = {}          # chat id -> kinds of sends to count
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_timer: asyncio.TimerHandle | None = None
        self._poll_timer: asyncio.TimerHandle | None = None
        self._writing: asyncio.Future | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._poll()

    def stop_polling(self) -> None:
        """The input ended: ask LINE nothing more of our own accord."""
        if self._poll_timer is not None:
            self._poll_timer.cancel()
            self._poll_timer = None
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        self._loop = None   # nor write on a timer: close() writes the rest

    async def close(self) -> None:
        """Write what is counted (after the last sends; a member count that never came counts 1)."""
        for chat, kinds in self._member_waiters.items():
            log.warning("event=member_count_unknown chat=%s sends=%d action=counted_once_each", chat, len(kinds))
            for kind in kinds:
                self.month.add(kind, 1, self._clock())
        self._member_waiters.clear()
        self._flush()
        if self._writing is not None:
            await asyncio.wait([self._writing])

    # --- counting ----------------------------------------------------------------------------------
    def accepted(self, send) -> None:
        """LINE accepted `send` (2xx, or 409: an earlier attempt was accepted): count its messages."""
        kind = send.request.endpoint
        if kind not in KINDS:
            return
        count = recipients(kind, send.request.body)
        if isinstance(count, str):
            self._count_members(kind, count)
            return
        self._add(kind, count)
        if kind in UNKNOWN_RECIPIENTS and self._loop is not None:   # only LINE's figure knows their recipients
            self._read("quota_consumption", {}, self._usage_read)

    def _add(self, kind: str, count: int) -> None:
        self.month.add(kind, count, self._clock())
        if self._flush_timer is None and self._loop is not None:
            self._flush_timer = self._loop.call_later(FLUSH_S, self._flush)
        if kind in BILLED:   # a reply changes nothing billed
            self._check_warning()

    def _count_members(self, kind: str, chat: str) -> None:
        known = self._members.get(chat)
        if known is not None and self._clock() - known[1] < MEMBER_COUNT_TTL_S:
            self._add(kind, known[0])
            return
        waiting = self._member_waiters.setdefault(chat, [])
        waiting.append(kind)
        if len(waiting) == 1:
            method, field = CHAT_METHODS[chat[0]]
            self._read(method, {field: chat}, lambda error, result: self._members_read(chat, error, result))

    def _members_read(self, chat: str, error, result) -> None:
        count = result.get("count") if error is None and isinstance(result, dict) else None
        if isinstance(count, int) and not isinstance(count, bool):
            now = self._clock()
            if len(self._members) >= MAX_CACHED_CHATS:   # the cache holds live chats, not every chat ever
                self._members = {c: known for c, known in self._members.items() if now - known[1] < MEMBER_COUNT_TTL_S}
            self._members[chat] = (count, now)
        else:
            log.warning("event=member_count_failed chat=%s reason=%r action=counted_once",
                        chat, (error or {}).get("message", "no count in LINE's answer"))
            count = 1
        for kind in self._member_waiters.pop(chat, []):
            self._add(kind, count)

    def _flush(self) -> None:
        """Add what was counted to the store's month count; read it back (every rate limiter's)."""
        self._flush_timer = None
        pending = self.month.take_pending()
        month = self.month.month
        if month not in pending:
            pending[month] = {}   # a read of the month's totals
        future = self._writer.call(lambda store: {m: store.sends_add(m, counts) for m, counts in pending.items()})
        future.add_done_callback(lambda done: self._written(done, pending))
        self._writing = future

    def _written(self, future: asyncio.Future, pending: dict) -> None:
        if future.exception() is not None:
            log.warning("event=store_write_failed what=sends reason=%r action=kept_for_next_write",
                        str(future.exception()))
            self.month.give_back(pending)
            return
        for month, totals in future.result().items():
            self.month.stored_totals(month, totals)
        self._check_warning()

    # --- the limits ------------------------------------------------------------------------------------
    def allowance(self) -> Allowance:
        return Allowance(self.line["quota"], self.line["used"], self.month.billed(),
                         self._settings.push_budget, self._settings.quota_warning_share)

    def _check_warning(self) -> None:
        if self._warned_month == self.month.month:   # once a month
            return
        warned = self.allowance().warning()
        if warned is None:
            return
        self._warned_month = self.month.month
        allowance = self.allowance()
        log.warning("event=quota_warning month=%s used=%d limit=%r limit_messages=%d warning_share=%g "
                    "line_used=%s counted=%d", self.month.month, allowance.used, warned[0], warned[1],
                    allowance.warning_share, allowance.line_used, allowance.counted)

    def expired_reply(self, call, why: str) -> dict | None:
        """A reply whose token is too old (`why`): None when it goes as a push, else the error the
        call gets (not retryable: the handler's SDK dead-letters the event with it)."""
        action, reason = expired_reply_action(self._settings.reply_expiry, self.allowance())
        self.expired[action] += 1
        self._counters.add(f"replies_expired_{action}")
        log.info("event=reply_expired action=%s event_id=%s call_no=%s why=%r reason=%r",
                 action, call.event_id, call.call_no, why, reason)
        if action == PUSH:
            return None
        return api_error(f"reply not sent: {why}, and {reason}: not sent as a push (dead letter)")

    # --- LINE's figures and the webhook, every quota_poll_s ---------------------------------------------
    def _read(self, method: str, args: dict, answered) -> None:
        """Ask LINE; nothing needs the answer once the input has ended (unneeded_at_stop)."""
        self._route(OwnCall(method, args, answered, needed_at_stop=False))

    def _poll(self) -> None:
        if self._loop is None:
            return
        self._poll_timer = self._loop.call_later(self._settings.quota_poll_s, self._poll)
        self._read("quota", {}, self._quota_read)
        self._read("quota_consumption", {}, self._usage_read)
        self._read("webhook_endpoint", {}, self._webhook_read)
        if self._flush_timer is None:
            self._flush()

    def _quota_read(self, error, result) -> None:
        if error is not None:
            self.line["error"] = f"quota: {error.get('message')}"
            return
        limited = isinstance(result, dict) and result.get("type") == "limited"
        self.line["quota"] = result.get("value") if limited and isinstance(result.get("value"), int) else None
        self._check_warning()

    def _usage_read(self, error, result) -> None:
        usage = result.get("totalUsage") if error is None and isinstance(result, dict) else None
        if not isinstance(usage, int):
            self.line["error"] = f"consumption: {(error or {}).get('message', 'no totalUsage in the answer')}"
            return
        self.month.turn(self._clock())
        self.line.update(used=usage, checked_at=round(self._clock(), 3), error=None, month=self.month.month)
        allowance = self.allowance()
        log.info("event=quota_checked month=%s line_quota=%s line_used=%d counted=%d budget=%d remaining=%s",
                 self.month.month, allowance.line_quota, usage, allowance.counted, allowance.budget,
                 allowance.remaining)
        self._check_warning()

    def _webhook_read(self, error, result) -> None:
        endpoint = active = None
        if error is not None:
            problem = ("no webhook endpoint is set" if error.get("status") == 404
                       else f"cannot read the webhook endpoint: {error.get('message')}")
        else:
            endpoint, active = result.get("endpoint"), result.get("active")
            public_url = self._settings.public_url
            problem = ("webhooks are off (\"Use webhook\" in the LINE Developers Console)" if active is not True
                       else f"the webhook endpoint is {endpoint}, not public_url {public_url}"
                       if public_url and endpoint != public_url else None)
        before = (self.webhook or {}).get("problem", "unchecked")
        self.webhook = {"ok": problem is None, "endpoint": endpoint, "active": active, "problem": problem,
                        "checked_at": round(self._clock(), 3)}
        if problem != before:
            if problem is None:
                log.info("event=webhook_check_ok endpoint=%s", endpoint)
            else:
                log.warning("event=webhook_check_failed problem=%r", problem)

    # --- status --------------------------------------------------------------------------------------
    def stats(self) -> dict:
        self.month.turn(self._clock())
        if self.line["month"] not in (None, self.month.month) and self._loop is not None:   # last month's: read again
            self.line.update(used=None, checked_at=None, month=None)
            self._read("quota_consumption", {}, self._usage_read)
        allowance = self.allowance()
        warned = allowance.warning()
        return {"month": self.month.month, "sent": self.month.sent(), "counted": allowance.counted,
                "line": dict(self.line), "budget": allowance.budget or None, "used": allowance.used,
                "remaining": allowance.remaining, "warning": warned is not None,
                "warning_limit": warned[0] if warned else None, "webhook": self.webhook,
                "reply_expired": dict(self.expired)}
