"""Push -> multicast batching (ratelimiter/batcher.py) with a clock and timers the test moves: what
may share a batch, the sliding window and its cap, a full batch, one user twice, the end."""
from __future__ import annotations

import pytest

from frontdesk.ratelimiter.batcher import MAX_AGE_WINDOWS, Batcher, batch_key
from frontdesk.ratelimiter.calls import Call, Send
from tests.unit.limiter_parts import TEXT

WINDOW_S = 0.25     # a binary fraction: sums of it are exact


class Timers:
    """A clock and its timers, moved by the test: fire() runs every timer due by then."""

    def __init__(self):
        self.now = 0.0
        self.pending: list[list] = []    # [when, callback, args, cancelled]

    def clock(self) -> float:
        return self.now

    def call_at(self, when: float, callback, *args):
        timer = [when, callback, args, False]
        self.pending.append(timer)
        return Handle(timer)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        while due := sorted((t for t in self.pending if t[0] <= self.now and not t[3]), key=lambda t: t[0]):
            timer = due[0]
            self.pending.remove(timer)
            timer[1](*timer[2])


class Handle:
    def __init__(self, timer: list):
        self.timer = timer

    def cancel(self) -> None:
        self.timer[3] = True


@pytest.fixture
def batching():
    timers, closed = Timers(), []
    batcher = Batcher(WINDOW_S, closed.append, max_size=3, clock=timers.clock, call_at=timers.call_at)
    return batcher, timers, closed


def test_only_pushes_to_users_with_the_same_messages_share_a_key():
    assert batch_key({"to": "U1", "messages": TEXT}) == batch_key({"to": "U2", "messages": TEXT})
    assert batch_key({"to": "U1", "messages": TEXT}) != batch_key({"to": "U2", "messages": TEXT * 2})
    assert batch_key({"to": "U1", "messages": TEXT}) != batch_key({"to": "U2", "messages": TEXT,
                                                                   "notificationDisabled": True})
    assert batch_key({"to": "C" + "1" * 32, "messages": TEXT}) is None     # a group cannot be multicast to
    assert batch_key({"to": "R1", "messages": TEXT}) is None
    assert batch_key({"to": ["U1"], "messages": TEXT}) is None


def test_a_batch_closes_a_window_after_its_last_push(batching):
    batcher, timers, closed = batching
    batcher.add("k", "U1", "a")
    timers.advance(0.125)
    batcher.add("k", "U2", "b")              # within the window: it slides
    timers.advance(0.125)
    assert closed == [] and batcher.open_members() == 2
    timers.advance(0.125)
    assert closed == [["a", "b"]] and batcher.open_members() == 0


def test_a_window_slides_at_most_max_age_windows():
    timers, closed = Timers(), []
    batcher = Batcher(WINDOW_S, closed.append, max_size=500, clock=timers.clock, call_at=timers.call_at)
    for n in range(3 * MAX_AGE_WINDOWS):
        batcher.add("k", f"U{n}", n)
        timers.advance(WINDOW_S / 2)
        if closed:
            break
    assert len(closed) == 1 and timers.now == pytest.approx(WINDOW_S * MAX_AGE_WINDOWS)


def test_a_full_batch_goes_at_once(batching):
    batcher, timers, closed = batching
    for n in range(4):
        batcher.add("k", f"U{n}", n)
    assert closed == [[0, 1, 2]] and batcher.open_members() == 1


def test_one_user_twice_sends_the_open_batch_first(batching):
    batcher, timers, closed = batching
    batcher.add("k", "U1", "first")
    batcher.add("k", "U1", "second")
    assert closed == [["first"]]
    timers.advance(WINDOW_S)
    assert closed == [["first"], ["second"]]


def test_different_messages_are_different_batches(batching):
    batcher, timers, closed = batching
    batcher.add("hello", "U1", "a")
    batcher.add("bye", "U2", "b")
    timers.advance(WINDOW_S)
    assert sorted(closed) == [["a"], ["b"]]


def test_closing_sends_every_open_batch_and_their_timers_do_nothing(batching):
    batcher, timers, closed = batching
    batcher.add("k", "U1", "a")
    batcher.close()
    assert closed == [["a"]]
    timers.advance(1.0)
    assert closed == [["a"]]


def test_a_closed_batch_is_a_multicast_with_a_key_of_its_members_or_the_push_it_was():
    calls = [Call(f"ev{n}", 1, "push", {"to": f"U{n}", "messages": TEXT}, {}, None) for n in range(2)]
    multicast = Send.of_batch(calls)
    assert multicast.sent_as == "multicast" and multicast.request.endpoint == "multicast"
    assert multicast.request.body == {"messages": TEXT, "to": ["U0", "U1"]}
    again = Send.of_batch(list(reversed(calls)))
    assert again.request.retry_key == multicast.request.retry_key     # the same members, the same key
    alone = Send.of_batch(calls[:1])
    assert alone.sent_as == "push" and alone.request.body == {"to": "U0", "messages": TEXT}
    assert alone.request.retry_key == calls[0].retry_key()
