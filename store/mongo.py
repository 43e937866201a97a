"""The scale-out store: MongoDB (a replica set: change streams and transactions need one).

Same model as the SQLite store: an event's `_id` is its webhookEventId, `seq` (from a counter
reserving a block per append batch) is the store order, `head` marks the oldest pending-or-leased
event of each conversation key, `due` is not_before or lease expiry. Writes that move a key's
head run in a transaction together with an update of that key's document in `keys`, so an
append and an ack racing on one key conflict and are retried instead of losing the head.
Every write is w=majority, j=true, and every call is bounded in time (TRANSACTION_TIMEOUT_S, an
append by its callers' deadlines). Times the store compares (leases, backoffs, done and dead
times, statuses, rate-budget slices) are the server's clock (store/mongo_health.py), so hosts
with different clocks agree. The pieces of their own: the change feed (store/mongo_feed.py),
health off the caller's thread (store/mongo_health.py), the state counters behind stats()
(store/mongo_counts.py), what can be stored (store/mongo_data.py), URLs shown (store/mongo_url.py).
"""
from __future__ import annotations

import datetime
import logging
import time
from collections import Counter

from frontdesk.protocol.events import conversation_key, make_document

from .base import AppendResult, ChangeFeed, JournalEntry, Store, StoreError, StoreUnavailable, spent_error
from .groupcommit import GroupCommitter, follow_change
from .mongo_counts import StateCounts
from .mongo_data import is_data_error, storable
from .mongo_feed import MongoFeed
from .mongo_health import HealthCheck, ServerClock
from .mongo_url import redact_url

log = logging.getLogger("frontdesk.store.mongo")

PENDING, LEASED, DONE, DEAD = 0, 1, 2, 3
DEFAULT_DB = "frontdesk"
# One store call at most, its transaction's retries included (pymongo's with_transaction alone
# retries for up to 120 s). An append is bounded by its callers' deadlines (the ack budget).
TRANSACTION_TIMEOUT_S = 30.0
CHUNK = 500   # events per transaction in retention and dead-letter operations (a transaction lives 60 s at most)
INDEX_NOT_FOUND = 27


def _reason(exc: Exception) -> str:
    return str(exc).split(", Timeout:")[0]   # without pymongo's topology dump


def _utc(epoch_s: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(epoch_s, datetime.timezone.utc)


class MongoStore(Store):
    """The Store contract on a MongoDB replica set (docs/store.md, "MongoDB details")."""

    def __init__(self, url: str, append_linger_s: float = 0.0):
        import pymongo
        from pymongo.errors import PyMongoError
        from pymongo.read_concern import ReadConcern
        from pymongo.write_concern import WriteConcern

        self.url = url
        self.shown_url = redact_url(url)
        self._pymongo = pymongo
        self._write_concern = WriteConcern(w="majority", j=True)
        self._read_concern = ReadConcern("snapshot")
        self._clock = ServerClock()
        self._closed = False
        options = {} if "serverselectiontimeoutms" in url.lower() else {"serverSelectionTimeoutMS": 5000}
        try:
            self._client = pymongo.MongoClient(url, **options)
        except (PyMongoError, ValueError, TypeError) as exc:   # a malformed host list is a ValueError
            raise StoreError(f"store {self.shown_url}: bad MongoDB URL: {_reason(exc)}") from None
        try:
            db = self._client.get_default_database(DEFAULT_DB)
            hello = self._hello()
        except (PyMongoError, ValueError, TypeError) as exc:
            self._client.close()
            raise StoreError(f"store {self.shown_url}: cannot reach MongoDB: {_reason(exc)}") from None
        if "setName" not in hello:
            self._client.close()
            raise StoreError(f"store {self.shown_url}: MongoDB must run as a replica set (change streams "
                             "and transactions need one); start mongod with --replSet rs0 and rs.initiate()")
        self.db_name = db.name
        wc = {"write_concern": self._write_concern}
        self._events = db.get_collection("events", **wc)
        self._counters = db.get_collection("counters", **wc)
        self._keys = db.get_collection("keys", **wc)
        self._journal = db.get_collection("journal", **wc)
        self._users = db.get_collection("users", **wc)
        self._statuses = db.get_collection("statuses", **wc)
        self._controls = db.get_collection("controls", **wc)
        self._budget = db.get_collection("rate_budget", **wc)
        self._counts = StateCounts(self._counters)
        try:
            self._create_indexes()
            self._transaction(lambda session: self._counts.initialise(session, self._events))
        except (PyMongoError, StoreError) as exc:
            self._client.close()
            raise StoreError(f"store {self.shown_url}: cannot prepare the database: {_reason(exc)}") from None
        self._followers: list[MongoFeed] = []
        self._health = HealthCheck(self._check_health)
        self._writer = GroupCommitter(self.shown_url, self._commit_appends, lambda: None, append_linger_s,
                                      probe=lambda: self.set_control("health_probe", time.time()))

    def _hello(self) -> dict:
        """`hello` on the primary (so it fails while there is none); reads the server's clock."""
        sent_at = time.time()
        hello = self._client.admin.command("hello")
        answered_at = time.time()
        local_time = hello.get("localTime")
        if isinstance(local_time, datetime.datetime):
            if local_time.tzinfo is None:   # pymongo decodes BSON dates as naive UTC by default
                local_time = local_time.replace(tzinfo=datetime.timezone.utc)
            self._clock.observe(local_time.timestamp(), sent_at, answered_at)
        return hello

    def _check_health(self) -> None:
        from pymongo.errors import PyMongoError

        try:
            self._hello()
        except PyMongoError as exc:
            raise StoreUnavailable(_reason(exc)) from None

    def _create_indexes(self) -> None:
        from pymongo.errors import OperationFailure

        events = self._events
        events.create_index([("seq", 1), ("due", 1)], name="heads", partialFilterExpression={"head": True})
        events.create_index([("due", 1)], name="heads_due", partialFilterExpression={"head": True})
        events.create_index([("key", 1), ("seq", 1)], name="active",
                            partialFilterExpression={"state": {"$lt": DONE}})
        events.create_index([("state", 1), ("seq", 1)], name="state_seq")
        events.create_index([("done_at", 1)], name="done_at", partialFilterExpression={"state": DONE})
        self._journal.create_index([("state", 1)], name="started",
                                   partialFilterExpression={"state": "started"})
        self._journal.create_index([("event_id", 1)], name="event_id")
        # Retention is purge_done's alone: a TTL index (created by earlier versions) deleted done
        # events without their journal entries and without counting them.
        if "done_ttl" in events.index_information():
            try:
                events.drop_index("done_ttl")
                log.info("event=ttl_index_dropped reason=purge_done_owns_retention")
            except OperationFailure as exc:
                if exc.code != INDEX_NOT_FOUND:   # another process dropped it first
                    raise

    # --- plumbing ----------------------------------------------------------------------------------
    def _transaction(self, work, timeout_s: float = TRANSACTION_TIMEOUT_S):
        """Run work(session) in a majority-committed transaction, retried on transient conflicts
        for at most timeout_s. A write refused for what it holds raises StoreError (the request's
        fault); any other failure StoreUnavailable (the store's)."""
        from pymongo.errors import PyMongoError

        if self._closed:
            raise StoreUnavailable(f"store {self.shown_url} is closed")
        try:
            with self._pymongo.timeout(timeout_s), self._client.start_session() as session:
                return session.with_transaction(work, read_concern=self._read_concern,
                                                write_concern=self._write_concern)
        except PyMongoError as exc:
            if is_data_error(exc):
                raise StoreError(f"store {self.shown_url}: the server refused the write: {exc}") from None
            raise StoreUnavailable(f"store {self.shown_url}: {_reason(exc)}") from None

    def _call(self, work):
        """A single operation outside a transaction, bounded in time; errors turned into StoreUnavailable."""
        from pymongo.errors import PyMongoError

        if self._closed:
            raise StoreUnavailable(f"store {self.shown_url} is closed")
        try:
            with self._pymongo.timeout(TRANSACTION_TIMEOUT_S):
                return work()
        except PyMongoError as exc:
            raise StoreUnavailable(f"store {self.shown_url}: {_reason(exc)}") from None

    def _reserve_seqs(self, count: int, session) -> int:
        """Reserve `count` consecutive store-order numbers; returns the first."""
        top = self._counters.find_one_and_update(
            {"_id": "events"}, {"$inc": {"seq": count}}, upsert=True, session=session,
            return_document=self._pymongo.ReturnDocument.AFTER)["seq"]
        return top - count + 1

    def _add_active(self, per_key: dict[str, int], session) -> set[str]:
        """Count new pending events per key (one read and one bulk write, whatever the number of
        keys); returns the keys that had none (their first new event heads them)."""
        from pymongo import UpdateOne

        busy = {doc["_id"] for doc in self._keys.find({"_id": {"$in": list(per_key)}, "active": {"$gt": 0}},
                                                      {"_id": 1}, session=session)}
        self._keys.bulk_write([UpdateOne({"_id": key}, {"$inc": {"active": count}}, upsert=True)
                               for key, count in per_key.items()], ordered=False, session=session)
        return set(per_key) - busy

    # --- append (Store.append hands requests to self._writer) ---------------------------------------

    def _commit_appends(self, take) -> bool:
        live = take()   # MongoDB has no store-wide write lock to wait for first
        if not live:
            return False
        deadlines = [request.deadline for request in live]
        timeout_s = (TRANSACTION_TIMEOUT_S if None in deadlines
                     else max(0.001, max(deadlines) - time.monotonic()))   # no use after every caller gave up

        def work(session):
            all_ids = [event["webhookEventId"] for request in live for event in request.events]
            seen = {doc["_id"] for doc in self._events.find({"_id": {"$in": all_ids}}, {"_id": 1},
                                                             session=session)}
            results, docs, follows = [], [], []
            for request in live:
                result = AppendResult()
                for event in request.events:
                    event_id = event["webhookEventId"]
                    if event_id in seen:
                        result.duplicates.append(event_id)
                        continue
                    seen.add(event_id)
                    result.new.append(event_id)
                    docs.append({"_id": event_id, "key": conversation_key(event),
                                 "destination": request.destination, "event": event,
                                 "received_at": request.received_at_ms, "state": PENDING, "head": False,
                                 "due": 0.0, "attempt": 0})
                    if change := follow_change(event):
                        follows.append(change)
                results.append(result)
            if docs:
                idle = self._add_active(Counter(doc["key"] for doc in docs), session)
                for doc in docs:
                    if doc["key"] in idle:
                        doc["head"] = True
                        idle.discard(doc["key"])
                for kind, user_id, at in follows:
                    self._record_follow(kind, user_id, at, session)
                # the counter every append writes, as late as can be: two receivers' commits
                # conflict on it only while one of them is inserting and committing
                first = self._reserve_seqs(len(docs), session)
                for offset, doc in enumerate(docs):
                    doc["seq"] = first + offset
                self._events.insert_many(docs, session=session)
                self._counts.add(session, {PENDING: len(docs)})
            return results

        results = self._transaction(work, timeout_s)
        for request, result in zip(live, results):
            request.result = result
        return any(result.new for result in results)

    def _record_follow(self, kind: str, user_id: str, at: float, session) -> None:
        """Follow state changes only when the event is newer than what is recorded."""
        user = self._users.find_one({"_id": user_id}, session=session) or {}
        if at <= max(user.get("followed_at") or 0, user.get("unfollowed_at") or 0):
            return
        field = "followed_at" if kind == "follow" else "unfollowed_at"
        self._users.update_one({"_id": user_id}, {"$set": {"followed": kind == "follow", field: at}},
                               upsert=True, session=session)

    def health(self) -> None:
        """Never blocks: the server is asked on the health thread (store/mongo_health.py)."""
        self._writer.ask_probe()   # a majority write at most once a second: see SQLiteStore.health
        if self._closed:
            raise StoreUnavailable(f"store {self.shown_url} is closed")
        if not self._writer.alive():
            raise StoreUnavailable(f"store {self.shown_url}: the writer thread has stopped")
        if self._writer.last_error:
            raise StoreUnavailable(self._writer.last_error)
        problem = self._health.problem()
        if problem:
            raise StoreUnavailable(f"store {self.shown_url}: {problem}")

    # --- handing out -----------------------------------------------------------------------------------
    def _document(self, doc: dict, attempt: int) -> dict:
        return make_document(doc["seq"], self.db_name, doc["_id"], doc["destination"], doc["event"],
                             doc["key"], doc["received_at"], attempt)

    def claim(self, owner: str, limit: int, lease_s: float, max_attempts: int | None = None,
              run: int = 1) -> list[dict]:
        if limit <= 0:
            return []

        def work(session):
            now = self._clock.now()
            docs = list(self._events.find({"head": True, "due": {"$lte": now}}, session=session)
                        .sort("seq", 1).limit(limit))
            if max_attempts is not None and any(doc["attempt"] >= max_attempts for doc in docs):
                self._bury_spent(session, owner, [d for d in docs if d["attempt"] >= max_attempts], max_attempts)
                docs = [doc for doc in docs if doc["attempt"] < max_attempts]
            if docs:
                self._events.update_many({"_id": {"$in": [doc["_id"] for doc in docs]}},
                                         {"$set": {"state": LEASED, "owner": owner, "due": now + lease_s},
                                          "$inc": {"attempt": 1}}, session=session)
                pending = sum(doc["state"] == PENDING for doc in docs)   # the others' leases had run out
                self._counts.add(session, {PENDING: -pending, LEASED: pending})
            if run > 1 and 0 < len(docs) < limit:
                docs += self._lease_runs(session, owner, docs, limit - len(docs), run - 1, now, now + lease_s)
            return docs

        return [self._document(doc, doc["attempt"] + 1)
                for doc in sorted(self._transaction(work), key=lambda doc: doc["seq"])]

    def _lease_runs(self, session, owner: str, heads: list[dict], room: int, followers: int, now: float,
                    until: float) -> list[dict]:
        """Lease the unbroken run of pending, due events behind each claimed head (see
        SQLiteStore._lease_runs): their attempt is charged when each becomes head (_finish)."""
        leased = []
        for head in heads:
            if room <= 0:
                break
            run = []
            for doc in (self._events.find({"key": head["key"], "state": {"$lt": DONE}, "seq": {"$gt": head["seq"]}},
                                          session=session).sort("seq", 1).limit(min(followers, room))):
                if doc["state"] != PENDING or doc["due"] > now:
                    break
                run.append(doc)
            if run:
                room -= len(run)
                moved = self._events.update_many({"_id": {"$in": [doc["_id"] for doc in run]}, "state": PENDING},
                                                 {"$set": {"state": LEASED, "owner": owner, "due": until}},
                                                 session=session).modified_count
                self._counts.add(session, {PENDING: -moved, LEASED: moved})
                leased += run
        return leased

    def _bury_spent(self, session, owner: str, docs: list[dict], max_attempts: int) -> None:
        """Dead-letter events whose every attempt ended without an answer, instead of handing them out."""
        for doc in docs:
            self._events.update_one({"_id": doc["_id"]}, {"$set": {"state": LEASED, "owner": owner}},
                                    session=session)
            self._finish(session, owner, doc["_id"], DEAD, spent_error(max_attempts, doc.get("error")))
            was_pending = int(doc["state"] == PENDING)
            self._counts.add(session, {PENDING: -was_pending, LEASED: was_pending - 1, DEAD: 1})
            log.warning("event_dead_lettered id=%s attempts=%d reason=attempts_spent", doc["_id"], max_attempts)

    def _finish(self, session, owner: str, event_id: str, state: int, error: str | None) -> bool:
        """Move one event leased to owner to done/dead and hand its key's head on; the caller
        counts it (one counter write per transaction)."""
        fields = {"state": state, "head": False, "owner": None}
        if state == DONE:
            fields["done_at"] = _utc(self._clock.now())
        else:
            fields.update(dead_at=self._clock.now(), error=error)
        doc = self._events.find_one_and_update({"_id": event_id, "owner": owner, "state": LEASED},
                                               {"$set": fields}, projection={"key": 1}, session=session)
        if doc is None:
            return False
        self._keys.update_one({"_id": doc["key"]}, {"$inc": {"active": -1}}, session=session)
        following = self._events.find_one({"key": doc["key"], "state": {"$lt": DONE}}, {"state": 1, "owner": 1},
                                          sort=[("seq", 1)], session=session)
        if following is not None:   # a follower this owner leased with its run is charged its delivery now
            ours = following["state"] == LEASED and following.get("owner") == owner
            self._events.update_one({"_id": following["_id"]},
                                    {"$set": {"head": True}, "$inc": {"attempt": 1 if ours else 0}}, session=session)
        return True

    def ack(self, owner: str, event_ids: list[str]) -> None:
        if not event_ids:
            return

        def work(session):
            done = sum(self._finish(session, owner, event_id, DONE, None) for event_id in event_ids)
            self._counts.add(session, {LEASED: -done, DONE: done})

        self._transaction(work)

    def nack(self, owner: str, event_id: str, error: str, retry: bool, max_attempts: int,
             backoff_s: float, backoff_max_s: float) -> str:
        def work(session):
            doc = self._events.find_one({"_id": event_id, "owner": owner, "state": LEASED},
                                        {"attempt": 1}, session=session)
            if doc is None:
                return "lost"
            attempt = doc["attempt"]
            if not retry or attempt >= max_attempts:
                self._finish(session, owner, event_id, DEAD, error)
                self._counts.add(session, {LEASED: -1, DEAD: 1})
                return "dead"
            delay = min(backoff_s * 2 ** max(attempt - 1, 0), backoff_max_s)
            self._events.update_one({"_id": event_id}, {"$set": {"state": PENDING, "owner": None,
                                                                  "due": self._clock.now() + delay,
                                                                  "error": error}}, session=session)
            self._counts.add(session, {LEASED: -1, PENDING: 1})
            return "pending"

        state = self._transaction(work)
        if state == "dead":
            log.warning("event_dead_lettered id=%s retry=%s", event_id, retry)
        return state

    def release(self, owner: str, event_ids: list[str]) -> None:
        """Back to pending, claimable at once; the delivery is not counted (attempt - 1 for a head,
        whose attempt was charged; a follower's never was)."""
        if not event_ids:
            return

        def work(session):
            released = self._events.update_many(
                {"_id": {"$in": list(event_ids)}, "owner": owner, "state": LEASED},
                [{"$set": {"state": PENDING, "owner": None, "due": self._clock.now(), "attempt": {"$max": [
                    {"$subtract": ["$attempt", {"$cond": ["$head", 1, 0]}]}, 0]}}}],
                session=session).modified_count
            self._counts.add(session, {LEASED: -released, PENDING: released})

        self._transaction(work)

    def expire_leases(self, owner: str) -> int:
        """The owner is removed (the change feed wakes the dispatchers on that): its events stay
        leased to no one until claimed, so a follower of its runs is taken over as a head."""
        return self._call(lambda: self._events.update_many(
            {"owner": owner, "state": LEASED},
            {"$set": {"due": self._clock.now()}, "$unset": {"owner": ""}})).modified_count

    def extend_leases(self, owner: str, event_ids: list[str], lease_s: float) -> None:
        if event_ids:
            until = self._clock.now() + lease_s
            self._call(lambda: self._events.update_many(
                {"_id": {"$in": list(event_ids)}, "owner": owner, "state": LEASED}, {"$set": {"due": until}}))

    def next_wakeup(self) -> float | None:
        doc = self._call(lambda: self._events.find_one({"head": True, "due": {"$gt": self._clock.now()}},
                                                       {"due": 1}, sort=[("due", 1)]))
        return self._clock.to_local(doc["due"]) if doc else None

    def change_feed(self) -> ChangeFeed:
        """Follows from the moment it returns (its stream is open), with no wake-up of its own."""
        from pymongo.errors import PyMongoError

        if self._closed:
            raise StoreUnavailable(f"store {self.shown_url} is closed")
        try:
            feed = MongoFeed(self._events)
        except PyMongoError as exc:
            raise StoreUnavailable(f"store {self.shown_url}: cannot open a change stream: {_reason(exc)}") from None
        self._followers.append(feed)
        return feed

    # --- dead letters and retention ------------------------------------------------------------------------
    def dead_letters(self, limit: int = 100) -> list[dict]:
        """`limit` as SQL's LIMIT, as in SQLite: 0 gives none, a negative one no limit (pymongo's
        limit(0) would mean no limit, and a negative one |n| in one batch)."""
        if limit == 0:
            return []

        def read():
            cursor = self._events.find({"state": DEAD}).sort("seq", 1)
            return list(cursor.limit(limit) if limit > 0 else cursor)

        return [{"id": doc["_id"], "key": doc["key"], "attempts": doc["attempt"], "error": doc.get("error"),
                 "dead_at": self._clock.to_local(doc["dead_at"]) if doc.get("dead_at") is not None else None,
                 "event": doc["event"]} for doc in self._call(read)]

    def retry_dead(self, event_ids: list[str] | None = None) -> int:
        """Re-queue at the end of the queue (a new seq) with a fresh attempt count, as SQLite does,
        CHUNK dead letters per transaction."""
        if event_ids is None:   # those dead now: a re-queued one that dies again meanwhile stays
            top = self._call(lambda: self._counters.find_one({"_id": "events"}) or {}).get("seq", 0)
            count = self._in_chunks(self._requeue, {"state": DEAD, "seq": {"$lte": top}}, None)
        else:
            count = self._in_chunks(self._requeue, {"state": DEAD}, event_ids)
        if count:
            log.info("dead_letters_requeued count=%d", count)
        return count

    def drop_dead(self, event_ids: list[str] | None = None) -> int:
        count = self._in_chunks(self._drop, {"state": DEAD}, event_ids)
        if count:
            log.info("dead_letters_dropped count=%d", count)
        return count

    def _in_chunks(self, step, match: dict, event_ids: list[str] | None) -> int:
        """step(session, filter) for up to CHUNK events per transaction: of `event_ids` CHUNK at a
        time, or (None) until one finds fewer than CHUNK: one transaction for 100,000 dead letters
        would outlive MongoDB's 60 s transaction lifetime."""
        total = 0
        if event_ids is None:
            while (done := self._transaction(lambda session: step(session, match))) == CHUNK:
                total += done
            return total + done
        unique = list(dict.fromkeys(event_ids))
        for first in range(0, len(unique), CHUNK):
            chunk = {**match, "_id": {"$in": unique[first:first + CHUNK]}}
            total += self._transaction(lambda session: step(session, chunk))
        return total

    def _requeue(self, session, match: dict) -> int:
        from pymongo import UpdateOne

        docs = list(self._events.find(match, {"_id": 1, "key": 1}, session=session).sort("seq", 1).limit(CHUNK))
        if not docs:
            return 0
        idle = self._add_active(Counter(doc["key"] for doc in docs), session)
        first = self._reserve_seqs(len(docs), session)
        updates = []
        for offset, doc in enumerate(docs):
            heads = doc["key"] in idle
            idle.discard(doc["key"])
            updates.append(UpdateOne({"_id": doc["_id"]}, {
                "$set": {"state": PENDING, "seq": first + offset, "head": heads, "due": 0.0, "attempt": 0},
                "$unset": {"error": "", "dead_at": "", "owner": ""}}))
        self._events.bulk_write(updates, ordered=True, session=session)
        self._counts.add(session, {DEAD: -len(docs), PENDING: len(docs)})
        return len(docs)

    def _drop(self, session, match: dict) -> int:
        ids = [doc["_id"] for doc in self._events.find(match, {"_id": 1}, session=session).limit(CHUNK)]
        if not ids:
            return 0
        dropped = self._events.delete_many({"_id": {"$in": ids}, "state": DEAD}, session=session).deleted_count
        self._journal.delete_many({"event_id": {"$in": ids}}, session=session)
        self._counts.add(session, {DEAD: -dropped})
        return dropped

    def purge_done(self, older_than_s: float) -> int:
        """Retention's one owner (no TTL index): done events finished before older_than_s ago by
        the server's clock, with their call-journal entries, CHUNK per transaction."""
        match = {"state": DONE, "done_at": {"$lt": _utc(self._clock.now() - older_than_s)}}

        def purge(session, match):
            ids = [doc["_id"] for doc in self._events.find(match, {"_id": 1}, session=session).limit(CHUNK)]
            if not ids:
                return 0
            purged = self._events.delete_many({"_id": {"$in": ids}, "state": DONE}, session=session).deleted_count
            self._journal.delete_many({"event_id": {"$in": ids}}, session=session)
            self._counts.add(session, {DONE: -purged})
            return purged

        total = self._in_chunks(purge, match, None)
        if total:
            log.info("done_events_purged count=%d older_than_s=%g", total, older_than_s)
        return total

    # --- call journal -----------------------------------------------------------------------------------------
    @staticmethod
    def _journal_id(event_id: str, call_no: int) -> str:
        return f"{len(event_id)}:{event_id}:{call_no}"   # length prefix: unambiguous for any id

    def journal_get(self, event_id: str, call_no: int) -> JournalEntry | None:
        doc = self._call(lambda: self._journal.find_one({"_id": self._journal_id(event_id, call_no)}))
        return self._entry(doc) if doc else None

    @staticmethod
    def _entry(doc: dict) -> JournalEntry:
        return JournalEntry(doc["event_id"], doc["call_no"], doc["fingerprint"], doc["state"],
                            doc.get("request"), doc.get("response"), doc["updated_at"])

    def journal_put(self, entry: JournalEntry) -> None:
        self.journal_put_many([entry])

    def journal_put_many(self, entries: list[JournalEntry]) -> None:
        """One bulk write of upserting replacements: one round trip (and one majority wait) for all,
        retryable as a whole since each operation touches one document."""
        from pymongo import ReplaceOne

        if not entries:
            return
        operations = [ReplaceOne({"_id": self._journal_id(entry.event_id, entry.call_no)},
                                 {"event_id": entry.event_id, "call_no": entry.call_no,
                                  "fingerprint": entry.fingerprint, "state": entry.state,
                                  "request": storable(entry.request), "response": storable(entry.response),
                                  "updated_at": entry.updated_at or time.time()}, upsert=True)
                      for entry in entries]
        self._call(lambda: self._journal.bulk_write(operations, ordered=True))

    def journal_unfinished(self) -> list[JournalEntry]:
        return [self._entry(doc) for doc in
                self._call(lambda: list(self._journal.find({"state": "started"}).sort("updated_at", 1)))]

    # --- shared rate budget ---------------------------------------------------------------------------------------
    def budget_lease(self, endpoint: str, seconds: float, now: float,
                     max_ahead_s: float) -> tuple[bool, float]:
        """One atomic find_one_and_update on the endpoint's document (a retryable write): the filter
        lets it through only while the reservation ends within now + max_ahead_s; an upsert that
        meets an existing document (reserved too far ahead, or created by a concurrent first
        lease) raises DuplicateKeyError, and the document as it is then answers. Slices are the
        server's time: `now` and the answer are the caller's."""
        from pymongo.errors import DuplicateKeyError

        at = self._clock.to_server(now)
        reserve = [{"$set": {"reserved_until": {"$add": [{"$max": ["$reserved_until", at]}, seconds]}}}]

        def lease():
            for _ in range(2):   # the second round: a concurrent first lease created the document
                try:
                    before = self._budget.find_one_and_update(
                        {"_id": endpoint, "reserved_until": {"$lte": at + max_ahead_s}}, reserve,
                        upsert=True, return_document=self._pymongo.ReturnDocument.BEFORE)
                except DuplicateKeyError:
                    current = self._budget.find_one({"_id": endpoint}) or {}
                    reserved_until = current.get("reserved_until", at)
                    if reserved_until > at + max_ahead_s:
                        return False, self._clock.to_local(reserved_until)
                    continue
                if before is None or before["reserved_until"] <= at:
                    return True, now
                return True, self._clock.to_local(before["reserved_until"])
            return False, now   # lost twice to concurrent leases: ask again at once
        return self._call(lease)

    # --- users ----------------------------------------------------------------------------------------------------
    def user_get(self, user_id: str) -> dict | None:
        doc = self._call(lambda: self._users.find_one({"_id": user_id}))
        if doc is None:
            return None
        return {"user_id": user_id, "profile": doc.get("profile"),
                "profile_fetched_at": doc.get("profile_fetched_at"), "followed": doc.get("followed"),
                "followed_at": doc.get("followed_at"), "unfollowed_at": doc.get("unfollowed_at"),
                "data": doc.get("data", {})}

    def user_put_profile(self, user_id: str, profile: dict, fetched_at: float) -> None:
        profile = storable(profile)
        self._call(lambda: self._users.update_one(
            {"_id": user_id}, {"$set": {"profile": profile, "profile_fetched_at": fetched_at}}, upsert=True))

    def user_set_data(self, user_id: str, data: dict) -> None:
        data = storable(data)
        self._call(lambda: self._users.update_one({"_id": user_id}, {"$set": {"data": data}}, upsert=True))

    # --- observation and control ----------------------------------------------------------------------------------
    def stats(self) -> dict:
        """The state counters (store/mongo_counts.py) and the oldest head, pending or leased: the
        first entry of the heads index. A few documents read at any queue size."""
        def read():
            counts = self._counts.read()
            oldest = self._events.find_one({"head": True}, {"received_at": 1}, sort=[("seq", 1)])
            age = max(0.0, time.time() - oldest["received_at"] / 1000.0) if oldest else 0.0
            return {**counts, "oldest_pending_s": round(age, 3)}
        return self._call(read)

    def busiest_keys(self, limit: int = 1) -> list[tuple[str, int]]:
        """`limit` as SQL's LIMIT (0: none, negative: no limit); $limit takes positive numbers only."""
        if limit == 0:
            return []
        pipeline = [{"$match": {"state": {"$in": [PENDING, LEASED]}}},
                    {"$group": {"_id": "$key", "n": {"$sum": 1}}},
                    {"$sort": {"n": -1, "_id": 1}}] + ([{"$limit": limit}] if limit > 0 else [])
        return self._call(lambda: [(doc["_id"], doc["n"]) for doc in self._events.aggregate(pipeline)])

    def put_status(self, name: str, status: dict) -> None:
        document = {"doc": storable(status), "updated_at": self._clock.now()}
        self._call(lambda: self._statuses.replace_one({"_id": name}, document, upsert=True))

    def get_statuses(self) -> dict[str, dict]:
        """Every published status document, each with "updated_at" (epoch s, this host's clock) added."""
        return {doc["_id"]: {**doc["doc"], "updated_at": self._clock.to_local(doc["updated_at"])}
                for doc in self._call(lambda: list(self._statuses.find()))}

    def delete_status(self, name: str) -> None:
        self._call(lambda: self._statuses.delete_one({"_id": name}))

    def prune_statuses(self, older_than_s: float) -> int:
        cutoff = self._clock.now() - older_than_s
        return self._call(lambda: self._statuses.delete_many({"updated_at": {"$lt": cutoff}}).deleted_count)

    def set_control(self, name: str, value) -> None:
        document = {"value": storable(value)}
        self._call(lambda: self._controls.replace_one({"_id": name}, document, upsert=True))

    def get_control(self, name: str):
        doc = self._call(lambda: self._controls.find_one({"_id": name}))
        return doc["value"] if doc else None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._writer.stop()
        self._health.stop()
        for follower in self._followers:
            follower.close()
        self._client.close()
