"""protocol/coalesce.py in-process: a loop that works part of its time pauses before it looks
again and then takes what came meanwhile in one turn; an idle loop, a busy one, one told that work
waits, and one asked not to wait (timeout 0) do not pause. Messages come from a thread at a steady
pace; pauses are observed by recording the selector's sleeps, not by timing them."""
from __future__ import annotations

import asyncio
import selectors
import socket
import threading
import time
import types

import pytest

from frontdesk.protocol import coalesce
from frontdesk.protocol.coalesce import BUSY_LIMIT, IDLE_LIMIT, CoalescingSelector, WorkRate, run


@pytest.fixture
def pauses(monkeypatch):
    """The pauses the selector takes, recorded (and taken)."""
    taken = []

    def sleep(seconds):
        taken.append(seconds)
        time.sleep(seconds)
    monkeypatch.setattr(coalesce, "time", types.SimpleNamespace(monotonic=time.monotonic, sleep=sleep))
    return taken


def turns(selector, count: int, every_s: float, work_s: float, pauses: list) -> list[tuple[int, int]]:
    """`count` loop turns, a message arriving every `every_s` and `work_s` of work after each look;
    per turn, (pauses taken, messages handled)."""
    reader, writer = socket.socketpair()
    stop = threading.Event()

    def send():
        while not stop.wait(every_s):
            writer.send(b"x")
    sender = threading.Thread(target=send, daemon=True)
    selector.register(reader, selectors.EVENT_READ)
    sender.start()
    seen = []
    try:
        for _ in range(count):
            before = len(pauses)
            assert len(selector.select(5)) == 1
            seen.append((len(pauses) - before, len(reader.recv(1000))))
            time.sleep(work_s)
    finally:
        stop.set()
        sender.join()
        selector.unregister(reader)
        reader.close()
        writer.close()
    return seen


def test_a_loop_working_part_of_its_time_pauses_and_takes_what_came_in_one_turn(pauses):
    selector = CoalescingSelector(0.4)
    seen = turns(selector, 8, 0.2, 0.08, pauses)   # busy 0.4 unpaused, 0.2 with the pauses
    assert sum(paused for paused, _ in seen[2:]) >= 4
    assert max(handled for _, handled in seen) >= 2    # messages that came during a pause, together
    assert IDLE_LIMIT <= selector.busy < BUSY_LIMIT


def test_an_idle_loop_does_not_pause(pauses):
    selector = CoalescingSelector(0.4)
    turns(selector, 6, 0.1, 0.0, pauses)
    assert pauses == [] and selector.busy < IDLE_LIMIT


def test_a_loop_busy_more_than_half_its_time_does_not_pause(pauses):
    selector = CoalescingSelector(0.1)
    turns(selector, 10, 0.01, 0.03, pauses)    # always something ready: busy ~1
    assert pauses == [] and selector.busy > BUSY_LIMIT


def test_a_loop_told_that_work_waits_does_not_pause(pauses):
    selector = CoalescingSelector(0.4)
    selector.pausing = False
    turns(selector, 6, 0.2, 0.08, pauses)
    assert pauses == [] and IDLE_LIMIT <= selector.busy < BUSY_LIMIT   # it would pause, if free to


def held_rate(per_s: float) -> WorkRate:
    """An owner's work rate that stays at `per_s` (its clock stands still)."""
    rate = WorkRate(clock=lambda: 0.0)
    rate.per_s = per_s
    return rate


def test_a_loop_whose_work_comes_too_slowly_to_gather_two_per_pause_does_not_pause(pauses):
    slow = CoalescingSelector(0.4, held_rate(4.0))     # 1.6 per pause of 0.4 s
    turns(slow, 6, 0.2, 0.08, pauses)
    assert pauses == [] and IDLE_LIMIT <= slow.busy < BUSY_LIMIT   # it would pause, by its busy share
    fast = CoalescingSelector(0.4, held_rate(5.0))     # 2 per pause
    turns(fast, 8, 0.2, 0.08, pauses)
    assert len(pauses) >= 4


def test_timeout_zero_never_sleeps_and_zero_turns_pausing_off(pauses):
    selector = CoalescingSelector(0.4)
    turns(selector, 4, 0.2, 0.08, pauses)
    before = len(pauses)
    assert selector.select(0) == [] and len(pauses) == before
    turns(CoalescingSelector(0.0), 4, 0.2, 0.08, pauses)
    assert len(pauses) == before


def test_run_gives_asyncio_a_coalescing_loop():
    async def main():
        loop = asyncio.get_running_loop()
        return type(loop._selector).__name__, await asyncio.sleep(0, "done")
    assert run(main(), 0.001) == ("CoalescingSelector", "done")
