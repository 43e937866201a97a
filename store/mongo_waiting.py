"""The MongoDB store's waiting chats: the one-to-one chats whose oldest event not yet acked has
waited longer than a given time (the rate limiter shows them LINE's loading animation)."""
from __future__ import annotations

from .base import Waiting
from .mongo_connections import MongoConnections


class MongoWaiting(Waiting):
    """One query on the `heads` index (each conversation's oldest pending-or-leased event, by
    seq); a one-to-one chat's key is its user ID (protocol/events.py), which starts with U."""

    def __init__(self, db: MongoConnections):
        self._db = db

    def waiting_chats(self, received_before_ms: int, limit: int) -> list[tuple[str, int]]:
        if limit <= 0:
            return []
        query = {"head": True, "key": {"$gte": "U", "$lt": "V"}, "received_at": {"$lte": received_before_ms}}

        def read():
            found = self._db.events.find(query, {"key": 1, "received_at": 1, "_id": 0}).sort("seq", 1) \
                .hint("heads").limit(limit)
            return [(doc["key"], doc["received_at"]) for doc in found]
        return self._db.call(read)
