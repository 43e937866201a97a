"""Users told to wait during a backlog: LINE's loading animation for every one-to-one chat whose
oldest event has waited `loading_after_s` unanswered (docs/ratelimiter.md, "Users told to wait").

About once a second (LOADING_TICK_S) one indexed read of the store (`Store.waiting_chats`: each
conversation's oldest event not yet acked, one-to-one chats only) says which chats wait; the
rule (`LoadingPlan`) starts the animation for a chat once, again when its animation is about to
end (REFRESH_AHEAD_S) while it still waits, and again when it waits for a newer event (the reply
to the older one ended the animation). Its calls go in the `loading` bucket at its own rate and
yield (buckets.Scheduler `yields`): never ahead of a real call. The cost is
one read a second, not one per event, and one call per waiting chat per `loading_seconds`.

While loading calls from the last round still wait for a sender (every sender busy with real
calls), no new ones are queued: the queue of them stays one round long.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from frontdesk.store import StoreError

from .buckets import Scheduler
from .calls import Call, Send
from .line_api import build_request
from .stats import Counters

log = logging.getLogger("frontdesk.ratelimiter")

LOADING = "loading"            # the method and its bucket (protocol/line_endpoints.py)
LOADING_TICK_S = 1.0           # how often the store is asked which chats wait
REFRESH_AHEAD_S = 2.0          # a waiting chat's animation is started again this long before it ends
MAX_CHATS = 2000               # chats read per round (at LINE's 100 starts/s: 20 s of starts)


class LoadingPlan:
    """Which waiting chats to start the animation for now; no I/O, times given (monotonic s)."""

    def __init__(self, seconds: int):
        self.seconds = seconds
        self._shown: dict[str, tuple[int, float]] = {}   # chat -> (its waiting event's received_at, shown until)

    def due(self, waiting: list[tuple[str, int]], now: float) -> list[str]:
        """The chats of `waiting` ((user ID, received_at of its oldest unacked event)) to start it
        for; a chat no longer waiting is forgotten (LINE ended its animation with the reply)."""
        starts, shown = [], {}
        for chat, received_at in waiting:
            last = self._shown.get(chat)
            if last is None or last[0] != received_at or last[1] - now <= REFRESH_AHEAD_S:
                starts.append(chat)
                last = (received_at, now + self.seconds)
            shown[chat] = last
        self._shown = shown
        return starts


class Loading:
    """Asks the store which chats wait and queues their loading animations, every LOADING_TICK_S
    on the event loop (the read on a thread: a store read never blocks the loop)."""

    def __init__(self, store, scheduler: Scheduler, counters: Counters, after_s: float, seconds: int,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic):
        self._store = store
        self._scheduler = scheduler
        self._counters = counters
        self._after_ms = int(after_s * 1000)
        self._seconds = seconds
        self._plan = LoadingPlan(seconds)
        self._clock, self._monotonic = clock, monotonic
        self._timer: asyncio.TimerHandle | None = None
        self._reading = False
        self._failing = False
        self.waiting = 0            # chats waiting at the last round

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = loop.call_later(LOADING_TICK_S, self._tick, loop)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = loop.call_later(LOADING_TICK_S, self._tick, loop)
        if self._reading or len(self._scheduler.queue_for(LOADING)):
            return   # the last read is still out, or its calls still wait for a sender
        self._reading = True
        cutoff = int(self._clock() * 1000) - self._after_ms
        loop.run_in_executor(None, self._store.waiting_chats, cutoff, MAX_CHATS).add_done_callback(self._read)

    def _read(self, future: asyncio.Future) -> None:
        self._reading = False
        if self._timer is None:
            return   # closed meanwhile: the queues are being finished
        try:
            waiting = future.result()
        except StoreError as exc:
            if not self._failing:
                log.warning("event=loading_read_failed reason=%r action=retry_each_second", str(exc))
            self._failing = True
            return
        if self._failing:
            log.info("event=loading_read_recovered")
            self._failing = False
        self.waiting = len(waiting)
        self._counters.add("loading_rounds")
        for chat in self._plan.due(waiting, self._monotonic()):
            args = {"chatId": chat, "loadingSeconds": self._seconds}
            call = Call(None, None, LOADING, args, {}, None)
            self._scheduler.submit(LOADING, Send(build_request(LOADING, args, None), [call], LOADING))
            self._counters.add("loading_starts")
