"""The MongoDB store's queue, handing out: claims and runs, leases, acks, nacks and releases.

The same model as SQLite's (store/sqlite_queue.py): `head` marks the oldest pending-or-leased
event of each conversation key, `due` is not_before or lease expiry, by the server's clock.
Every move runs in a transaction that also updates the state counters (store/mongo_counts.py);
the decisions both backends share (backoff, dead letters, runs) are store/rules.py's.
"""
from __future__ import annotations

import logging

from frontdesk.protocol.events import make_document

from .base import DEAD, DONE, LEASED, PENDING, Queue
from .mongo_connections import MongoConnections, utc
from .rules import after_nack, is_spent, run_length, spent_error

log = logging.getLogger("frontdesk.store.mongo")


class MongoQueue(Queue):
    """Moves events between states for one MongoDB store. Its change feed (store/mongo_feed.py)
    follows the documents, so nothing here wakes followers."""

    def __init__(self, db: MongoConnections):
        self._db = db

    def _document(self, doc: dict, attempt: int) -> dict:
        return make_document(doc["seq"], self._db.db_name, doc["_id"], doc["destination"], doc["event"],
                             doc["key"], doc["received_at"], attempt)

    def claim(self, owner: str, limit: int, lease_s: float, max_attempts: int | None = None,
              run: int = 1) -> list[dict]:
        if limit <= 0:
            return []
        events, counts = self._db.events, self._db.counts

        def work(session):
            now = self._db.clock.now()
            docs = list(events.find({"head": True, "due": {"$lte": now}}, session=session).sort("seq", 1).limit(limit))
            spent = [doc for doc in docs if is_spent(doc["attempt"], max_attempts)]
            if spent:
                self._bury_spent(session, owner, spent, max_attempts)
                docs = [doc for doc in docs if not is_spent(doc["attempt"], max_attempts)]
            if docs:
                events.update_many({"_id": {"$in": [doc["_id"] for doc in docs]}},
                                   {"$set": {"state": LEASED, "owner": owner, "due": now + lease_s},
                                    "$inc": {"attempt": 1}}, session=session)
                pending = sum(doc["state"] == PENDING for doc in docs)   # the others' leases had run out
                counts.add(session, {PENDING: -pending, LEASED: pending})
            if run > 1 and 0 < len(docs) < limit:
                docs += self._lease_runs(session, owner, docs, limit - len(docs), run - 1, now, now + lease_s)
            return docs

        return [self._document(doc, doc["attempt"] + 1)
                for doc in sorted(self._db.transaction(work), key=lambda doc: doc["seq"])]

    def _lease_runs(self, session, owner: str, heads: list[dict], room: int, followers: int, now: float,
                    until: float) -> list[dict]:
        """Lease the unbroken run of pending, due events behind each claimed head (rules.run_length):
        their attempt is charged when each becomes head (_finish)."""
        leased = []
        for head in heads:
            if room <= 0:
                break
            behind = list(self._db.events.find({"key": head["key"], "state": {"$lt": DONE}, "seq": {"$gt": head["seq"]}},
                                               session=session).sort("seq", 1).limit(min(followers, room)))
            run = behind[:run_length(((doc["state"], doc["due"]) for doc in behind), now)]
            if run:
                room -= len(run)
                moved = self._db.events.update_many({"_id": {"$in": [doc["_id"] for doc in run]}, "state": PENDING},
                                                    {"$set": {"state": LEASED, "owner": owner, "due": until}},
                                                    session=session).modified_count
                self._db.counts.add(session, {PENDING: -moved, LEASED: moved})
                leased += run
        return leased

    def _bury_spent(self, session, owner: str, docs: list[dict], max_attempts: int) -> None:
        """Dead-letter events whose every attempt ended without an answer, instead of handing them out."""
        for doc in docs:
            self._db.events.update_one({"_id": doc["_id"]}, {"$set": {"state": LEASED, "owner": owner}},
                                       session=session)
            self._finish(session, owner, doc["_id"], DEAD, spent_error(max_attempts, doc.get("error")))
            was_pending = int(doc["state"] == PENDING)
            self._db.counts.add(session, {PENDING: -was_pending, LEASED: was_pending - 1, DEAD: 1})
            log.warning("event=event_dead_lettered id=%s attempts=%d reason=attempts_spent", doc["_id"],
                        max_attempts)

    def _finish(self, session, owner: str, event_id: str, state: int, error: str | None) -> bool:
        """Move one event leased to owner to done/dead and hand its key's head on; the caller
        counts it (one counter write per transaction)."""
        events, now = self._db.events, self._db.clock.now()
        fields = {"state": state, "head": False, "owner": None}
        if state == DONE:
            fields["done_at"] = utc(now)
        else:
            fields.update(dead_at=now, error=error)
        doc = events.find_one_and_update({"_id": event_id, "owner": owner, "state": LEASED},
                                         {"$set": fields}, projection={"key": 1}, session=session)
        if doc is None:
            return False
        self._db.keys.update_one({"_id": doc["key"]}, {"$inc": {"active": -1}}, session=session)
        following = events.find_one({"key": doc["key"], "state": {"$lt": DONE}}, {"state": 1, "owner": 1},
                                    sort=[("seq", 1)], session=session)
        if following is not None:   # a follower this owner leased with its run is charged its delivery now
            ours = following["state"] == LEASED and following.get("owner") == owner
            events.update_one({"_id": following["_id"]},
                              {"$set": {"head": True}, "$inc": {"attempt": 1 if ours else 0}}, session=session)
        return True

    def ack(self, owner: str, event_ids: list[str]) -> None:
        if not event_ids:
            return

        def work(session):
            done = sum(self._finish(session, owner, event_id, DONE, None) for event_id in event_ids)
            self._db.counts.add(session, {LEASED: -done, DONE: done})

        self._db.transaction(work)

    def nack(self, owner: str, event_id: str, error: str, retry: bool, max_attempts: int,
             backoff_s: float, backoff_max_s: float) -> str:
        def work(session):
            doc = self._db.events.find_one({"_id": event_id, "owner": owner, "state": LEASED},
                                           {"attempt": 1}, session=session)
            if doc is None:
                return "lost", 0
            outcome = after_nack(doc["attempt"], retry, max_attempts, backoff_s, backoff_max_s)
            if outcome.dead:
                self._finish(session, owner, event_id, DEAD, error)
                self._db.counts.add(session, {LEASED: -1, DEAD: 1})
                return "dead", doc["attempt"]
            self._db.events.update_one({"_id": event_id}, {"$set": {
                "state": PENDING, "owner": None, "due": self._db.clock.now() + outcome.delay_s, "error": error}},
                session=session)
            self._db.counts.add(session, {LEASED: -1, PENDING: 1})
            return "pending", doc["attempt"]

        state, attempt = self._db.transaction(work)
        if state == "dead":
            log.warning("event=event_dead_lettered id=%s attempts=%d retry=%s", event_id, attempt, retry)
        return state

    def release(self, owner: str, event_ids: list[str]) -> None:
        """Back to pending, claimable at once; the delivery is not counted (attempt - 1 for a head,
        whose attempt was charged; a follower's never was)."""
        if not event_ids:
            return

        def work(session):
            released = self._db.events.update_many(
                {"_id": {"$in": list(event_ids)}, "owner": owner, "state": LEASED},
                [{"$set": {"state": PENDING, "owner": None, "due": self._db.clock.now(), "attempt": {"$max": [
                    {"$subtract": ["$attempt", {"$cond": ["$head", 1, 0]}]}, 0]}}}],
                session=session).modified_count
            self._db.counts.add(session, {LEASED: -released, PENDING: released})

        self._db.transaction(work)

    def expire_leases(self, owner: str) -> int:
        """The owner is removed (the change feed wakes the dispatchers on that): its events stay
        leased to no one until claimed, so a follower of its runs is taken over as a head."""
        return self._db.call(lambda: self._db.events.update_many(
            {"owner": owner, "state": LEASED},
            {"$set": {"due": self._db.clock.now()}, "$unset": {"owner": ""}})).modified_count

    def extend_leases(self, owner: str, event_ids: list[str], lease_s: float) -> None:
        if event_ids:
            until = self._db.clock.now() + lease_s
            self._db.call(lambda: self._db.events.update_many(
                {"_id": {"$in": list(event_ids)}, "owner": owner, "state": LEASED}, {"$set": {"due": until}}))

    def next_wakeup(self) -> float | None:
        clock = self._db.clock
        doc = self._db.call(lambda: self._db.events.find_one({"head": True, "due": {"$gt": clock.now()}},
                                                             {"due": 1}, sort=[("due", 1)]))
        return clock.to_local(doc["due"]) if doc else None
