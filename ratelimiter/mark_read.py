"""Mark as read (setting `mark_as_read`): the dispatcher tells the rate limiter the
`markAsReadToken` of each message event a handler acked (`[2, "mark_as_read", [[token, …]]]`), and
the tokens go to LINE's `POST /v2/bot/chat/markAsRead` at the lowest priority: only while no reply
waits in its queue, at most BATCH of them at a time (each an OwnCall through the usual queues).
A read receipt is a courtesy: one that fails is logged and not sent again.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Callable

from .buckets import Scheduler
from .calls import Call, OwnCall
from .stats import Counters

log = logging.getLogger("frontdesk.ratelimiter")

BATCH = 20              # tokens handed to the queues at once
RECHECK_S = 0.05        # while replies wait, look again this much later
MAX_WAITING = 100_000   # tokens kept; beyond, the oldest are dropped (a courtesy, not a duty)


class MarkAsRead:
    """Tokens waiting to be marked read, sent behind the replies."""

    def __init__(self, scheduler: Scheduler, route: Callable[[Call], None], counters: Counters):
        self._scheduler = scheduler
        self._route = route
        self._counters = counters
        self._tokens: deque[str] = deque(maxlen=MAX_WAITING)
        self._out = 0
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def stop(self) -> None:
        """The input ended: tokens not sent yet are dropped (the events are acked; nothing is owed)."""
        if self._tokens:
            log.info("event=mark_as_read_dropped tokens=%d reason=stopping", len(self._tokens))
        self._tokens.clear()
        if self._timer is not None:
            self._timer.cancel()
        self._loop = None

    def add(self, tokens) -> None:
        self._tokens.extend(t for t in tokens if isinstance(t, str) and t)
        self._send()

    def _send(self) -> None:
        self._timer = None
        if self._loop is None or not self._tokens or self._out >= BATCH:
            return
        if len(self._scheduler.queue_for("reply")):   # never ahead of a reply
            self._timer = self._loop.call_later(RECHECK_S, self._send)
            return
        while self._tokens and self._out < BATCH:
            self._out += 1
            self._route(OwnCall("mark_as_read", {"markAsReadToken": self._tokens.popleft()}, self._answered))

    def _answered(self, error, result) -> None:
        self._out -= 1
        if error is None:
            self._counters.add("marked_as_read")
        else:
            self._counters.add("mark_as_read_failed")
            log.warning("event=mark_as_read_failed status=%s reason=%r", error.get("status"), error.get("message"))
        if self._timer is None:
            self._send()
