"""The MongoDB store's appends: what the group commit (store/groupcommit.py) writes, one
transaction for every request of a group, bounded by the latest deadline of its callers.

Writes that move a key's head run in a transaction together with an update of that key's document
in `keys`, so an append and an ack racing on one key conflict and are retried instead of losing
the head. Every append's transaction writes the one `seq` counter document, so two receivers'
commits are serialised on it: the counter is written last, after the dedupe read and the `keys`
update, so it is held only while the events are inserted and committed. A re-queue of dead letters
(store/mongo_retention.py) joins the queue's end the same way (`reserve_seqs`, `add_active`).
"""
from __future__ import annotations

import time
from collections import Counter

from frontdesk.protocol.events import conversation_key

from .base import PENDING, AppendResult
from .groupcommit import AppendRequest, Take
from .mongo_connections import TRANSACTION_TIMEOUT_S, MongoConnections
from .mongo_users import MongoUsers
from .rules import follow_change, new_events


def reserve_seqs(db: MongoConnections, count: int, session) -> int:
    """Reserve `count` consecutive store-order numbers; returns the first."""
    from pymongo import ReturnDocument

    top = db.counters.find_one_and_update({"_id": "events"}, {"$inc": {"seq": count}}, upsert=True,
                                          session=session, return_document=ReturnDocument.AFTER)["seq"]
    return top - count + 1


def add_active(db: MongoConnections, per_key: dict[str, int], session) -> set[str]:
    """Count new pending events per key (one read and one bulk write, whatever the number of
    keys); returns the keys that had none (their first new event heads them)."""
    from pymongo import UpdateOne

    busy = {doc["_id"] for doc in db.keys.find({"_id": {"$in": list(per_key)}, "active": {"$gt": 0}},
                                               {"_id": 1}, session=session)}
    db.keys.bulk_write([UpdateOne({"_id": key}, {"$inc": {"active": count}}, upsert=True)
                        for key, count in per_key.items()], ordered=False, session=session)
    return set(per_key) - busy


class MongoAppends:
    """The group commit's commit function for one MongoDB store."""

    def __init__(self, db: MongoConnections, users: MongoUsers):
        self._db = db
        self._users = users

    def commit(self, take: Take) -> bool:
        """One transaction for every request still wanted; returns whether anything new was stored."""
        live = take()   # MongoDB has no store-wide write lock to wait for first
        if not live:
            return False
        deadlines = [request.deadline for request in live]
        timeout_s = (TRANSACTION_TIMEOUT_S if None in deadlines
                     else max(0.001, max(deadlines) - time.monotonic()))   # no use after every caller gave up
        results = self._db.transaction(lambda session: self._insert(live, session), timeout_s)
        for request, result in zip(live, results):
            request.result = result
        return any(result.new for result in results)

    def _insert(self, requests: list[AppendRequest], session) -> list[AppendResult]:
        """The transaction's work (run again whole if it meets a write conflict)."""
        db = self._db
        all_ids = [event["webhookEventId"] for request in requests for event in request.events]
        seen = {doc["_id"] for doc in db.events.find({"_id": {"$in": all_ids}}, {"_id": 1}, session=session)}
        results, docs, follows = [], [], []
        for request in requests:
            result = AppendResult()
            for event_id, event in new_events(request.events, seen, result):
                docs.append({"_id": event_id, "key": conversation_key(event),
                             "destination": request.destination, "event": event,
                             "received_at": request.received_at_ms, "state": PENDING, "head": False,
                             "due": 0.0, "attempt": 0})
                if change := follow_change(event):
                    follows.append(change)
            results.append(result)
        if docs:
            idle = add_active(db, Counter(doc["key"] for doc in docs), session)
            for doc in docs:
                if doc["key"] in idle:
                    doc["head"] = True
                    idle.discard(doc["key"])
            for kind, user_id, at in follows:
                self._users.record_follow(kind, user_id, at, session)
            # the counter every append writes, as late as can be (see the module's docstring)
            first = reserve_seqs(db, len(docs), session)
            for offset, doc in enumerate(docs):
                doc["seq"] = first + offset
            db.events.insert_many(docs, session=session)
            db.counts.add(session, {PENDING: len(docs)})
        return results
