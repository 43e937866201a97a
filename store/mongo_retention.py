"""The MongoDB store's dead letters and retention, CHUNK events per transaction: one transaction
for 100,000 dead letters would outlive MongoDB's 60 s transaction lifetime. Retention is
`purge_done`'s alone (no TTL index: store/mongo_schema.py drops one left by an earlier version)."""
from __future__ import annotations

import logging
from collections import Counter
from typing import Callable

from .base import DEAD, DONE, PENDING, Retention
from .mongo_appends import add_active, reserve_seqs
from .mongo_connections import MongoConnections, utc

log = logging.getLogger("frontdesk.store.mongo")

CHUNK = 500   # events per transaction in retention and dead-letter operations (a transaction lives 60 s at most)

Step = Callable[[object, dict], int]   # step(session, filter) -> how many events it moved


class MongoRetention(Retention):
    """What leaves the queue, and how: dead letters stay until an operator acts; done events go
    after retention_s by the server's clock, purged by the dispatcher."""

    def __init__(self, db: MongoConnections):
        self._db = db

    def dead_letters(self, limit: int = 100) -> list[dict]:
        """`limit` as SQL's LIMIT, as in SQLite: 0 gives none, a negative one no limit (pymongo's
        limit(0) would mean no limit, and a negative one |n| in one batch)."""
        if limit == 0:
            return []

        def read():
            cursor = self._db.events.find({"state": DEAD}).sort("seq", 1)
            return list(cursor.limit(limit) if limit > 0 else cursor)

        clock = self._db.clock
        return [{"id": doc["_id"], "key": doc["key"], "attempts": doc["attempt"], "error": doc.get("error"),
                 "dead_at": clock.to_local(doc["dead_at"]) if doc.get("dead_at") is not None else None,
                 "event": doc["event"]} for doc in self._db.call(read)]

    def retry_dead(self, event_ids: list[str] | None = None) -> int:
        """Re-queue at the end of the queue (a new seq) with a fresh attempt count, as SQLite does,
        CHUNK dead letters per transaction."""
        if event_ids is None:   # those dead now: a re-queued one that dies again meanwhile stays
            top = self._db.call(lambda: self._db.counters.find_one({"_id": "events"}) or {}).get("seq", 0)
            count = self._in_chunks(self._requeue, {"state": DEAD, "seq": {"$lte": top}}, None)
        else:
            count = self._in_chunks(self._requeue, {"state": DEAD}, event_ids)
        if count:
            log.info("event=dead_letters_requeued count=%d", count)
        return count

    def drop_dead(self, event_ids: list[str] | None = None) -> int:
        count = self._in_chunks(self._drop, {"state": DEAD}, event_ids)
        if count:
            log.info("event=dead_letters_dropped count=%d", count)
        return count

    def purge_done(self, older_than_s: float) -> int:
        """Done events finished before older_than_s ago by the server's clock, with their
        call-journal entries, CHUNK per transaction."""
        match = {"state": DONE, "done_at": {"$lt": utc(self._db.clock.now() - older_than_s)}}
        total = self._in_chunks(self._purge, match, None)
        if total:
            log.info("event=done_events_purged count=%d older_than_s=%g", total, older_than_s)
        return total

    def _in_chunks(self, step: Step, match: dict, event_ids: list[str] | None) -> int:
        """step(session, filter) for up to CHUNK events per transaction: of `event_ids` CHUNK at a
        time, or (None) until one finds fewer than CHUNK."""
        total = 0
        if event_ids is None:
            while (done := self._db.transaction(lambda session: step(session, match))) == CHUNK:
                total += done
            return total + done
        unique = list(dict.fromkeys(event_ids))
        for first in range(0, len(unique), CHUNK):
            chunk = {**match, "_id": {"$in": unique[first:first + CHUNK]}}
            total += self._db.transaction(lambda session: step(session, chunk))
        return total

    def _requeue(self, session, match: dict) -> int:
        from pymongo import UpdateOne

        docs = list(self._db.events.find(match, {"_id": 1, "key": 1}, session=session).sort("seq", 1).limit(CHUNK))
        if not docs:
            return 0
        idle = add_active(self._db, Counter(doc["key"] for doc in docs), session)
        first = reserve_seqs(self._db, len(docs), session)
        updates = []
        for offset, doc in enumerate(docs):
            heads = doc["key"] in idle
            idle.discard(doc["key"])
            updates.append(UpdateOne({"_id": doc["_id"]}, {
                "$set": {"state": PENDING, "seq": first + offset, "head": heads, "due": 0.0, "attempt": 0},
                "$unset": {"error": "", "dead_at": "", "owner": ""}}))
        self._db.events.bulk_write(updates, ordered=True, session=session)
        self._db.counts.add(session, {DEAD: -len(docs), PENDING: len(docs)})
        return len(docs)

    def _drop(self, session, match: dict) -> int:
        return self._delete(session, match, DEAD)

    def _purge(self, session, match: dict) -> int:
        return self._delete(session, match, DONE)

    def _delete(self, session, match: dict, state: int) -> int:
        """Delete up to CHUNK events in `state` that match, with their call-journal entries."""
        ids = [doc["_id"] for doc in self._db.events.find(match, {"_id": 1}, session=session).limit(CHUNK)]
        if not ids:
            return 0
        deleted = self._db.events.delete_many({"_id": {"$in": ids}, "state": state}, session=session).deleted_count
        self._db.journal.delete_many({"event_id": {"$in": ids}}, session=session)
        self._db.counts.add(session, {state: -deleted})
        return deleted
