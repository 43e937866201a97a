"""The embedded store: one SQLite file in WAL mode; appends with synchronous=FULL (docs/store.md).

`SQLiteStore` is a facade over the store's concerns (store/composed.py lists them): it builds
them, opens the file in the order that keeps other processes safe, and closes everything. Appends
are group-committed: one writer thread per process takes every queued append request and commits
them in one transaction (store/groupcommit.py, store/sqlite_appends.py), then wakes each caller
and the change-feed followers (store/sqlite_feed.py). Everything else runs on one connection per
process guarded by a lock (store/sqlite_connections.py); other processes (one receiver, one or
more dispatchers) share the file through SQLite's own locking and the writer lock.
"""
from __future__ import annotations

import os
import time
from typing import Callable

from .base import ChangeFeed
from .composed import ComposedStore
from .groupcommit import GroupCommitter
from .sqlite_appends import SQLiteAppends
from .sqlite_budget import SQLiteBudget
from .sqlite_checkpoint import Checkpointer
from .sqlite_connections import SQLiteConnections
from .sqlite_feed import FeedNotifier, SocketFeed, feed_folder
from .sqlite_files import SQLiteFile, path_from_url
from .sqlite_integrity import SQLiteIntegrity
from .sqlite_journal import SQLiteJournal
from .sqlite_observation import SQLiteObservation
from .sqlite_queue import SQLiteQueue
from .sqlite_retention import SQLiteRetention
from .sqlite_schema import migrate
from .sqlite_sends import SQLiteSends
from .sqlite_users import SQLiteUsers
from .sqlite_waiting import SQLiteWaiting

__all__ = ["SQLiteStore", "path_from_url"]


class SQLiteStore(ComposedStore[SQLiteConnections]):
    """The Store contract on one SQLite file. Built closed: `open()` opens it (open_store does).

    Owns the order of opening: the file's checks and the WAL scan with every frontdesk writer
    held off, then the schema, then the integrity report, then the other connections and the
    threads (checkpointer, group commit). An open that fails closes what it opened."""

    def __init__(self, url: str, append_linger_s: float = 0.0, check_integrity: bool = False,
                 clock: Callable[[], float] = time.time):
        self.url = url
        self.path = path_from_url(url)
        self.db_name = os.path.splitext(os.path.basename(self.path))[0]
        self._check_integrity = check_integrity
        self._file = SQLiteFile(self.path)
        db = SQLiteConnections(self._file)
        self._notifier = FeedNotifier(feed_folder(self.path))
        self._followers: list[SocketFeed] = []
        users = SQLiteUsers(db)
        observation = SQLiteObservation(db, clock)
        self._integrity = SQLiteIntegrity(db, observation, clock)
        retention = self._sqlite_retention = SQLiteRetention(db, self._notifier.notify, clock)
        self._checkpointer = Checkpointer(self.path, db.connect, lambda: db.checkpoint_lock)
        appends = SQLiteAppends(db, users)
        writer = GroupCommitter(self.path, appends.commit, self._notifier.notify, append_linger_s,
                                probe=appends.probe)
        super().__init__(self.path, db, writer, SQLiteQueue(db, self.db_name, self._notifier.notify, clock),
                         retention, SQLiteJournal(db, clock), SQLiteBudget(db), users, observation,
                         SQLiteSends(db), SQLiteWaiting(db))

    def open(self) -> "SQLiteStore":
        """Open the file (see the class docstring). Raises StoreError naming what is wrong."""
        db = self._db
        self._file.check_location()
        try:
            db.open_locks()
            with db.shared_lock:   # the writers of every frontdesk process wait while the files are looked at
                wal_damage = self._file.open(self._integrity.scan_wal)
            db.open_bookkeeping()
            with db.shared_lock:   # a writer like any other: never while another process scans the WAL
                migrate(db.bookkeeping, self.path)
            if wal_damage or self._check_integrity:
                self._integrity.check(wal_damage, quick_check=self._check_integrity)
            db.open_writers()
            self._notifier.open()
            self._checkpointer.start()
        except BaseException:   # (a supervisor may try again every second: nothing may be left open)
            self._checkpointer.stop()
            self._notifier.close()
            db.close()
            raise
        self._writer.start()
        return self

    def _check_backend(self) -> None:
        self._file.check_same()

    def integrity(self) -> dict | None:
        return self._integrity.report()

    def clear_integrity(self) -> None:
        self._integrity.clear()

    def change_feed(self) -> ChangeFeed:
        follower = SocketFeed(feed_folder(self.path)).open()
        self._followers.append(follower)
        return follower

    def close(self) -> None:
        if self._db.closed:
            return
        self._db.closed = True
        self._writer.stop()
        self._sqlite_retention.close()
        self._checkpointer.stop()
        for follower in self._followers:
            follower.close()
        self._notifier.close()
        self._db.close()
