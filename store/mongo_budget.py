"""The MongoDB store's shared rate budget (`rate_budget`): per endpoint, the time its calls are
reserved to (ratelimiter/shared_budget.py spends it)."""
from __future__ import annotations

from .base import Budget
from .mongo_connections import MongoConnections


class MongoBudget(Budget):
    """One document per endpoint, moved on by one atomic find_one_and_update (a retryable write):
    the filter lets it through only while the reservation ends within now + max_ahead_s; an upsert
    that meets an existing document (reserved too far ahead, or created by a concurrent first
    lease) raises DuplicateKeyError, and the document as it is then answers. Slices are the
    server's time: `now` and the answer are the caller's."""

    def __init__(self, db: MongoConnections):
        self._db = db

    def budget_lease(self, endpoint: str, seconds: float, now: float,
                     max_ahead_s: float) -> tuple[bool, float]:
        from pymongo import ReturnDocument
        from pymongo.errors import DuplicateKeyError

        clock, budget = self._db.clock, self._db.budget
        at = clock.to_server(now)
        reserve = [{"$set": {"reserved_until": {"$add": [{"$max": ["$reserved_until", at]}, seconds]}}}]

        def lease():
            for _ in range(2):   # the second round: a concurrent first lease created the document
                try:
                    before = budget.find_one_and_update(
                        {"_id": endpoint, "reserved_until": {"$lte": at + max_ahead_s}}, reserve,
                        upsert=True, return_document=ReturnDocument.BEFORE)
                except DuplicateKeyError:
                    current = budget.find_one({"_id": endpoint}) or {}
                    reserved_until = current.get("reserved_until", at)
                    if reserved_until > at + max_ahead_s:
                        return False, clock.to_local(reserved_until)
                    continue
                if before is None or before["reserved_until"] <= at:
                    return True, now
                return True, clock.to_local(before["reserved_until"])
            return False, now   # lost twice to concurrent leases: ask again at once
        return self._db.call(lease)
