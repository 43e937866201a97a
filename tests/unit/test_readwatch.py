"""When a handler counts as having stopped reading its stdin (dispatcher/workers.py, ReadWatch),
in-process."""
from __future__ import annotations

from frontdesk.dispatcher.workers import ReadWatch


def test_nothing_waiting_means_never_stuck():
    watch = ReadWatch()
    assert watch.due(30) is None
    assert watch.flushed(100, 0, now=5.0) is True     # all taken
    assert watch.due(30) is None


def test_bytes_left_waiting_start_the_clock_and_taking_some_restarts_it():
    watch = ReadWatch()
    assert watch.flushed(100, 100, now=1.0) is False  # the pipe was full: nothing taken
    assert watch.due(30) == 31.0
    assert watch.flushed(300, 300, now=9.0) is False  # more queued, still nothing taken: the clock runs on
    assert watch.due(30) == 31.0
    assert watch.flushed(300, 200, now=20.0) is True  # it read some: it is reading
    assert watch.due(30) == 50.0
    assert watch.flushed(200, 0, now=21.0) is True
    assert watch.due(30) is None
