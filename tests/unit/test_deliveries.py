"""The deadlines of one handler process's events in flight (dispatcher/deliveries.py): late()
finds exactly the events past their deadline, and next_deadline() is never after the earliest
one, while late() looks at the events only once that bound has passed."""
from __future__ import annotations

import math

from hypothesis import given, settings, strategies as st

from frontdesk.dispatcher.deliveries import Deliveries
from tests.unit.clock import Clock

DEADLINE_S = 10.0


def doc(event_id: str) -> dict:
    return {"o": {"_id": event_id, "key": "U" + event_id, "received_at": 0,
                  "event": {"type": "message"}, "attempt": 1}}


STEPS = st.lists(st.tuples(st.sampled_from(["add", "touch", "call", "answer_call", "done", "wait"]),
                           st.integers(0, 7), st.floats(0, 12)), max_size=60)


@settings(max_examples=300, deadline=None)
@given(STEPS)
def test_late_finds_exactly_the_events_past_their_deadline_and_the_bound_is_never_after_them(steps):
    clock = Clock()
    deliveries = Deliveries(DEADLINE_S, (1.0,), clock)
    msgids = iter(range(1, 10_000))
    for action, pick, seconds in steps:
        held = list(deliveries.in_flight.values())
        delivery = held[pick % len(held)] if held else None
        if action == "add":
            deliveries.add(next(msgids), doc(f"e{next(msgids)}"))
        elif action == "wait":
            clock.now += seconds
        elif delivery is None:
            continue
        elif action == "touch":
            deliveries.touch(delivery)
        elif action == "call":
            deliveries.call_waiting(delivery)
        elif action == "answer_call" and delivery.waiting:
            deliveries.call_answered(delivery)
        elif action == "done":
            deliveries.answered(delivery.msgid)
        running = [d.deadline for d in deliveries.in_flight.values() if d.deadline < math.inf]
        bound = deliveries.next_deadline()
        assert bound is None or not running or bound <= min(running)
        expected = {d.msgid for d in deliveries.in_flight.values() if clock.now >= d.deadline}
        assert {d.msgid for d in deliveries.late(clock.now)} == expected


def test_no_look_at_the_events_before_the_earliest_deadline():
    clock = Clock()
    deliveries = Deliveries(DEADLINE_S, (1.0,), clock)
    for n in range(100):
        deliveries.add(n, doc(f"e{n}"))
    deliveries.in_flight = LookCounter(deliveries.in_flight)
    clock.now += DEADLINE_S - 0.001
    assert deliveries.late(clock.now) == [] and deliveries.in_flight.looks == 0
    assert deliveries.next_deadline() == 100.0 + DEADLINE_S
    clock.now += 0.001
    assert len(deliveries.late(clock.now)) == 100 and deliveries.in_flight.looks == 1


class LookCounter(dict):
    """The events in flight, counting how often all of them are looked at."""
    looks = 0

    def values(self):
        self.looks += 1
        return super().values()
