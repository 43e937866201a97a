"""protocol/coalesce.py in-process: a busy loop pauses before it looks again, an idle one does not,
and a loop asked not to wait (timeout 0) never sleeps. Bounds are one-sided where a slow machine
could stretch them: a pause lasts at least its length, and "at once" means well under it."""
from __future__ import annotations

import asyncio
import selectors
import socket
import time

import pytest

from frontdesk.protocol.coalesce import CoalescingSelector, run

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


def test_run_gives_asyncio_a_coalescing_loop():
    async def main():
        loop = asyncio.get_running_loop()
        return type(loop._selector).__name__, await asyncio.sleep(0, "done")
    assert run(main(), 0.001) == ("CoalescingSelector", "done")
