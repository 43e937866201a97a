"""Events per state for the MongoDB store's stats(), kept as counters instead of counted.

Counting documents costs as many index entries as there are events in a state, and done events
stay for retention_s: every /metrics scrape grew with retention. So every transaction that moves
an event between states also adds to one of SHARDS counter documents (picked per process, so
that the transactions of different processes seldom write the same one and conflict), and
stats() reads SHARDS small documents at any queue size, as SQLite's event_counts table does.
A store from before the counters is counted once, when this version first opens it.
"""
from __future__ import annotations

import random

from .base import DEAD, DONE, LEASED, PENDING

NAMES = {PENDING: "pending", LEASED: "in_flight", DONE: "done", DEAD: "dead"}
SHARDS = 16
_PREFIX = "state_counts:"


class StateCounts:
    """The SHARDS counter documents of one store's `counters` collection, and this process's shard."""

    def __init__(self, counters_collection, shard: int | None = None):
        self._counters = counters_collection
        self._shard_id = _PREFIX + str(random.randrange(SHARDS) if shard is None else shard)

    def add(self, session, deltas: dict[int, int]) -> None:
        """Inside the transaction that moved the events: {state: change in its count}."""
        changes = {NAMES[state]: n for state, n in deltas.items() if n}
        if changes:
            self._counters.update_one({"_id": self._shard_id}, {"$inc": changes}, upsert=True, session=session)

    def read(self) -> dict[str, int]:
        totals = dict.fromkeys(NAMES.values(), 0)
        for doc in self._counters.find({"_id": {"$in": [_PREFIX + str(n) for n in range(SHARDS)]}}):
            for name in totals:
                totals[name] += doc.get(name, 0)
        return {name: max(0, n) for name, n in totals.items()}

    def initialise(self, session, events_collection) -> None:
        """Count a store that has no counters yet (in a transaction: two processes opening it at
        once write shard 0 once)."""
        first = _PREFIX + "0"
        if self._counters.find_one({"_id": first}, session=session) is not None:
            return
        counts = {name: events_collection.count_documents({"state": state}, session=session)
                  for state, name in NAMES.items()}
        self._counters.update_one({"_id": first}, {"$inc": counts}, upsert=True, session=session)
