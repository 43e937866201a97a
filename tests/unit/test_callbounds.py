"""The dispatcher's per-handler and per-event bounds on calls at the rate limiter
(dispatcher/callbounds.py), in-process."""
from __future__ import annotations

from frontdesk.dispatcher.callbounds import CallBounds

MB = 1 << 20


def bounds(handler_calls=4, handler_bytes=10 * MB, event_calls=2, event_bytes=4 * MB) -> CallBounds:
    return CallBounds(handler_calls, handler_bytes, event_calls, event_bytes)


def test_calls_within_the_bounds_go_at_once():
    b = bounds()
    assert b.offer("h", "e1", 100, 0, "c1") == ["c1"]
    assert b.offer("h", "e2", 100, 0, "c2") == ["c2"]
    assert b.load("h").calls == 2 and b.load("h").bytes == 200 and not b.holding("h")


def test_an_event_past_its_call_bound_waits_and_goes_when_one_of_its_calls_is_answered():
    b = bounds(event_calls=2)
    assert [b.offer("h", "e", 10, 0, n) for n in range(4)] == [[0], [1], [], []]
    b.answered("h", "e", 10)
    assert b.releasable("h", 0) == [2]
    assert b.releasable("h", 0) == []


def test_a_held_event_is_passed_over_so_other_events_of_the_handler_go_on():
    b = bounds(event_calls=1)
    assert b.offer("h", "busy", 10, 0, "b1") == ["b1"]
    assert b.offer("h", "busy", 10, 0, "b2") == []
    assert b.offer("h", "other", 10, 0, "o1") == ["o1"]
    b.answered("h", "busy", 10)
    assert b.releasable("h", 0) == ["b2"]


def test_a_handler_past_its_call_bound_waits_in_order_and_nothing_overtakes():
    b = bounds(handler_calls=2, event_calls=10)
    assert [b.offer("h", f"e{n}", 10, 0, n) for n in range(4)] == [[0], [1], [], []]
    assert b.offer("h", "e9", 10, 0, 9) == []        # behind the held ones, though its event is idle
    b.answered("h", "e0", 10)
    assert b.releasable("h", 0) == [2]
    b.answered("h", "e1", 10)
    b.answered("h", "e2", 10)
    assert b.releasable("h", 0) == [3, 9]


def test_bytes_bound_the_calls_of_an_event_and_of_a_handler():
    b = bounds(handler_bytes=10 * MB, event_bytes=4 * MB, event_calls=10, handler_calls=10)
    assert b.offer("h", "e", 3 * MB, 0, "a") == ["a"]
    assert b.offer("h", "e", 2 * MB, 0, "b") == []            # 5 MB > the event's 4 MB
    assert b.offer("h", "f", 4 * MB, 0, "c") == ["c"]
    assert b.offer("h", "g", 4 * MB, 0, "d") == []            # 11 MB > the handler's 10 MB
    b.answered("h", "e", 3 * MB)
    assert b.releasable("h", 0) == ["b", "d"]


def test_answers_the_handler_has_not_read_count_against_its_bytes():
    b = bounds(handler_bytes=10 * MB)
    assert b.offer("h", "e1", 100, 0, "a") == ["a"]
    assert b.offer("h", "e2", 100, 10 * MB - 150, "b") == []   # an unread answer fills its budget
    b.answered("h", "e1", 100)
    assert b.releasable("h", 10 * MB - 150) == ["b"]           # alone, within the bytes left
    b.answered("h", "e2", 100)
    assert b.offer("h", "e3", 2 * MB, 9 * MB, "c") == []       # nothing out, but 9 MB unread + 2 MB
    assert b.releasable("h", 0) == ["c"]                       # read: it goes


def test_a_call_larger_than_the_bounds_goes_alone():
    b = bounds(handler_bytes=1 * MB, event_bytes=1 * MB)
    assert b.offer("h", "e", 5 * MB, 0, "big") == ["big"]
    assert b.offer("h", "e", 10, 0, "small") == []
    b.answered("h", "e", 5 * MB)
    assert b.releasable("h", 0) == ["small"]


def test_a_handler_holding_a_bounds_worth_of_calls_is_no_longer_read():
    b = bounds(handler_calls=4, event_calls=2)
    for n in range(5):
        b.offer("h", "e", 10, 0, n)
    assert not b.holding("h")                 # 2 out, 3 held
    b.offer("h", "e", 10, 0, 5)
    assert b.holding("h")                     # 4 held: stop reading it
    assert not b.holding("someone else")


def test_calls_without_an_event_are_bound_by_their_handler_only():
    b = bounds(handler_calls=3, event_calls=1)
    assert [b.offer("h", None, 10, 0, n) for n in range(4)] == [[0], [1], [2], []]
    b.answered("h", None, 10)
    assert b.releasable("h", 0) == [3]


def test_handlers_are_bound_apart():
    b = bounds(handler_calls=1)
    assert b.offer("deaf", "e1", 10, 0, "d1") == ["d1"]
    assert b.offer("deaf", "e2", 10, 0, "d2") == []
    assert b.offer("ok", "e3", 10, 0, "o1") == ["o1"]
    assert b.held_count() == 1 and not b.holding("ok")


def test_a_forgotten_handler_gives_back_what_it_held_and_its_loads_go_with_it():
    b = bounds(handler_calls=1)
    b.offer("h", "e", 10, 0, "sent")
    b.offer("h", "e", 10, 0, "held")
    assert b.forget("h", {"e"}) == ["held"] and b.held_count() == 0
    assert b.load("h").calls == 0
    assert b.offer("h", "e", 10, 0, "next process") == ["next process"]   # a slot's next process starts free
