"""Each endpoint's rate shared by every rate limiter on one store: slices of it, leased.

LINE limits a channel, not a process. With several dispatchers (each with its own rate limiter)
an endpoint's budget must be divided among them as their load asks, not by hand. The store keeps
one small record per endpoint: the time up to which its calls are reserved (`Store.budget_lease`,
one atomic update). A rate limiter with calls waiting reserves the next slice of that time, sized
to what it will send in SLICE_S (its waiting calls, or its recent pace if that is more; at most
SLICE_S seconds' worth of the endpoint's rate), and spends its tokens at the endpoint's rate
inside the slice (token i at start + i/rate, and up to LATE_S after); a token not spent by then
expires. Slices of different rate limiters never overlap, so together they send at the
configured rate with no more burst than one rate limiter alone has (ratelimiter/buckets.py).
Sized to its own demand, a lightly loaded rate limiter takes little of the time busy ones wait
for; an idle one reserves nothing; a killed one's reservation runs out within its last slices.

Store writes: one per slice, about 1/SLICE_S a second per endpoint a rate limiter is sending on
(one per call only while its calls come fewer than 1/SLICE_S a second); they run on a thread of
their own, and the next slice is reserved while the current one is spent. Clocks: slices are
epoch times, so hosts sharing a MongoDB store need synchronised clocks (NTP); an offset between
two hosts adds to the burst (docs/ratelimiter.md).
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from frontdesk.store import Store, StoreError

log = logging.getLogger("frontdesk.ratelimiter")

SLICE_S = 0.1          # a slice holds what a rate limiter sends in this long (at most this much of the rate)
PACE_WEIGHT = 0.5      # how much the latest interval between two leases counts in the pace
MAX_AHEAD_S = 1.0      # nobody reserves further ahead than this (a limiter asks again as it passes)
LATE_S = 0.05          # a token may still be spent this long after its time (event loop lag)
LEASE_WAIT_S = 0.5     # while a lease is on its way, look again after this at the latest
STORE_RETRY_S = 0.5    # after the store failed to lease


class Slice:
    """Tokens reserved for this rate limiter: token i is due at start + i/rate (monotonic time)."""
    __slots__ = ("start", "rate", "tokens", "used")

    def __init__(self, start: float, rate: float, tokens: int):
        self.start, self.rate, self.tokens, self.used = start, rate, tokens, 0

    def due(self) -> float:
        return self.start + self.used / self.rate

    def skip_late(self, now: float) -> int:
        """Expire tokens more than LATE_S past their time; returns how many expired."""
        late = min(self.tokens, math.ceil((now - LATE_S - self.start) * self.rate))
        expired = max(0, late - self.used)
        self.used += expired
        return expired


class EndpointBudget:
    """One endpoint's leased slices, the lease on its way, and what was leased and spent."""

    def __init__(self, name: str, rate: float):
        self.name, self.rate = name, rate
        self.slice_tokens = max(1, round(rate * SLICE_S))
        self.slices: deque[Slice] = deque()
        self.asking = False
        self.ask_again_at = 0.0         # monotonic: reserved far ahead by others, or the store failed
        self.pace = 0.0                 # calls per second this rate limiter has been sending lately
        self.paced_at = 0.0             # monotonic time of the last lease asked for
        self.sent_since_ask = 0
        self.leased = self.sent = self.expired = self.leases = 0   # since the last stats()

    def available(self) -> int:
        return sum(s.tokens - s.used for s in self.slices)

    def drop_spent(self, now: float) -> None:
        while self.slices:
            head = self.slices[0]
            self.expired += head.skip_late(now)
            if head.used < head.tokens:
                return
            self.slices.popleft()

    def wanted(self, demand: int, now: float) -> int:
        """Tokens to lease for `demand` waiting calls (0: enough are leased, or none may be asked now):
        the calls short, or a slice's worth of the recent pace if that is more, within one slice."""
        short = demand - self.available()
        if short <= 0 or self.asking or len(self.slices) >= 2:
            return 0
        if self.paced_at and now > self.paced_at:
            latest = self.sent_since_ask / (now - self.paced_at)
            self.pace = PACE_WEIGHT * latest + (1 - PACE_WEIGHT) * self.pace
        self.paced_at, self.sent_since_ask = now, 0
        return max(1, min(self.slice_tokens, max(short, round(self.pace * SLICE_S))))


class SharedBudget:
    """The rate limiter's side of the shared budget; the scheduler asks it before each call.

    `delay(endpoint, now, demand)` says how long a call of that endpoint must still wait for
    leased time (leasing more when the waiting calls need it) and `take()` spends a token; both
    run on the event loop. `wake()` is called when a lease arrives.
    """

    def __init__(self, store: Store, rates: dict[str, float], wake: Callable[[], None]):
        self._store = store
        self._wake = wake
        self._endpoints = {name: EndpointBudget(name, rate) for name, rate in rates.items()}
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rate-budget")
        self._stats_at = time.monotonic()

    def delay(self, endpoint: str, now: float, demand: int) -> float:
        budget = self._endpoints[endpoint]
        budget.drop_spent(now)
        if now >= budget.ask_again_at and (tokens := budget.wanted(demand, now)):
            self._ask(budget, tokens)
        if budget.slices:
            return max(0.0, budget.slices[0].due() - now)
        if budget.asking:
            return LEASE_WAIT_S   # the lease's arrival wakes a sender sooner
        return max(budget.ask_again_at - now, 1e-3)   # never 0: take() needs a slice

    def take(self, endpoint: str, now: float) -> None:
        budget = self._endpoints[endpoint]
        head = budget.slices[0]
        head.used += 1
        budget.sent += 1
        budget.sent_since_ask += 1
        if head.used >= head.tokens:
            budget.slices.popleft()

    def _ask(self, budget: EndpointBudget, tokens: int) -> None:
        budget.asking = True
        seconds = tokens / budget.rate
        future = asyncio.get_running_loop().run_in_executor(   # `now` read when the lease is taken
            self._thread, lambda: self._store.budget_lease(budget.name, seconds, time.time(), MAX_AHEAD_S))
        future.add_done_callback(lambda done: self._answered(budget, tokens, done))

    def _answered(self, budget: EndpointBudget, tokens: int, done: asyncio.Future) -> None:
        budget.asking = False
        error = done.exception()
        if error is not None:
            if not isinstance(error, StoreError):
                log.error("event=rate_budget_lease_failed endpoint=%s reason=%r", budget.name, error)
            else:
                log.warning("event=rate_budget_unavailable endpoint=%s reason=%r retry_in_s=%g",
                            budget.name, str(error), STORE_RETRY_S)
            budget.ask_again_at = time.monotonic() + STORE_RETRY_S
        else:
            granted, at = done.result()
            to_monotonic = time.monotonic() - time.time()
            if granted:
                budget.slices.append(Slice(at + to_monotonic, budget.rate, tokens))
                budget.leased += tokens
                budget.leases += 1
            else:   # reserved up to `at` by others: ask again when that is MAX_AHEAD_S away
                budget.ask_again_at = at - MAX_AHEAD_S + to_monotonic
        self._wake()

    def stats(self) -> dict:
        """Per endpoint leased since the last call: `share` of its rate this rate limiter reserved,
        calls `sent` from leases, tokens `expired` unspent, and the store writes (`leases`)."""
        now = time.monotonic()
        elapsed, self._stats_at = max(now - self._stats_at, 1e-3), now
        result = {}
        for budget in self._endpoints.values():
            budget.drop_spent(now)
            if budget.leases or budget.slices:
                result[budget.name] = {"share": round(budget.leased / (budget.rate * elapsed), 3),
                                       "sent": budget.sent, "expired": budget.expired, "leases": budget.leases}
            budget.leased = budget.sent = budget.expired = budget.leases = 0
        return result

    def close(self) -> None:
        self._thread.shutdown(wait=True)
