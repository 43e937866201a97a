"""The MongoDB store's call journal (`journal`): one document per (event, n-th API call)."""
from __future__ import annotations

import time
from typing import Callable

from .base import Journal, JournalEntry
from .mongo_connections import MongoConnections
from .mongo_data import storable


def journal_id(event_id: str, call_no: int) -> str:
    return f"{len(event_id)}:{event_id}:{call_no}"   # length prefix: unambiguous for any id


def _entry(doc: dict) -> JournalEntry:
    return JournalEntry(doc["event_id"], doc["call_no"], doc["fingerprint"], doc["state"],
                        doc.get("request"), doc.get("response"), doc["updated_at"])


class MongoJournal(Journal):
    """The `journal` collection; requests and responses stored as JSON would store them."""

    def __init__(self, db: MongoConnections, clock: Callable[[], float] = time.time):
        self._db = db
        self._clock = clock

    def journal_get(self, event_id: str, call_no: int) -> JournalEntry | None:
        doc = self._db.call(lambda: self._db.journal.find_one({"_id": journal_id(event_id, call_no)}))
        return _entry(doc) if doc else None

    def journal_put_many(self, entries: list[JournalEntry]) -> None:
        """One bulk write of upserting replacements: one round trip (and one majority wait) for all,
        retryable as a whole since each operation touches one document."""
        from pymongo import ReplaceOne

        if not entries:
            return
        operations = [ReplaceOne({"_id": journal_id(entry.event_id, entry.call_no)},
                                 {"event_id": entry.event_id, "call_no": entry.call_no,
                                  "fingerprint": entry.fingerprint, "state": entry.state,
                                  "request": storable(entry.request), "response": storable(entry.response),
                                  "updated_at": entry.updated_at or self._clock()}, upsert=True)
                      for entry in entries]
        self._db.call(lambda: self._db.journal.bulk_write(operations, ordered=True))

    def journal_unfinished(self) -> list[JournalEntry]:
        return [_entry(doc) for doc in
                self._db.call(lambda: list(self._db.journal.find({"state": "started"}).sort("updated_at", 1)))]
