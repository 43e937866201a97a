"""protocol/coalesce.py: a loop that works part of its time pauses before it looks again and then
takes what came meanwhile in one turn; an idle loop, a busy one, one told that work waits, and one
asked not to wait (timeout 0) do not pause.

On a clock the test moves: a message is due every `every_s`, the loop's work and the selector's
pauses move the clock on, and the platform's selector underneath waits for the next message due
by moving the clock to it (the messages due are written to a real socket pair, which it then
polls). The selector's pauses are recorded, not timed: the same turns every run, in milliseconds."""
from __future__ import annotations

import asyncio
import selectors
import socket
import types

import pytest

from frontdesk.protocol import coalesce
from frontdesk.protocol.coalesce import BUSY_LIMIT, IDLE_LIMIT, CoalescingSelector, WorkRate, run


class Clock:
    """The selector's time: `monotonic` reads it, `sleep` (a pause) moves it on and is recorded."""

    def __init__(self):
        self.now = 1000.0
        self.pauses: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


class Arrivals(selectors.DefaultSelector):
    """The platform's selector under a CoalescingSelector, its waits taken on the test's clock:
    before it polls, the messages due by now are written to the socket; with none due it first
    moves the clock to the next one (or by its timeout, if that comes first)."""

    clock: Clock
    writer: socket.socket | None = None
    every_s = 0.0
    next_due = 0.0

    def arrive(self, writer: socket.socket | None, every_s: float = 0.0) -> None:
        """A message every `every_s` from now on, written to `writer` (None: no more messages)."""
        self.writer, self.every_s, self.next_due = writer, every_s, self.clock.now + every_s

    def select(self, timeout: float | None = None):
        if self.writer is not None:
            if self.next_due > self.clock.now and timeout != 0:
                wait = self.next_due - self.clock.now
                self.clock.now += wait if timeout is None else min(wait, timeout)
            while self.next_due <= self.clock.now:
                self.writer.send(b"x")
                self.next_due += self.every_s
        return super().select(0)


class Selector(CoalescingSelector, Arrivals):
    """A CoalescingSelector whose platform selector is Arrivals (next in line for its super())."""


@pytest.fixture
def clock(monkeypatch) -> Clock:
    moved = Clock()
    monkeypatch.setattr(coalesce, "time", types.SimpleNamespace(monotonic=moved.monotonic, sleep=moved.sleep))
    return moved


def selector(clock: Clock, coalesce_s: float, work: WorkRate | None = None) -> Selector:
    made = Selector(coalesce_s, work)
    made.clock = clock
    return made


def turns(selector: Selector, count: int, every_s: float, work_s: float) -> list[tuple[int, int]]:
    """`count` loop turns, a message due every `every_s` and `work_s` of work after each look;
    per turn, (pauses taken, messages handled)."""
    reader, writer = socket.socketpair()
    selector.register(reader, selectors.EVENT_READ)
    selector.arrive(writer, every_s)
    pauses = selector.clock.pauses
    seen = []
    try:
        for _ in range(count):
            before = len(pauses)
            assert len(selector.select(5)) == 1
            seen.append((len(pauses) - before, len(reader.recv(1000))))
            selector.clock.now += work_s
    finally:
        selector.arrive(None)
        selector.unregister(reader)
        reader.close()
        writer.close()
    return seen


def test_a_loop_working_part_of_its_time_pauses_and_takes_what_came_in_one_turn(clock):
    paced = selector(clock, 0.4)
    seen = turns(paced, 8, 0.2, 0.08)   # busy 0.4 unpaused, 0.2 with the pauses
    assert sum(paused for paused, _ in seen[2:]) >= 4
    assert max(handled for _, handled in seen) >= 2    # messages that came during a pause, together
    assert IDLE_LIMIT <= paced.busy < BUSY_LIMIT


def test_an_idle_loop_does_not_pause(clock):
    idle = selector(clock, 0.4)
    turns(idle, 6, 0.1, 0.0)
    assert clock.pauses == [] and idle.busy < IDLE_LIMIT


def test_a_loop_busy_more_than_half_its_time_does_not_pause(clock):
    busy = selector(clock, 0.1)
    turns(busy, 10, 0.01, 0.03)    # always something ready: busy ~1
    assert clock.pauses == [] and busy.busy > BUSY_LIMIT


def test_a_loop_told_that_work_waits_does_not_pause(clock):
    told = selector(clock, 0.4)
    told.pausing = False
    turns(told, 6, 0.2, 0.08)
    assert clock.pauses == [] and IDLE_LIMIT <= told.busy < BUSY_LIMIT   # it would pause, if free to


def held_rate(per_s: float) -> WorkRate:
    """An owner's work rate that stays at `per_s` (its clock stands still)."""
    rate = WorkRate(clock=lambda: 0.0)
    rate.per_s = per_s
    return rate


def test_a_loop_whose_work_comes_too_slowly_to_gather_two_per_pause_does_not_pause(clock):
    slow = selector(clock, 0.4, held_rate(4.0))     # 1.6 per pause of 0.4 s
    turns(slow, 6, 0.2, 0.08)
    assert clock.pauses == [] and IDLE_LIMIT <= slow.busy < BUSY_LIMIT   # it would pause, by its busy share
    fast = selector(clock, 0.4, held_rate(5.0))     # 2 per pause
    turns(fast, 8, 0.2, 0.08)
    assert len(clock.pauses) >= 4


def test_timeout_zero_never_sleeps_and_zero_turns_pausing_off(clock):
    paced = selector(clock, 0.4)
    turns(paced, 4, 0.2, 0.08)
    before = len(clock.pauses)
    assert before > 0 and paced.select(0) == [] and len(clock.pauses) == before
    turns(selector(clock, 0.0), 4, 0.2, 0.08)
    assert len(clock.pauses) == before


def test_run_gives_asyncio_a_coalescing_loop():
    async def main():
        loop = asyncio.get_running_loop()
        return type(loop._selector).__name__, await asyncio.sleep(0, "done")
    assert run(main(), 0.001) == ("CoalescingSelector", "done")
