"""The clock the unit tests inject: seconds that move only when the test says."""
from __future__ import annotations


class Clock:
    """Called for the time (as time.monotonic or time.time would be); `advance` moves it."""

    def __init__(self, now: float = 100.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now
