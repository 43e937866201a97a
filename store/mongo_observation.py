"""The MongoDB store's observation and control: counts and hot keys for operators, the processes'
status documents (`statuses`) and operator controls (`controls`)."""
from __future__ import annotations

import time
from typing import Callable

from .base import LEASED, PENDING, Observation
from .mongo_connections import MongoConnections
from .mongo_data import storable


class MongoObservation(Observation):
    """Reads that operators poll (cheap at any queue size: the state counters of
    store/mongo_counts.py) and the small documents processes publish for each other. Status
    times are the server's clock, answered in this host's."""

    def __init__(self, db: MongoConnections, clock: Callable[[], float] = time.time):
        self._db = db
        self._clock = clock   # this host's: the age of the oldest event (received_at is the receiver's)

    def stats(self) -> dict:
        """The state counters and the oldest head, pending or leased: the first entry of the heads
        index. A few documents read at any queue size."""
        def read():
            counts = self._db.counts.read()
            oldest = self._db.events.find_one({"head": True}, {"received_at": 1}, sort=[("seq", 1)])
            age = max(0.0, self._clock() - oldest["received_at"] / 1000.0) if oldest else 0.0
            return {**counts, "oldest_pending_s": round(age, 3)}
        return self._db.call(read)

    def busiest_keys(self, limit: int = 1) -> list[tuple[str, int]]:
        """`limit` as SQL's LIMIT (0: none, negative: no limit); $limit takes positive numbers only."""
        if limit == 0:
            return []
        pipeline = [{"$match": {"state": {"$in": [PENDING, LEASED]}}},
                    {"$group": {"_id": "$key", "n": {"$sum": 1}}},
                    {"$sort": {"n": -1, "_id": 1}}] + ([{"$limit": limit}] if limit > 0 else [])
        return self._db.call(lambda: [(doc["_id"], doc["n"]) for doc in self._db.events.aggregate(pipeline)])

    def put_status(self, name: str, status: dict) -> None:
        document = {"doc": storable(status), "updated_at": self._db.clock.now()}
        self._db.call(lambda: self._db.statuses.replace_one({"_id": name}, document, upsert=True))

    def get_statuses(self) -> dict[str, dict]:
        clock = self._db.clock
        return {doc["_id"]: {**doc["doc"], "updated_at": clock.to_local(doc["updated_at"])}
                for doc in self._db.call(lambda: list(self._db.statuses.find()))}

    def delete_status(self, name: str) -> None:
        self._db.call(lambda: self._db.statuses.delete_one({"_id": name}))

    def prune_statuses(self, older_than_s: float) -> int:
        cutoff = self._db.clock.now() - older_than_s
        return self._db.call(lambda: self._db.statuses.delete_many({"updated_at": {"$lt": cutoff}}).deleted_count)

    def set_control(self, name: str, value) -> None:
        document = {"value": storable(value)}
        self._db.call(lambda: self._db.controls.replace_one({"_id": name}, document, upsert=True))

    def get_control(self, name: str):
        doc = self._db.call(lambda: self._db.controls.find_one({"_id": name}))
        return doc["value"] if doc else None
