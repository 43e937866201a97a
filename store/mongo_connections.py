"""The MongoDB store's connection: the client, its collections, the server's clock, and the two
ways every concern reaches the server, each bounded in time and with its errors named.

Every write is w=majority, j=true. Left alone, pymongo's `with_transaction` retries for up to
120 s: every call runs inside `pymongo.timeout(TRANSACTION_TIMEOUT_S)` (an append's inside its
callers' deadlines). A write the server refuses for what it holds is the request's fault
(StoreError, store/mongo_data.py); any other failure is the store's (StoreUnavailable).
"""
from __future__ import annotations

import datetime
import time
from typing import Callable, TypeVar

from .base import StoreError, StoreUnavailable
from .mongo_counts import StateCounts
from .mongo_data import is_data_error
from .mongo_health import ServerClock
from .mongo_url import redact_url

DEFAULT_DB = "frontdesk"
# One store call at most, its transaction's retries included (pymongo's with_transaction alone
# retries for up to 120 s). An append is bounded by its callers' deadlines (the ack budget).
TRANSACTION_TIMEOUT_S = 30.0
SERVER_SELECTION_TIMEOUT_MS = 5000   # unless the URL says otherwise

T = TypeVar("T")


def reason(exc: Exception) -> str:
    """A pymongo error's message without its topology dump."""
    return str(exc).split(", Timeout:")[0]


def utc(epoch_s: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(epoch_s, datetime.timezone.utc)


class MongoConnections:
    """One store's MongoClient and everything that hangs on it.

    Built closed (no connection: the constructor only names things); `open()` connects, checks
    that the server is a replica set and reads its clock. `clock` is the server's wall clock as
    seen from here (store/mongo_health.py `ServerClock`, fed by every `hello`)."""

    def __init__(self, url: str, clock: Callable[[], float] = time.time):
        self.url = url
        self.shown_url = redact_url(url)
        self.clock = ServerClock(clock)
        self.closed = False
        self.db_name = DEFAULT_DB
        self._client = None

    def open(self) -> None:
        """Connect; raises StoreError naming what is wrong (a bad URL, no server, no replica set)."""
        import pymongo
        from pymongo.errors import PyMongoError
        from pymongo.read_concern import ReadConcern
        from pymongo.write_concern import WriteConcern

        self._pymongo = pymongo
        self._write_concern = WriteConcern(w="majority", j=True)
        self._read_concern = ReadConcern("snapshot")
        options = {} if "serverselectiontimeoutms" in self.url.lower() else \
            {"serverSelectionTimeoutMS": SERVER_SELECTION_TIMEOUT_MS}
        try:
            self._client = pymongo.MongoClient(self.url, **options)
        except (PyMongoError, ValueError, TypeError) as exc:   # a malformed host list is a ValueError
            raise StoreError(f"store {self.shown_url}: bad MongoDB URL: {reason(exc)}") from None
        try:
            db = self._client.get_default_database(DEFAULT_DB)
            hello = self.hello()
        except (PyMongoError, ValueError, TypeError) as exc:
            self._client.close()
            raise StoreError(f"store {self.shown_url}: cannot reach MongoDB: {reason(exc)}") from None
        if "setName" not in hello:
            self._client.close()
            raise StoreError(f"store {self.shown_url}: MongoDB must run as a replica set (change streams "
                             "and transactions need one); start mongod with --replSet rs0 and rs.initiate()")
        self.db_name = db.name
        write_concern = {"write_concern": self._write_concern}
        self.events = db.get_collection("events", **write_concern)
        self.counters = db.get_collection("counters", **write_concern)
        self.keys = db.get_collection("keys", **write_concern)
        self.journal = db.get_collection("journal", **write_concern)
        self.users = db.get_collection("users", **write_concern)
        self.statuses = db.get_collection("statuses", **write_concern)
        self.controls = db.get_collection("controls", **write_concern)
        self.budget = db.get_collection("rate_budget", **write_concern)
        self.sends = db.get_collection("sends", **write_concern)
        self.counts = StateCounts(self.counters)

    def hello(self) -> dict:
        """`hello` on the primary (so it fails while there is none); reads the server's clock."""
        sent_at = self.clock.local()
        hello = self._client.admin.command("hello")
        answered_at = self.clock.local()
        local_time = hello.get("localTime")
        if isinstance(local_time, datetime.datetime):
            if local_time.tzinfo is None:   # pymongo decodes BSON dates as naive UTC by default
                local_time = local_time.replace(tzinfo=datetime.timezone.utc)
            self.clock.observe(local_time.timestamp(), sent_at, answered_at)
        return hello

    def check_health(self) -> None:
        """The health thread's check (store/mongo_health.py): raises StoreUnavailable while there
        is no primary to answer."""
        from pymongo.errors import PyMongoError

        try:
            self.hello()
        except PyMongoError as exc:
            raise StoreUnavailable(reason(exc)) from None

    def transaction(self, work: Callable[[object], T], timeout_s: float = TRANSACTION_TIMEOUT_S) -> T:
        """Run work(session) in a majority-committed transaction, retried on transient conflicts
        for at most timeout_s. A write refused for what it holds raises StoreError (the request's
        fault); any other failure StoreUnavailable (the store's)."""
        from pymongo.errors import PyMongoError

        if self.closed:
            raise StoreUnavailable(f"store {self.shown_url} is closed")
        try:
            with self._pymongo.timeout(timeout_s), self._client.start_session() as session:
                return session.with_transaction(work, read_concern=self._read_concern,
                                                write_concern=self._write_concern)
        except PyMongoError as exc:
            if is_data_error(exc):
                raise StoreError(f"store {self.shown_url}: the server refused the write: {exc}") from None
            raise StoreUnavailable(f"store {self.shown_url}: {reason(exc)}") from None

    def call(self, work: Callable[[], T]) -> T:
        """A single operation outside a transaction, bounded in time; errors turned into StoreUnavailable."""
        from pymongo.errors import PyMongoError

        if self.closed:
            raise StoreUnavailable(f"store {self.shown_url} is closed")
        try:
            with self._pymongo.timeout(TRANSACTION_TIMEOUT_S):
                return work()
        except PyMongoError as exc:
            raise StoreUnavailable(f"store {self.shown_url}: {reason(exc)}") from None

    def close(self) -> None:
        self.closed = True
        if self._client is not None:
            self._client.close()
