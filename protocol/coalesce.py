"""Coalesced wake-ups: a busy loop looks at its sockets and pipes at most every `coalesce_s`
(the `loop_coalesce_ms` setting), so that what arrives meanwhile is handled in one turn.

Under load the receiver and the dispatcher woke once per request or frame: a turn of loop
bookkeeping, system calls, a context switch and a GIL hand-off for one small message. Waiting a
few milliseconds before looking again turns many such wake-ups into one, as a network card's
interrupt moderation does. At 1,000 events/s, 3 ms cut the dispatcher's CPU per event by a third
and the receiver's by a sixth, and the rate limiter's and the handlers' fell too (their frames now
come in batches), for about 10 ms of end-to-end latency (docs/benchmarks.md). An idle loop is never
delayed: the pause only follows a wake-up less than `coalesce_s` ago.

A pause costs latency on every hop, so it is taken only where CPU is what runs short. A loop
working less than a tenth of its time does not pause (at 300 events/s the pauses put 13 ms on the
e2e p99 and saved CPU nobody needed), nor one working more than half of its time (its turns carry
many messages anyway, and pausing would make it the bottleneck). Nor does one whose work comes too
slowly for a pause to gather two units of it (`WorkRate`; at 3 ms: 667 webhooks/s at the receiver,
667 events handed out/s at the dispatcher): the dispatcher's store work makes it busy a quarter of
its time at 300/s as at 1,000/s, and its pauses put 9-10 ms on the e2e p50 at 300/s (one on each
of an event's hops through it) to save CPU nobody needed there (0.2-0.4 ms per event, with three
quarters of the two cores free).
It does not pause while a conversation's next event waits for
the current one's answer (a run, docs/dispatcher.md): ten conversations draining a queue went from
12,000 to 3,200 events/s with a plain 3 ms pause, and one conversation to 322/s.

The rate limiter does not pause: a call waits on it twice (its journal write, then LINE's answer),
and handlers wait on their calls, so a pause there lowered what a handler's window could carry
(2,000 events/s: e2e p50 0.3 s -> 1.5 s).
"""
from __future__ import annotations

import asyncio
import selectors
import time


IDLE_LIMIT = 0.1       # a loop working less than this share of its time does not pause,
BUSY_LIMIT = 0.5       # nor one working more
BUSY_MEMORY = 0.8      # the busy share weighs each earlier turn's time by this much less
GATHER_MIN = 2.0       # WorkRate: a pause pays while it gathers this many units of work on average
RATE_MEMORY_S = 0.5    # WorkRate: how long the rate remembers (a window's weight is its length / this)
RATE_WINDOW_S = 0.1    # WorkRate: the rate is brought up to date at most this often


class WorkRate:
    """Units of work an owner takes on (the receiver: webhooks; the dispatcher: events handed out)
    per second, smoothed, and whether a pause of `coalesce_s` would gather GATHER_MIN of them. A
    loop's busy share does not tell 300 events/s from 1,000/s where each turn's store work is most
    of its time (the dispatcher works a quarter to a third of its time at both): there its pauses
    put 10 ms on the e2e p50 at 300/s, while at 1,000/s they save a tenth of frontdesk's CPU.
    `clock` is injected (time.monotonic in the process)."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._count = 0
        self._since = clock()
        self.per_s = 0.0

    def add(self, count: int) -> None:
        self._count += count

    def gathers(self, coalesce_s: float) -> bool:
        now = self._clock()
        elapsed = now - self._since
        if elapsed >= RATE_WINDOW_S:
            self.per_s += (self._count / elapsed - self.per_s) * min(1.0, elapsed / RATE_MEMORY_S)
            self._count, self._since = 0, now
        return self.per_s * coalesce_s >= GATHER_MIN


class CoalescingSelector(selectors.DefaultSelector):
    """The platform's selector, pausing what is left of `coalesce_s` since it last woke before it
    looks again: only while the loop's busy share is between IDLE_LIMIT and BUSY_LIMIT and, given
    its owner's `work` rate, while a pause would gather GATHER_MIN of it; never when asked not to
    wait (timeout 0), and never while its owner says that work waits on this turn (`pausing`
    False)."""

    def __init__(self, coalesce_s: float, work: WorkRate | None = None):
        super().__init__()
        self.coalesce_s = coalesce_s
        self.work = work
        self.pausing = True
        self.busy = 0.0          # share of the loop's recent time spent working, 0..1
        self._working = self._span = 0.0
        self._woke = 0.0         # when the last look returned
        self._looked = 0.0       # when the last look began

    def select(self, timeout: float | None = None):
        now = time.monotonic()
        if self._looked:   # time-weighted: a turn that took no time counts for nothing
            self._working = self._working * BUSY_MEMORY + (now - self._woke)
            self._span = self._span * BUSY_MEMORY + (now - self._looked)
            self.busy = self._working / self._span if self._span > 0 else 0.0
        self._looked = now
        if (self.coalesce_s > 0 and timeout != 0 and self.pausing and IDLE_LIMIT <= self.busy < BUSY_LIMIT
                and (self.work is None or self.work.gathers(self.coalesce_s))):
            gap = self._woke + self.coalesce_s - now
            if gap > 0:
                if timeout is not None:
                    gap = min(gap, timeout)
                    timeout -= gap
                time.sleep(gap)
        ready = super().select(timeout)
        self._woke = time.monotonic()
        return ready


def run(main, coalesce_s: float, work: WorkRate | None = None):
    """asyncio.run(main) on a selector loop whose wake-ups are coalesced (given `work`: while they
    gather enough of it)."""
    with asyncio.Runner(loop_factory=lambda: asyncio.SelectorEventLoop(CoalescingSelector(coalesce_s, work))) as runner:
        return runner.run(main)
