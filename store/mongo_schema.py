"""The MongoDB store's schema: the indexes every query relies on, and the state counters, made
when a store is opened (idempotent: every process opening the store does it)."""
from __future__ import annotations

import logging

from .base import DONE, StoreError
from .mongo_connections import MongoConnections, reason

log = logging.getLogger("frontdesk.store.mongo")

INDEX_NOT_FOUND = 27


def prepare(db: MongoConnections) -> None:
    """Create the indexes and count a store that has no state counters yet (store/mongo_counts.py).

    Raises:
        StoreError: the database cannot be prepared.
    """
    from pymongo.errors import PyMongoError

    try:
        _create_indexes(db)
        db.transaction(lambda session: db.counts.initialise(session, db.events))
    except (PyMongoError, StoreError) as exc:
        raise StoreError(f"store {db.shown_url}: cannot prepare the database: {reason(exc)}") from None


def _create_indexes(db: MongoConnections) -> None:
    from pymongo.errors import OperationFailure

    events = db.events
    events.create_index([("seq", 1), ("due", 1)], name="heads", partialFilterExpression={"head": True})
    events.create_index([("due", 1)], name="heads_due", partialFilterExpression={"head": True})
    events.create_index([("key", 1), ("seq", 1)], name="active",
                        partialFilterExpression={"state": {"$lt": DONE}})
    events.create_index([("state", 1), ("seq", 1)], name="state_seq")
    events.create_index([("done_at", 1)], name="done_at", partialFilterExpression={"state": DONE})
    db.journal.create_index([("state", 1)], name="started", partialFilterExpression={"state": "started"})
    db.journal.create_index([("event_id", 1)], name="event_id")
    # Retention is purge_done's alone: a TTL index (created by earlier versions) deleted done
    # events without their journal entries and without counting them.
    if "done_ttl" in events.index_information():
        try:
            events.drop_index("done_ttl")
            log.info("event=ttl_index_dropped reason=purge_done_owns_retention")
        except OperationFailure as exc:
            if exc.code != INDEX_NOT_FOUND:   # another process dropped it first
                raise
