"""The SQLite store's connections, and the locks that order them within and across processes.

Three connections per process, each for one kind of work (docs/store.md, "SQLite details"):
- bookkeeping (leases, acks, the call journal, statuses) at synchronous=NORMAL: it survives any
  process crash and reaches the disk with the next append's fsync (one WAL); only a power loss in
  between can undo it, which at-least-once delivery and LINE's retry keys absorb (with FULL for it
  too, the end-to-end p50 of `frontdesk bench` at 300 events/s was 1.9 s instead of 1.1 s);
- the group commit's writer (appends) at synchronous=FULL: fsynced before the receiver's 200;
- reads, on a connection of their own: in WAL mode they never wait for a writer, so a read (the
  rate limiter's journal look-up for every call) does not queue behind a write of this process
  that is waiting for the writer lock.
Every write transaction holds an flock on `<db>.writelock` (`WriterLock`), one descriptor per
connection, so they exclude each other across threads and processes.
"""
from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from typing import Callable, Iterator, TypeVar

from .base import StoreError, StoreUnavailable
from .sqlite_files import FILE_MODE, SQLiteFile

BOOKKEEPING_SYNC = "NORMAL"
BUSY_TIMEOUT_S = 10.0       # how long a write waits for a transaction of a foreign writer
NOWAIT_BUSY_TIMEOUT_MS = 0  # transaction_nowait: no wait at all
WAL_SIZE_LIMIT_BYTES = 64 << 20   # the WAL file is truncated back to this after a checkpoint
WRITER_LOCK_SUFFIX = ".writelock"
ID_QUERY_CHUNK = 500        # ids per `IN (...)` query (SQLite allows 32766 parameters)

T = TypeVar("T")


class WriterLock:
    """An exclusive flock on a file beside the database, held around every write transaction.

    SQLite's own busy handler sleeps and retries (1 ms growing to 100 ms a turn), so a process
    waiting for the write lock while another writes in a tight loop could starve for hundreds of
    milliseconds; the kernel wakes an flock waiter the moment the lock is released. Writers that
    do not take it (an operator's sqlite3 shell) are still waited for by SQLite's busy timeout.
    """

    def __init__(self, path: str):
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        except OSError as exc:
            raise StoreError(f"store writer lock {path}: cannot open: {exc.strerror}") from None

    def __enter__(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def try_enter(self) -> bool:
        """Take the lock only if no one holds it."""
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def __exit__(self, *exc_info) -> None:
        self.release()

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._fd)


def rollback(conn: sqlite3.Connection) -> None:
    """End a failed transaction, if one is open (before the writer lock is released)."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass


def id_chunks(ids: list[str]) -> Iterator[tuple[str, list[str]]]:
    """(placeholders, ids) pieces for `IN (...)` queries, within SQLite's parameter limit."""
    for first in range(0, len(ids), ID_QUERY_CHUNK):
        chunk = ids[first:first + ID_QUERY_CHUNK]
        yield ",".join("?" * len(chunk)), chunk


class SQLiteConnections:
    """The connections of one open store and the writer locks around their transactions.

    Every store concern (store/sqlite_queue.py, ...) reaches the file through this object:
    `transaction()` for a bookkeeping write, `read()` for a read, the writer connection for the
    group commit. Built closed; `open_locks()`, `open_bookkeeping()` and `open_writers()` open
    it in the order the store's open needs (store/sqlite.py); `close()` closes what is open."""

    def __init__(self, file: SQLiteFile):
        self.file = file
        self.path = file.path
        self.closed = False           # set when the store closes: every later call is refused
        self.shared_lock: WriterLock | None = None       # around bookkeeping transactions
        self.writer_lock: WriterLock | None = None       # around the group commit's
        self.checkpoint_lock: WriterLock | None = None   # around a checkpoint that restarts the WAL
        self.bookkeeping: sqlite3.Connection | None = None
        self.writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._lock = threading.Lock()        # guards self.bookkeeping
        self._read_lock = threading.Lock()   # guards self._reader

    def open_locks(self) -> None:
        lock_path = self.path + WRITER_LOCK_SUFFIX
        self.shared_lock = WriterLock(lock_path)
        self.writer_lock = WriterLock(lock_path)
        self.checkpoint_lock = WriterLock(lock_path)

    def open_bookkeeping(self) -> None:
        self.bookkeeping = self.connect(BOOKKEEPING_SYNC)

    def open_writers(self) -> None:
        """The group commit's connection and the reader (after the schema is in place)."""
        self.writer = self.connect("FULL")
        self._reader = self.connect(BOOKKEEPING_SYNC)

    def connect(self, synchronous: str) -> sqlite3.Connection:
        """A new connection in WAL mode; checkpoints are the checkpointer's (store/sqlite_checkpoint.py)."""
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                   check_same_thread=False)
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise StoreError(f"store {self.path}: cannot switch to WAL mode (got {mode})")
            conn.execute(f"PRAGMA synchronous={synchronous}")
            conn.execute("PRAGMA wal_autocheckpoint=0")
            conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
            conn.execute("PRAGMA user_version").fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.path}: cannot open: {exc}") from None
        return conn

    def transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run work(conn) in one write transaction on the bookkeeping connection (not on a file
        that was removed or replaced since it was opened: StoreGone); SQLite's errors become
        StoreUnavailable, anything work() raises is raised after a rollback."""
        with self._lock:
            conn = self._bookkeeping_now()
            with self.shared_lock:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                except sqlite3.Error as exc:
                    raise StoreUnavailable(f"store {self.path}: {exc}") from None
                return self._commit(conn, work)

    def transaction_nowait(self, work: Callable[[sqlite3.Connection], object]) -> bool:
        """transaction(work), only if no writer of this store holds the lock now (nor a foreign
        one, such as an operator's sqlite3 shell, SQLite's own lock); False: nothing was done."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            conn = self._bookkeeping_now()
            if not self.shared_lock.try_enter():
                return False
            try:
                if not self._begin_nowait(conn):
                    return False
                self._commit(conn, work)
                return True
            finally:
                self.shared_lock.release()
        finally:
            self._lock.release()

    def _bookkeeping_now(self) -> sqlite3.Connection:
        """The bookkeeping connection, on the file at the configured path (under self._lock)."""
        if self.closed:
            raise StoreUnavailable(f"store {self.path} is closed")
        self.file.check_same()
        return self.bookkeeping

    def _begin_nowait(self, conn: sqlite3.Connection) -> bool:
        """BEGIN IMMEDIATE without waiting for a foreign writer (busy timeout 0 for it); False
        when one holds the database."""
        try:
            conn.execute(f"PRAGMA busy_timeout={NOWAIT_BUSY_TIMEOUT_MS}")
            try:
                conn.execute("BEGIN IMMEDIATE")
                return True
            finally:
                conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        except sqlite3.Error as exc:
            if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY:
                return False
            raise StoreUnavailable(f"store {self.path}: {exc}") from None

    def _commit(self, conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
        """work(conn) in the open transaction, then COMMIT; rolled back on any failure."""
        try:
            result = work(conn)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            rollback(conn)
            raise StoreUnavailable(f"store {self.path}: {exc}") from None
        except BaseException:
            rollback(conn)
            raise
        return result

    def read(self, sql: str, params=()) -> list[tuple]:
        with self._read_lock:
            if self.closed:
                raise StoreUnavailable(f"store {self.path} is closed")
            try:
                return self._reader.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"store {self.path}: {exc}") from None

    def close(self) -> None:
        """Close whatever is open (an open that failed part way leaves nothing behind), and count
        the store out of the ones the process holds open."""
        self.closed = True
        with self._lock:
            if self.bookkeeping is not None:
                self.bookkeeping.close()
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()
        if self.writer is not None:
            self.writer.close()
        for lock in (self.shared_lock, self.writer_lock, self.checkpoint_lock):
            if lock is not None:
                lock.close()
        self.shared_lock = self.writer_lock = self.checkpoint_lock = None
        self.bookkeeping = self.writer = self._reader = None
        self.file.release()
