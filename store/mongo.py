"""The scale-out store: MongoDB (a replica set: change streams and transactions need one).

Same model as the SQLite store: an event's `_id` is its webhookEventId, `seq` (from a counter
reserving a block per append batch) is the store order, `head` marks the oldest pending-or-leased
event of each conversation key, `due` is not_before or lease expiry. Writes that move a key's
head run in a transaction together with an update of that key's document in `keys`, so an
append and an ack racing on one key conflict and are retried instead of losing the head.
Every write is w=majority, j=true. Done events expire through a TTL index on `done_at`.
The change feed is a change stream followed in a thread that writes a byte to a socketpair;
its resume token is saved in the store so a restarted dispatcher continues where it stopped.
"""
from __future__ import annotations

import datetime
import logging
import socket
import threading
import time
from urllib.parse import urlsplit, urlunsplit

from frontdesk.protocol.events import conversation_key, make_document

from .base import AppendResult, ChangeFeed, JournalEntry, Store, StoreError, StoreUnavailable, spent_error
from .groupcommit import GroupCommitter, follow_change

log = logging.getLogger("frontdesk.store.mongo")

PENDING, LEASED, DONE, DEAD = 0, 1, 2, 3
DEFAULT_DB = "frontdesk"
CHANGE_STREAM_HISTORY_LOST = 286
FEED_AWAIT_MS = 1000          # how long one change-stream getMore waits on the server
TOKEN_SAVE_INTERVAL_S = 1.0   # resume tokens are saved at most this often (and on close)
PURGE_CHUNK = 2000


def redact_url(url: str) -> str:
    """The URL with any password replaced, fit for logs and output."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class MongoStore(Store):
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
        options = {} if "serverselectiontimeoutms" in url.lower() else {"serverSelectionTimeoutMS": 5000}
        try:
            self._client = pymongo.MongoClient(url, **options)
            db = self._client.get_default_database(DEFAULT_DB)
            hello = self._client.admin.command("hello")
        except PyMongoError as exc:
            reason = str(exc).split(", Timeout:")[0]   # drop pymongo's topology dump
            raise StoreError(f"store {self.shown_url}: cannot reach MongoDB: {reason}") from None
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
        self._feed_state = db.get_collection("feed_state", **wc)
        self._budget = db.get_collection("rate_budget", **wc)
        try:
            self._create_indexes()
        except PyMongoError as exc:
            self._client.close()
            raise StoreError(f"store {self.shown_url}: cannot create indexes: {exc}") from None
        self._followers: list[MongoFeed] = []
        self._closed = False
        self._writer = GroupCommitter(self.shown_url, self._commit_appends, lambda: None, append_linger_s,
                                      probe=lambda: self.set_control("health_probe", time.time()))

    def _create_indexes(self) -> None:
        events = self._events
        events.create_index([("seq", 1), ("due", 1)], name="heads", partialFilterExpression={"head": True})
        events.create_index([("due", 1)], name="heads_due", partialFilterExpression={"head": True})
        events.create_index([("key", 1), ("seq", 1)], name="active",
                            partialFilterExpression={"state": {"$lt": DONE}})
        events.create_index([("state", 1), ("seq", 1)], name="state_seq")
        self._journal.create_index([("state", 1)], name="started",
                                   partialFilterExpression={"state": "started"})
        self._journal.create_index([("event_id", 1)], name="event_id")

    # --- plumbing ----------------------------------------------------------------------------------
    def _transaction(self, work):
        """Run work(session) in a majority-committed transaction (retried on transient conflicts)."""
        from pymongo.errors import PyMongoError

        if self._closed:
            raise StoreUnavailable(f"store {self.shown_url} is closed")
        try:
            with self._client.start_session() as session:
                return session.with_transaction(work, read_concern=self._read_concern,
                                                write_concern=self._write_concern)
        except PyMongoError as exc:
            raise StoreUnavailable(f"store {self.shown_url}: {exc}") from None

    def _call(self, work):
        """A single-document operation, errors turned into StoreUnavailable."""
        from pymongo.errors import PyMongoError

        if self._closed:
            raise StoreUnavailable(f"store {self.shown_url} is closed")
        try:
            return work()
        except PyMongoError as exc:
            raise StoreUnavailable(f"store {self.shown_url}: {exc}") from None

    def _reserve_seqs(self, count: int, session) -> int:
        """Reserve `count` consecutive store-order numbers; returns the first."""
        top = self._counters.find_one_and_update(
            {"_id": "events"}, {"$inc": {"seq": count}}, upsert=True, session=session,
            return_document=self._pymongo.ReturnDocument.AFTER)["seq"]
        return top - count + 1

    def _add_active(self, keys_in_order: dict[str, int], session) -> set[str]:
        """Count new pending events per key; returns the keys that had none (their first new one heads)."""
        idle = set()
        for key, count in keys_in_order.items():
            before = self._keys.find_one_and_update({"_id": key}, {"$inc": {"active": count}}, upsert=True,
                                                    session=session)
            if before is None or before.get("active", 0) <= 0:
                idle.add(key)
        return idle

    # --- append (Store.append hands requests to self._writer) ---------------------------------------

    def _commit_appends(self, take) -> bool:
        live = take()   # MongoDB has no store-wide write lock to wait for first
        if not live:
            return False

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
                first = self._reserve_seqs(len(docs), session)
                per_key: dict[str, int] = {}
                for offset, doc in enumerate(docs):
                    doc["seq"] = first + offset
                    per_key[doc["key"]] = per_key.get(doc["key"], 0) + 1
                idle = self._add_active(per_key, session)
                for doc in docs:
                    if doc["key"] in idle:
                        doc["head"] = True
                        idle.discard(doc["key"])
                self._events.insert_many(docs, session=session)
                for kind, user_id, at in follows:
                    self._record_follow(kind, user_id, at, session)
            return results

        results = self._transaction(work)
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
        self._writer.ask_probe()   # a majority write at most once a second: see SQLiteStore.health
        if self._closed:
            raise StoreUnavailable(f"store {self.shown_url} is closed")
        if not self._writer.alive():
            raise StoreUnavailable(f"store {self.shown_url}: the writer thread has stopped")
        if self._writer.last_error:
            raise StoreUnavailable(self._writer.last_error)
        self._call(lambda: self._client.admin.command("ping"))

    # --- handing out -----------------------------------------------------------------------------------
    def _document(self, doc: dict, attempt: int) -> dict:
        return make_document(doc["seq"], self.db_name, doc["_id"], doc["destination"], doc["event"],
                             doc["key"], doc["received_at"], attempt)

    def claim(self, owner: str, limit: int, lease_s: float, max_attempts: int | None = None,
              run: int = 1) -> list[dict]:
        if limit <= 0:
            return []

        def work(session):
            now = time.time()
            docs = list(self._events.find({"head": True, "due": {"$lte": now}}, session=session)
                        .sort("seq", 1).limit(limit))
            if max_attempts is not None and any(doc["attempt"] >= max_attempts for doc in docs):
                self._bury_spent(session, owner, [d for d in docs if d["attempt"] >= max_attempts], max_attempts)
                docs = [doc for doc in docs if doc["attempt"] < max_attempts]
            if docs:
                self._events.update_many({"_id": {"$in": [doc["_id"] for doc in docs]}},
                                         {"$set": {"state": LEASED, "owner": owner, "due": now + lease_s},
                                          "$inc": {"attempt": 1}}, session=session)
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
                self._events.update_many({"_id": {"$in": [doc["_id"] for doc in run]}, "state": PENDING},
                                         {"$set": {"state": LEASED, "owner": owner, "due": until}},
                                         session=session)
                leased += run
        return leased

    def _bury_spent(self, session, owner: str, docs: list[dict], max_attempts: int) -> None:
        """Dead-letter events whose every attempt ended without an answer, instead of handing them out."""
        for doc in docs:
            self._events.update_one({"_id": doc["_id"]}, {"$set": {"state": LEASED, "owner": owner}},
                                    session=session)
            self._finish(session, owner, doc["_id"], DEAD, spent_error(max_attempts, doc.get("error")))
            log.warning("event_dead_lettered id=%s attempts=%d reason=attempts_spent", doc["_id"], max_attempts)

    def _finish(self, session, owner: str, event_id: str, state: int, error: str | None) -> bool:
        """Move one event leased to owner to done/dead and hand its key's head on."""
        now = time.time()
        fields = {"state": state, "head": False, "owner": None}
        if state == DONE:
            fields["done_at"] = datetime.datetime.now(datetime.timezone.utc)
        else:
            fields.update(dead_at=now, error=error)
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
        if event_ids:
            self._transaction(lambda session: [self._finish(session, owner, event_id, DONE, None)
                                               for event_id in event_ids])

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
                return "dead"
            delay = min(backoff_s * 2 ** max(attempt - 1, 0), backoff_max_s)
            self._events.update_one({"_id": event_id}, {"$set": {"state": PENDING, "owner": None,
                                                                  "due": time.time() + delay,
                                                                  "error": error}}, session=session)
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
        now = time.time()
        self._call(lambda: self._events.update_many(
            {"_id": {"$in": list(event_ids)}, "owner": owner, "state": LEASED},
            [{"$set": {"state": PENDING, "owner": None, "due": now, "attempt": {"$max": [
                {"$subtract": ["$attempt", {"$cond": ["$head", 1, 0]}]}, 0]}}}]))

    def expire_leases(self, owner: str) -> int:
        return self._call(lambda: self._events.update_many(
            {"owner": owner, "state": LEASED}, {"$set": {"due": time.time()}})).modified_count

    def extend_leases(self, owner: str, event_ids: list[str], lease_s: float) -> None:
        if event_ids:
            until = time.time() + lease_s
            self._call(lambda: self._events.update_many(
                {"_id": {"$in": list(event_ids)}, "owner": owner, "state": LEASED}, {"$set": {"due": until}}))

    def next_wakeup(self) -> float | None:
        doc = self._call(lambda: self._events.find_one({"head": True, "due": {"$gt": time.time()}},
                                                       {"due": 1}, sort=[("due", 1)]))
        return doc["due"] if doc else None

    def change_feed(self) -> ChangeFeed:
        feed = MongoFeed(self)
        self._followers.append(feed)
        return feed

    # --- dead letters and retention ------------------------------------------------------------------------
    def dead_letters(self, limit: int = 100) -> list[dict]:
        docs = self._call(lambda: list(self._events.find({"state": DEAD}).sort("seq", 1).limit(limit)))
        return [{"id": doc["_id"], "key": doc["key"], "attempts": doc["attempt"], "error": doc.get("error"),
                 "dead_at": doc.get("dead_at"), "event": doc["event"]} for doc in docs]

    @staticmethod
    def _dead_filter(event_ids: list[str] | None) -> dict:
        return {"state": DEAD} if event_ids is None else {"state": DEAD, "_id": {"$in": list(event_ids)}}

    def retry_dead(self, event_ids: list[str] | None = None) -> int:
        """Re-queue at the end of the queue (a new seq) with a fresh attempt count, as SQLite does."""
        if event_ids == []:
            return 0

        def work(session):
            docs = list(self._events.find(self._dead_filter(event_ids), {"_id": 1, "key": 1},
                                          session=session).sort("seq", 1))
            if not docs:
                return 0
            first = self._reserve_seqs(len(docs), session)
            per_key: dict[str, int] = {}
            for doc in docs:
                per_key[doc["key"]] = per_key.get(doc["key"], 0) + 1
            idle = self._add_active(per_key, session)
            for offset, doc in enumerate(docs):
                heads = doc["key"] in idle
                idle.discard(doc["key"])
                self._events.update_one({"_id": doc["_id"]}, {
                    "$set": {"state": PENDING, "seq": first + offset, "head": heads, "due": 0.0, "attempt": 0},
                    "$unset": {"error": "", "dead_at": "", "owner": ""}}, session=session)
            return len(docs)

        count = self._transaction(work)
        if count:
            log.info("dead_letters_requeued count=%d", count)
        return count

    def drop_dead(self, event_ids: list[str] | None = None) -> int:
        if event_ids == []:
            return 0

        def work(session):
            ids = [doc["_id"] for doc in self._events.find(self._dead_filter(event_ids), {"_id": 1},
                                                           session=session)]
            self._events.delete_many({"_id": {"$in": ids}, "state": DEAD}, session=session)
            self._journal.delete_many({"event_id": {"$in": ids}}, session=session)
            return len(ids)

        count = self._transaction(work)
        if count:
            log.info("dead_letters_dropped count=%d", count)
        return count

    def purge_done(self, older_than_s: float) -> int:
        """Keep the TTL index on done_at at older_than_s, and delete what is already due now
        (the server's TTL monitor runs only once a minute)."""
        self._call(lambda: self._ensure_ttl(int(older_than_s)))
        cutoff = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=older_than_s)
        total = 0
        while True:
            ids = self._call(lambda: [doc["_id"] for doc in self._events.find(
                {"state": DONE, "done_at": {"$lt": cutoff}}, {"_id": 1}).limit(PURGE_CHUNK)])
            if not ids:
                break
            self._call(lambda: self._events.delete_many({"_id": {"$in": ids}, "state": DONE}))
            self._call(lambda: self._journal.delete_many({"event_id": {"$in": ids}}))
            total += len(ids)
        if total:
            log.info("done_events_purged count=%d older_than_s=%g", total, older_than_s)
        return total

    def _ensure_ttl(self, seconds: int) -> None:
        current = self._events.index_information().get("done_ttl")
        if current is None:
            self._events.create_index([("done_at", 1)], name="done_ttl", expireAfterSeconds=seconds)
        elif current.get("expireAfterSeconds") != seconds:
            self._events.database.command("collMod", self._events.name,
                                          index={"name": "done_ttl", "expireAfterSeconds": seconds})

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
                                  "request": entry.request, "response": entry.response,
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
        lease) raises DuplicateKeyError, and the document as it is then answers."""
        from pymongo.errors import DuplicateKeyError

        reserve = [{"$set": {"reserved_until": {"$add": [{"$max": ["$reserved_until", now]}, seconds]}}}]

        def lease():
            for _ in range(2):   # the second round: a concurrent first lease created the document
                try:
                    before = self._budget.find_one_and_update(
                        {"_id": endpoint, "reserved_until": {"$lte": now + max_ahead_s}}, reserve,
                        upsert=True, return_document=self._pymongo.ReturnDocument.BEFORE)
                except DuplicateKeyError:
                    current = self._budget.find_one({"_id": endpoint}) or {}
                    reserved_until = current.get("reserved_until", now)
                    if reserved_until > now + max_ahead_s:
                        return False, reserved_until
                    continue
                return True, now if before is None else max(now, before["reserved_until"])
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
        self._call(lambda: self._users.update_one(
            {"_id": user_id}, {"$set": {"profile": profile, "profile_fetched_at": fetched_at}}, upsert=True))

    def user_set_data(self, user_id: str, data: dict) -> None:
        self._call(lambda: self._users.update_one({"_id": user_id}, {"$set": {"data": data}}, upsert=True))

    # --- observation and control ----------------------------------------------------------------------------------
    def stats(self) -> dict:
        def read():
            now = time.time()
            count = self._events.count_documents
            pending_filter = {"$or": [{"state": PENDING}, {"state": LEASED, "due": {"$lte": now}}]}
            oldest = self._events.find_one(pending_filter, {"received_at": 1}, sort=[("seq", 1)])
            return {"pending": count(pending_filter),
                    "in_flight": count({"state": LEASED, "due": {"$gt": now}}),
                    "done": count({"state": DONE}), "dead": count({"state": DEAD}),
                    "oldest_pending_s": round(max(0.0, now - oldest["received_at"] / 1000.0), 3) if oldest else 0.0}
        return self._call(read)

    def busiest_keys(self, limit: int = 1) -> list[tuple[str, int]]:
        pipeline = [{"$match": {"state": {"$in": [PENDING, LEASED]}}},
                    {"$group": {"_id": "$key", "n": {"$sum": 1}}},
                    {"$sort": {"n": -1, "_id": 1}}, {"$limit": limit}]
        return self._call(lambda: [(doc["_id"], doc["n"]) for doc in self._events.aggregate(pipeline)])

    def put_status(self, name: str, status: dict) -> None:
        self._call(lambda: self._statuses.replace_one(
            {"_id": name}, {"doc": status, "updated_at": time.time()}, upsert=True))

    def get_statuses(self) -> dict[str, dict]:
        """Every published status document, each with "updated_at" (epoch s) added."""
        return {doc["_id"]: {**doc["doc"], "updated_at": doc["updated_at"]}
                for doc in self._call(lambda: list(self._statuses.find()))}

    def delete_status(self, name: str) -> None:
        self._call(lambda: self._statuses.delete_one({"_id": name}))

    def prune_statuses(self, older_than_s: float) -> int:
        cutoff = time.time() - older_than_s
        return self._call(lambda: self._statuses.delete_many({"updated_at": {"$lt": cutoff}}).deleted_count)

    def set_control(self, name: str, value) -> None:
        self._call(lambda: self._controls.replace_one({"_id": name}, {"value": value}, upsert=True))

    def get_control(self, name: str):
        doc = self._call(lambda: self._controls.find_one({"_id": name}))
        return doc["value"] if doc else None

    # --- change feed resume token ------------------------------------------------------------------------------------
    def load_resume_token(self):
        doc = self._feed_state.find_one({"_id": "events"})
        return doc["token"] if doc else None

    def save_resume_token(self, token) -> None:
        self._feed_state.replace_one({"_id": "events"}, {"token": token}, upsert=True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._writer.stop()
        for follower in self._followers:
            follower.close()
        self._client.close()


class MongoFeed(ChangeFeed):
    """A change stream on the events collection, followed in a thread that writes one byte to a
    socketpair per change (so a selector can wait on it). Wakes on inserts and on updates that
    make an event claimable (a new head, a return to pending)."""

    PIPELINE = [{"$match": {"$or": [
        {"operationType": "insert"},
        {"updateDescription.updatedFields.head": True},
        {"updateDescription.updatedFields.state": PENDING},
    ]}}]

    def __init__(self, store: MongoStore):
        self._store = store
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="store-feed", daemon=True)
        self._thread.start()

    def fileno(self) -> int:
        return self._reader.fileno()

    def drain(self) -> None:
        try:
            while self._reader.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _wake(self) -> None:
        try:
            self._writer.send(b"!")
        except (BlockingIOError, OSError):
            pass   # full of unread wake-ups already, or closing

    def _follow(self) -> None:
        from pymongo.errors import OperationFailure, PyMongoError

        token, saved_token, saved_at = None, None, 0.0
        try:
            token = saved_token = self._store.load_resume_token()
        except PyMongoError as exc:
            log.warning("feed_token_unreadable error=%s", exc)
        while not self._stop.is_set():
            try:
                with self._store._events.watch(self.PIPELINE, resume_after=token,
                                               max_await_time_ms=FEED_AWAIT_MS) as stream:
                    self._wake()   # (re)started: whatever happened meanwhile is found by a claim
                    while not self._stop.is_set():
                        if stream.try_next() is not None:
                            self._wake()
                        token = stream.resume_token or token
                        if token != saved_token and time.monotonic() - saved_at >= TOKEN_SAVE_INTERVAL_S:
                            self._store.save_resume_token(token)
                            saved_token, saved_at = token, time.monotonic()
                    if token != saved_token:
                        self._store.save_resume_token(token)
            except OperationFailure as exc:
                if exc.code == CHANGE_STREAM_HISTORY_LOST and token is not None:
                    log.warning("feed_resume_token_lost action=rescan error=%s", exc)
                    token = None
                    self._wake()
                    continue
                log.error("feed_failed error=%s", exc)
                self._stop.wait(1.0)
            except PyMongoError as exc:
                log.error("feed_failed error=%s", exc)
                self._stop.wait(1.0)   # the dispatcher's re-scan timer covers the gap

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=FEED_AWAIT_MS / 1000.0 + 5)
        self._reader.close()
        self._writer.close()
