"""protocol/coalesce.py in-process: a busy loop pauses before it looks again, an idle one does not,
and a loop asked not to wait (timeout 0) never sleeps. Bounds are one-sided where a slow machine
could stretch them: a pause lasts at least its length, and "at once" means well under it."""
from __future__ import annotations

import asyncio
import selectors
import socket
import time

import types

import pytest

from frontdesk.protocol import coalesce
from frontdesk.protocol.coalesce import BUSY_LIMIT, CoalescingSelector, run

PAUSE_S = 0.3


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_a_loop_that_just_woke_waits_out_the_pause_and_then_sees_everything_that_came(pair):
    reader, writer = pair
    selector = CoalescingSelector(PAUSE_S)
    selector.register(reader, selectors.EVENT_READ)
    writer.send(b"1")
    assert len(selector.select(5)) == 1          # woke: the next look pauses
    reader.recv(10)
    writer.send(b"2")
    writer.send(b"3")
    started = time.monotonic()
    ready = selector.select(5)
    assert time.monotonic() - started >= PAUSE_S * 0.9
    assert len(ready) == 1 and reader.recv(10) == b"23"   # both in one turn


def test_an_idle_loop_answers_at_once(pair):
    reader, writer = pair
    selector = CoalescingSelector(10.0)
    selector.register(reader, selectors.EVENT_READ)
    writer.send(b"1")
    started = time.monotonic()
    assert len(selector.select(20)) == 1     # never woke before: no pause
    assert time.monotonic() - started < 5.0


def test_timeout_zero_never_sleeps_and_a_timeout_shorter_than_the_pause_bounds_it(pair):
    reader, _ = pair
    selector = CoalescingSelector(10.0)
    selector.register(reader, selectors.EVENT_READ)
    assert selector.select(0) == []          # woke just now
    started = time.monotonic()
    assert selector.select(0) == []
    assert selector.select(0.2) == []        # the pause is cut to the timeout
    assert time.monotonic() - started < 5.0


def test_zero_turns_the_pause_off(pair):
    reader, writer = pair
    selector = CoalescingSelector(0.0)
    selector.register(reader, selectors.EVENT_READ)
    for n in range(3):
        writer.send(b"x")
        started = time.monotonic()
        assert len(selector.select(20)) == 1
        assert time.monotonic() - started < 5.0
        reader.recv(10)


@pytest.fixture
def pauses(monkeypatch):
    """The pauses the selector takes, recorded (and taken)."""
    taken = []

    def sleep(seconds):
        taken.append(seconds)
        time.sleep(seconds)
    monkeypatch.setattr(coalesce, "time", types.SimpleNamespace(monotonic=time.monotonic, sleep=sleep))
    return taken


def turns(pair, selector, count: int, work_s: float, pauses: list) -> list[int]:
    """`count` loop turns with something ready each time and `work_s` of work after each look;
    how many pauses each turn took."""
    reader, writer = pair
    selector.register(reader, selectors.EVENT_READ)
    taken = []
    for _ in range(count):
        before = len(pauses)
        writer.send(b"x")
        assert len(selector.select(5)) == 1
        reader.recv(10)
        taken.append(len(pauses) - before)
        time.sleep(work_s)
    return taken


def test_a_loop_busy_more_than_half_its_time_stops_pausing(pair, pauses):
    selector = CoalescingSelector(0.1)
    taken = turns(pair, selector, 30, 0.07, pauses)   # 0.07 s of work per 0.1 s turn: busy 0.7
    assert sum(taken[1:4]) >= 1          # it paused while its busy share was still rising
    assert selector.busy > BUSY_LIMIT and sum(taken[-10:]) == 0


def test_a_loop_told_that_work_waits_does_not_pause(pair, pauses):
    told = CoalescingSelector(0.05)
    told.pausing = False
    assert sum(turns(pair, told, 5, 0.01, pauses)) == 0
    told.close()
    free = CoalescingSelector(0.05)     # the same turns, free to pause: every turn after the first
    assert turns(pair, free, 5, 0.01, pauses)[1:] == [1, 1, 1, 1]


def test_run_gives_asyncio_a_coalescing_loop():
    async def main():
        loop = asyncio.get_running_loop()
        return type(loop._selector).__name__, await asyncio.sleep(0, "done")
    assert run(main(), 0.001) == ("CoalescingSelector", "done")
