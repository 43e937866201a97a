"""The MongoDB store's count of the messages sent per quota month and kind (`sends`)."""
from __future__ import annotations

from .base import Sends
from .mongo_connections import MongoConnections


class MongoSends(Sends):
    """One document per month, `_id` the month, a field per kind: one `$inc` with an upsert adds
    atomically (a retryable write), so the rate limiters of every dispatcher add up."""

    def __init__(self, db: MongoConnections):
        self._db = db

    def sends_add(self, month: str, counts: dict[str, int]) -> dict[str, int]:
        from pymongo import ReturnDocument

        increments = {f"n.{kind}": n for kind, n in counts.items() if n}
        sends = self._db.sends
        if not increments:
            doc = self._db.call(lambda: sends.find_one({"_id": month}))
        else:
            doc = self._db.call(lambda: sends.find_one_and_update(
                {"_id": month}, {"$inc": increments}, upsert=True, return_document=ReturnDocument.AFTER))
        return dict((doc or {}).get("n") or {})
