"""The rate limiter's cumulative figures, sent to the dispatcher as a `stats` notification every
STATS_INTERVAL_S (SPEC.md section 15; the fields: docs/ratelimiter.md, "Stats")."""
from __future__ import annotations

from collections import defaultdict

STATS_INTERVAL_S = 1.0


class Counters:
    """Cumulative figures: HTTP answers per endpoint and status, and named counts (429s,
    retries, batches, ...) that appear in the stats once they have been counted."""

    def __init__(self):
        self.calls = defaultdict(lambda: defaultdict(int))   # endpoint -> status -> count
        self.values = defaultdict(int)                       # 429s, retries, batches, ...

    def add(self, name: str, amount: int = 1) -> None:
        self.values[name] += amount

    def most(self, name: str, value: int) -> None:
        """Keep the largest value seen under `name` (batch_max)."""
        self.values[name] = max(self.values[name], value)

    def http(self, endpoint: str, status: int) -> None:
        self.calls[endpoint][str(status)] += 1

    def snapshot(self) -> dict:
        return {"calls": {e: dict(s) for e, s in self.calls.items()}, **self.values}

    def line(self) -> str:
        """The named counts as key=value fields (the last log line)."""
        return " ".join(f"{k}={v}" for k, v in self.values.items())
