"""Per-endpoint token buckets with fair FIFO queues: the rate limiter's pacing.

LINE limits each endpoint separately and answers 429 (without processing the request) when a
limit is exceeded. Each endpoint here gets a token bucket refilled at its configured rate with a
small burst (a twentieth of a second's worth, at least one): network jitter can bunch requests
together on their way to LINE, and a small burst keeps even a bunched second inside LINE's
one-second budget. Waiting calls queue per endpoint in arrival order; when several endpoints
have tokens the oldest waiting call goes first, so no endpoint starves another; except calls that
yield (the loading animation, the rate limiter's own reads of the quota: Scheduler `yields`), which
go only when no other call may, in their own order.

Every endpoint with a row in LINE's rate-limit table has its own bucket at LINE's published figure
(protocol/line_endpoints.py: rich menu create/delete 100/h, rich menu batch 3/h, webhook test 60/h,
...); the `rate_limits` setting replaces figures endpoint by endpoint.

Senders wait on the event loop until the next token or retry is due, never polling. The clock
is injected (time.monotonic in the process), so the unit tests move time themselves.
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import deque
from typing import Callable

from frontdesk.protocol.line_endpoints import DEFAULT, LIMITS as LINE_LIMITS

BURST_SECONDS = 0.05
YIELD_AFTER_S = 1e9     # a call that yields counts as enqueued this much later
ROUNDING = 1e-9   # refills summed in floats may fall short of a whole token by this: it counts as whole


class TokenBucket:
    """`count` calls per `period_s`, a burst of BURST_SECONDS' worth (at least one), full at `now`."""

    def __init__(self, count: float, period_s: float, now: float):
        self.rate = count / period_s                    # tokens per second
        self.burst = max(1.0, self.rate * BURST_SECONDS)
        self.tokens = self.burst
        self.updated = now
        self.paused_until = 0.0                         # after a 429: LINE says we are over

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def delay(self, now: float) -> float:
        """Seconds until a token can be taken (0: now)."""
        self._refill(now)
        wait = 0.0 if self.tokens >= 1.0 - ROUNDING else (1.0 - self.tokens) / self.rate
        return max(wait, self.paused_until - now)

    def take(self, now: float) -> None:
        self._refill(now)
        self.tokens -= 1.0

    def pause(self, now: float, seconds: float) -> None:
        self.paused_until = max(self.paused_until, now + seconds)


class EndpointQueue:
    """One endpoint: its bucket, its waiting calls (FIFO; those that yield behind the others), its
    retries (due time order), its stats."""

    def __init__(self, name: str, count: float, period_s: float, now: float):
        self.name = name
        self.bucket = TokenBucket(count, period_s, now)
        self.waiting: deque = deque()   # (enqueued_at, item)
        self.yielding: deque = deque()  # (enqueued_at, item): go when `waiting` is empty
        self.retries: list = []         # heap of (due, seq, enqueued_at, item)
        self.waits = 0
        self.wait_total = 0.0
        self.wait_max = 0.0

    def __len__(self) -> int:
        return len(self.waiting) + len(self.yielding) + len(self.retries)

    def head(self, now: float) -> tuple[float, float] | None:
        """(seconds until the next item may go, the enqueue time it ranks by) or None when empty."""
        if self.retries and (self.retries[0][0] <= now or not (self.waiting or self.yielding)):
            due, _, enqueued_at, _ = self.retries[0]
            return max(due - now, self.bucket.delay(now)), enqueued_at
        if self.waiting:
            return self.bucket.delay(now), self.waiting[0][0]
        if self.yielding:
            return self.bucket.delay(now), self.yielding[0][0] + YIELD_AFTER_S
        return None

    def pop(self, now: float):
        """The item that may go (a due retry first), its token taken and its wait counted."""
        if self.retries and self.retries[0][0] <= now:
            _, _, enqueued_at, item = heapq.heappop(self.retries)
        else:
            enqueued_at, item = (self.waiting or self.yielding).popleft()
        self.bucket.take(now)
        wait = now - enqueued_at
        self.waits += 1
        self.wait_total += wait
        self.wait_max = max(self.wait_max, wait)
        return item

    def stats(self) -> dict:
        """Queue length now; wait count, mean and max since the last call (then reset)."""
        result = {"queued": len(self), "sent": self.waits,
                  "wait_ms_avg": round(1000 * self.wait_total / self.waits, 2) if self.waits else 0.0,
                  "wait_ms_max": round(1000 * self.wait_max, 2)}
        self.waits, self.wait_total, self.wait_max = 0, 0.0, 0.0
        return result


class Scheduler:
    """Hands items to the senders as their endpoints' buckets allow, oldest first.

    Runs on the rate limiter's event loop: `take()` is awaited by each sender and sleeps until an
    item may go (a timer at the next token or retry, or a submit), never polling. `clock` is
    time.monotonic in the process (the loop's clock on Linux).
    """

    def __init__(self, rate_limits: dict[str, tuple[float, float]], clock: Callable[[], float] = time.monotonic,
                 yields: Callable[[object], bool] = lambda item: False):
        self._clock = clock
        self._yields = yields   # an item that goes only when no other may (a retry of it ranks as any retry)
        limits = {**LINE_LIMITS, **rate_limits}   # an endpoint the setting leaves out keeps LINE's figure
        now = clock()
        self._queues = {name: EndpointQueue(name, count, period, now) for name, (count, period) in limits.items()}
        self._busy: dict[str, EndpointQueue] = {}   # the queues holding items: the only ones to look at
        self._seq = itertools.count()
        self._waiters: deque[asyncio.Future] = deque()
        self._closed = False
        self.budget = None   # a SharedBudget (ratelimiter/shared_budget.py), asked after each bucket

    def queue_for(self, endpoint: str) -> EndpointQueue:
        queue = self._queues.get(endpoint)
        return self._queues[DEFAULT] if queue is None else queue  # (an empty queue is falsy)

    def submit(self, endpoint: str, item) -> None:
        """Queue an item behind the waiting ones of its endpoint."""
        queue = self.queue_for(endpoint)
        (queue.yielding if self._yields(item) else queue.waiting).append((self._clock(), item))
        self._busy[queue.name] = queue
        self._wake_one()

    def retry(self, endpoint: str, item, delay_s: float, enqueued_at: float, pause_endpoint: bool) -> None:
        """Put an item back to go again after delay_s, ahead of newer calls of its endpoint.
        pause_endpoint (after a 429) holds back the whole endpoint for that time."""
        now = self._clock()
        queue = self.queue_for(endpoint)
        heapq.heappush(queue.retries, (now + delay_s, next(self._seq), enqueued_at, item))
        self._busy[queue.name] = queue
        if pause_endpoint:
            queue.bucket.pause(now, delay_s)
        self._wake_one()

    def next_ready(self, now: float):
        """(the oldest item that may go now, its token taken, or None; seconds until the next may
        go, or None when nothing waits). The scheduling rule; take() waits on it."""
        best = None
        soonest = None
        for queue in list(self._busy.values()):
            head = queue.head(now)
            if head is None:
                del self._busy[queue.name]
                continue
            delay, enqueued_at = head
            if delay <= 0 and self.budget is not None:
                delay = self.budget.delay(queue.name, now, len(queue))
            if delay <= 0 and (best is None or enqueued_at < best[1]):
                best = (queue, enqueued_at)
            elif delay > 0 and (soonest is None or delay < soonest):
                soonest = delay
        if best is None:
            return None, soonest
        if self.budget is not None:
            self.budget.take(best[0].name, now)
        return best[0].pop(now), soonest

    async def take(self):
        """The next item that may be sent (its token taken); None once closed and empty."""
        loop = asyncio.get_running_loop()
        while True:
            item, soonest = self.next_ready(self._clock())
            if item is not None:
                if self._waiters:
                    self._wake_one()   # more may be ready: let the next idle sender look
                return item
            if soonest is None and self._closed:
                return None
            waiter = loop.create_future()
            self._waiters.append(waiter)
            timer = loop.call_later(soonest, _wake, waiter) if soonest is not None else None
            try:
                await waiter
            finally:
                if timer is not None:
                    timer.cancel()
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def notify(self) -> None:
        """Something a waiting sender needs has come (a shared-budget lease): let one look again."""
        self._wake_one()

    def rates(self) -> dict[str, float]:
        """Calls per second of each endpoint queue."""
        return {name: queue.bucket.rate for name, queue in self._queues.items()}

    def pending(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def close(self, drop: Callable[[object], bool] = lambda item: False) -> list:
        """No more submissions are coming: senders stop once everything queued is sent, but for
        the items `drop` picks, taken out now (retries too, whenever due) and returned for their
        owner to answer."""
        self._closed = True
        dropped = []
        for queue in self._queues.values():
            for waiting in (queue.waiting, queue.yielding):
                entries = list(waiting)
                waiting.clear()
                for enqueued_at, item in entries:
                    if drop(item):
                        dropped.append(item)
                    else:
                        waiting.append((enqueued_at, item))
            retries, queue.retries = queue.retries, []
            for entry in retries:     # (due, seq, enqueued_at, item)
                if drop(entry[3]):
                    dropped.append(entry[3])
                else:
                    queue.retries.append(entry)
            heapq.heapify(queue.retries)
        while self._waiters:
            _wake(self._waiters.popleft())
        return dropped

    def stats(self) -> dict:
        return {name: queue.stats() for name, queue in self._queues.items() if len(queue) or queue.waits}


def _wake(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)
