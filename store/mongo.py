"""The scale-out store: MongoDB (a replica set: change streams and transactions need one).

`MongoStore` is a facade over the same concerns as the SQLite store (store/composed.py lists
them). Same model: an event's `_id` is its webhookEventId, `seq` (from a counter reserving a
block per append batch) is the store order, `head` marks the oldest pending-or-leased event of
each conversation key, `due` is not_before or lease expiry. Every write is w=majority, j=true,
and every call is bounded in time (store/mongo_connections.py). Times the store compares
(leases, backoffs, done and dead times, statuses, rate-budget slices) are the server's clock
(store/mongo_health.py), so hosts with different clocks agree. The pieces of their own: the
change feed (store/mongo_feed.py), health off the caller's thread (store/mongo_health.py), the
state counters behind stats() (store/mongo_counts.py), what can be stored (store/mongo_data.py),
URLs shown (store/mongo_url.py).
"""
from __future__ import annotations

import time
from typing import Callable

from .base import ChangeFeed, StoreUnavailable
from .composed import ComposedStore
from .groupcommit import GroupCommitter
from .mongo_appends import MongoAppends
from .mongo_budget import MongoBudget
from .mongo_connections import MongoConnections, reason
from .mongo_feed import MongoFeed
from .mongo_health import HealthCheck
from .mongo_journal import MongoJournal
from .mongo_observation import MongoObservation
from .mongo_queue import MongoQueue
from .mongo_retention import MongoRetention
from .mongo_schema import prepare
from .mongo_sends import MongoSends
from .mongo_url import redact_url
from .mongo_users import MongoUsers
from .mongo_waiting import MongoWaiting

__all__ = ["MongoStore", "redact_url"]


class MongoStore(ComposedStore[MongoConnections]):
    """The Store contract on a MongoDB replica set (docs/store.md, "MongoDB details"). Built
    closed: `open()` connects, prepares the database and starts the health and writer threads.

    `clock` is this host's wall clock; the store adds the server's offset to it."""

    def __init__(self, url: str, append_linger_s: float = 0.0, clock: Callable[[], float] = time.time):
        db = MongoConnections(url, clock)
        self.url = url
        self.shown_url = db.shown_url
        users = MongoUsers(db)
        observation = MongoObservation(db, clock)
        self._followers: list[MongoFeed] = []
        self._health = HealthCheck(db.check_health)
        writer = GroupCommitter(self.shown_url, MongoAppends(db, users).commit, lambda: None, append_linger_s,
                                probe=lambda: observation.set_control("health_probe", clock()))
        super().__init__(self.shown_url, db, writer, MongoQueue(db), MongoRetention(db), MongoJournal(db, clock),
                         MongoBudget(db), users, observation, MongoSends(db), MongoWaiting(db))

    @property
    def db_name(self) -> str:
        return self._db.db_name

    def open(self) -> "MongoStore":
        """Connect and prepare the database. Raises StoreError naming what is wrong."""
        self._db.open()
        try:
            prepare(self._db)
        except BaseException:
            self._db.close()
            raise
        self._health.start()
        self._writer.start()
        return self

    def _check_backend(self) -> None:
        """Never blocks: the server is asked on the health thread (store/mongo_health.py)."""
        problem = self._health.problem()
        if problem:
            raise StoreUnavailable(f"store {self.shown_url}: {problem}")

    def change_feed(self) -> ChangeFeed:
        """Follows from the moment it returns (its stream is open), with no wake-up of its own."""
        from pymongo.errors import PyMongoError

        if self._db.closed:
            raise StoreUnavailable(f"store {self.shown_url} is closed")
        feed = MongoFeed(self._db.events)
        try:
            feed.open()
        except PyMongoError as exc:
            raise StoreUnavailable(f"store {self.shown_url}: cannot open a change stream: {reason(exc)}") from None
        self._followers.append(feed)
        return feed

    def close(self) -> None:
        if self._db.closed:
            return
        self._db.closed = True
        self._writer.stop()
        self._health.stop()
        for follower in self._followers:
            follower.close()
        self._db.close()
