"""The embedded store: one SQLite file in WAL mode; appends with synchronous=FULL.

Appends are group-committed: one writer thread per process takes every queued append request
and commits them in one transaction, then wakes each caller and the change-feed followers
(one transaction per request inside waitress threads measured 0.4-0.6x the throughput, with
p99 in the hundreds of ms; batches of 100 rows ~256,000 rows/s). Everything else runs on one
connection per process guarded by a lock; other processes (one receiver, one or more
dispatchers) share the file through SQLite's own locking.

Claiming does not scan: each conversation key's oldest pending-or-leased event carries
`head = 1`, and a partial index over heads ordered by seq is all claim reads. `due` is the
not_before of a pending event and the lease expiry of a leased one, so "deliverable" is simply
`head = 1 AND due <= now` (an expired lease is deliverable again).
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import sqlite3
import threading
import time
from collections import Counter

from frontdesk.protocol.events import conversation_key, make_document

from .base import (AppendResult, ChangeFeed, JournalEntry, Store, StoreError, StoreGone, StoreUnavailable,
                   spent_error)
from . import companions, wal
from .feed import FeedNotifier, SocketFeed, feed_folder
from .groupcommit import AppendRequest, GroupCommitter, follow_change

log = logging.getLogger("frontdesk.store.sqlite")

PENDING, LEASED, DONE, DEAD = 0, 1, 2, 3
# Appends are fsynced before the receiver answers 200 (synchronous=FULL). Everything else (leases,
# acks, the call journal, statuses) is bookkeeping that survives any process crash at NORMAL and
# reaches the disk with the next append's fsync (one WAL); only a power loss in between can undo
# it, which at-least-once delivery and LINE's retry keys absorb. With FULL for it too, the
# end-to-end p50 of `frontdesk bench` at 300 events/s was 1.9 s instead of 1.1 s.
BOOKKEEPING_SYNC = "NORMAL"
CHECKPOINT_INTERVAL_S = 0.25
CHECKPOINT_WAL_BYTES = 16 << 20   # a checkpoint copies back a WAL at least this big
WAL_BOUND_BYTES = 128 << 20       # past this, writers wait while the WAL is restarted (see _checkpoint_loop)
WAL_SIZE_LIMIT_BYTES = 64 << 20   # the WAL file is truncated back to this after a checkpoint
# Files this store creates are its owner's only: the events hold users' messages and reply
# tokens. SQLite gives the -wal and -shm files the database file's mode, so creating that one
# 0600 first covers them.
FILE_MODE = 0o600
# The integrity check at open (_check_integrity): PRAGMA quick_check reads the whole file, ~0.11 s
# of CPU (0.28 s wall, warm cache) for 106 MB / 200,000 events; files above this skip it (logged).
QUICK_CHECK_MAX_BYTES = 256 << 20
PROBE_BYTES = 64 << 10   # the health probe's write (_probe_write)
INTEGRITY_CONTROL = "integrity"   # controls row: the last failed check, until an operator clears it
# A WAL found damaged is kept with the database file as they were: <db>.damaged-<X> and
# <db>-wal.damaged-<X>, X the WAL generation's salts (names SQLite never pairs: opening the copy
# of the database cannot replay or delete the copy of the WAL). store/salvage.py reads them.
DAMAGED_SUFFIX = ".damaged-"
BUSY_TIMEOUT_S = 10.0       # how long a write waits for a transaction of a foreign writer
WRITER_LOCK_SUFFIX = ".writelock"
_ID_QUERY_CHUNK = 500       # ids per duplicate lookup (SQLite allows 32766 parameters)
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
PURGE_CHUNK = 500           # rows deleted per transaction, so writers are never held up long
# The stores this process holds open: path -> the (device, inode) of each one's file. SQLite's
# locks on a database and its -shm file are POSIX locks, which closing *any* descriptor of that
# file in the process drops: the checks at open that read those files with descriptors of their
# own (store/companions.py, store/wal.py) run only where this process holds no store of the path.
_OPEN_IN_PROCESS: dict[str, Counter] = {}
_OPEN_IN_PROCESS_LOCK = threading.Lock()

# Schema migrations: index i brings user_version i to i + 1. Append, never edit.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- store order: the document's ts
            id TEXT NOT NULL UNIQUE,                -- webhookEventId
            key TEXT NOT NULL,                      -- conversation key
            destination TEXT NOT NULL,
            event TEXT NOT NULL,                    -- the LINE event as received (JSON)
            received_at INTEGER NOT NULL,           -- epoch ms
            state INTEGER NOT NULL,                 -- 0 pending, 1 leased, 2 done, 3 dead
            head INTEGER NOT NULL,                  -- 1: oldest pending/leased event of its key
            due REAL NOT NULL,                      -- pending: not_before; leased: lease expiry
            attempt INTEGER NOT NULL DEFAULT 0,     -- deliveries so far
            owner TEXT,                             -- lease holder
            error TEXT,                             -- last nack's error
            finished_at REAL                        -- done or dead since (epoch s)
        )""",
        "CREATE INDEX events_heads ON events(seq, due) WHERE head = 1",
        f"CREATE INDEX events_active ON events(key, seq) WHERE state < {DONE}",
        f"CREATE INDEX events_done ON events(finished_at) WHERE state = {DONE}",
        f"CREATE INDEX events_dead ON events(seq) WHERE state = {DEAD}",
        """CREATE TABLE journal (
            event_id TEXT NOT NULL, call_no INTEGER NOT NULL, fingerprint TEXT NOT NULL,
            state TEXT NOT NULL, request TEXT, response TEXT, updated_at REAL NOT NULL,
            PRIMARY KEY (event_id, call_no)) WITHOUT ROWID""",
        "CREATE INDEX journal_started ON journal(event_id) WHERE state = 'started'",
        """CREATE TABLE users (
            user_id TEXT PRIMARY KEY, profile TEXT, profile_fetched_at REAL,
            followed INTEGER, followed_at REAL, unfollowed_at REAL,
            data TEXT NOT NULL DEFAULT '{}')""",
        "CREATE TABLE statuses (name TEXT PRIMARY KEY, doc TEXT NOT NULL, updated_at REAL NOT NULL)",
        "CREATE TABLE controls (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ],
    # Events per state kept by triggers, so that stats() reads four rows instead of counting a
    # queue that may hold millions (0.37 s at 500,000 pending, on every /metrics scrape).
    [
        "CREATE TABLE event_counts (state INTEGER PRIMARY KEY, n INTEGER NOT NULL)",
        f"""INSERT INTO event_counts SELECT s.state, (SELECT count(*) FROM events WHERE state = s.state)
            FROM (SELECT {PENDING} AS state UNION ALL SELECT {LEASED} UNION ALL SELECT {DONE}
                  UNION ALL SELECT {DEAD}) AS s""",
        """CREATE TRIGGER events_counted_insert AFTER INSERT ON events
            BEGIN UPDATE event_counts SET n = n + 1 WHERE state = NEW.state; END""",
        """CREATE TRIGGER events_counted_delete AFTER DELETE ON events
            BEGIN UPDATE event_counts SET n = n - 1 WHERE state = OLD.state; END""",
        """CREATE TRIGGER events_counted_update AFTER UPDATE OF state ON events WHEN OLD.state <> NEW.state
            BEGIN UPDATE event_counts SET n = n - 1 WHERE state = OLD.state;
                  UPDATE event_counts SET n = n + 1 WHERE state = NEW.state; END""",
    ],
    # The shared rate budget (Store.budget_lease): per endpoint, the time its calls are reserved to.
    [
        "CREATE TABLE rate_budget (endpoint TEXT PRIMARY KEY, reserved_until REAL NOT NULL) WITHOUT ROWID",
    ],
]

_FOLLOW_SQL = {
    "follow": """INSERT INTO users (user_id, followed, followed_at) VALUES (?1, 1, ?2)
        ON CONFLICT (user_id) DO UPDATE SET followed = 1, followed_at = ?2
        WHERE ?2 > coalesce(followed_at, 0) AND ?2 > coalesce(unfollowed_at, 0)""",
    "unfollow": """INSERT INTO users (user_id, followed, unfollowed_at) VALUES (?1, 0, ?2)
        ON CONFLICT (user_id) DO UPDATE SET followed = 0, unfollowed_at = ?2
        WHERE ?2 > coalesce(followed_at, 0) AND ?2 > coalesce(unfollowed_at, 0)""",
}

# A new event heads its key when the key has no pending or leased event yet.
_INSERT_EVENT = f"""INSERT INTO events (id, key, destination, event, received_at, state, head, due)
    SELECT ?1, ?2, ?3, ?4, ?5, {PENDING}, NOT EXISTS (SELECT 1 FROM events WHERE key = ?2 AND state < {DONE}), 0
    WHERE true ON CONFLICT (id) DO NOTHING"""

# The next event of each key heads it. One that the acking owner leased with its run (a
# follower, Store.claim) is delivered by that owner next: its attempt is charged now.
_PROMOTE_HEAD = f"""UPDATE events SET head = 1, attempt = attempt + (state = {LEASED} AND owner = ?)
    WHERE seq = (SELECT min(seq) FROM events WHERE key = ? AND state < {DONE})"""


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

    def __exit__(self, *exc_info) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._fd)


def _copy_private(source: str, copy: str) -> None:
    """Copy a file to a new file only its owner can read, on disk before this returns (a copy left
    half-written by a failure is removed)."""
    fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    try:
        with open(fd, "wb") as out, open(source, "rb") as found:
            shutil.copyfileobj(found, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
    except OSError:
        os.unlink(copy)
        raise


def _id_chunks(ids: list[str]):
    """(placeholders, ids) pieces for `IN (...)` queries, within SQLite's parameter limit."""
    for first in range(0, len(ids), _ID_QUERY_CHUNK):
        chunk = ids[first:first + _ID_QUERY_CHUNK]
        yield ",".join("?" * len(chunk)), chunk


def path_from_url(url: str) -> str:
    """sqlite:///relative.db -> relative.db; sqlite:////abs/x.db -> /abs/x.db."""
    path = url[len("sqlite:///"):].split("?", 1)[0]
    if not path:
        raise StoreError(f"store URL {url!r} names no file (use sqlite:///path.db)")
    return path


class SQLiteStore(Store):
    def __init__(self, url: str, append_linger_s: float = 0.0, check_integrity: bool = False):
        self.url = url
        self.path = path_from_url(url)
        self.db_name = os.path.splitext(os.path.basename(self.path))[0]
        self._check_location()
        # one writer lock per connection: they exclude each other across threads and processes
        self._shared_lock = WriterLock(self.path + WRITER_LOCK_SUFFIX)
        self._writer_lock = WriterLock(self.path + WRITER_LOCK_SUFFIX)
        self._checkpoint_lock = WriterLock(self.path + WRITER_LOCK_SUFFIX)
        self._real_path = os.path.realpath(self.path)
        self._identity = None
        try:
            with self._shared_lock:   # the writers of every frontdesk process wait while the files are looked at
                wal_damage = self._prepare_files()
            self._conn = self._connect(BOOKKEEPING_SYNC)
        except StoreError:   # (a supervisor may try again every second: nothing may be left open)
            self._release_locks()
            raise
        self._lock = threading.Lock()           # guards self._conn
        self._closed = False
        with self._shared_lock:   # a writer like any other: never while another process scans the WAL
            self._migrate()
        if wal_damage or check_integrity:
            self._check_integrity(wal_damage, quick_check=check_integrity)
        self._writer_conn = self._connect("FULL")
        # Reads on a connection of their own: in WAL mode they never wait for a writer, so a
        # read (the rate limiter's journal look-up for every call) does not queue behind a
        # write of this process that is waiting for the writer lock.
        self._reader = self._connect(BOOKKEEPING_SYNC)
        self._read_lock = threading.Lock()      # guards self._reader
        self._stopping = threading.Event()
        self._checkpointer = threading.Thread(target=self._checkpoint_loop, name="store-checkpoint",
                                              daemon=True)
        self._checkpointer.start()
        self._notifier = FeedNotifier(feed_folder(self.path))
        self._followers: list[SocketFeed] = []
        self._writer = GroupCommitter(self.path, self._commit_appends, self._notifier.notify, append_linger_s,
                                      probe=self._probe_write)

    # --- opening -------------------------------------------------------------------------------
    def _check_location(self) -> None:
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            raise StoreError(f"store {self.path}: folder {folder} does not exist")
        if os.path.isdir(self.path):
            raise StoreError(f"store {self.path}: is a directory, not a database file")
        if os.path.exists(self.path):
            if not os.access(self.path, os.R_OK | os.W_OK):
                raise StoreError(f"store {self.path}: file is not readable and writable by this user")
        elif not os.access(folder, os.W_OK):
            raise StoreError(f"store {self.path}: folder {folder} is not writable by this user")

    def _prepare_files(self) -> str | None:
        """Before the first connection, with frontdesk's writers held off: make sure the -wal and
        -shm beside the path are this file's (store/companions.py), create the file if need be,
        scan the WAL when SQLite will recover it (_scan_wal: no process has the file open) and
        count this store as open in the process. Returns the WAL's problem, if it has one."""
        with _OPEN_IN_PROCESS_LOCK:
            held_here = _OPEN_IN_PROCESS.get(self._real_path)
            if held_here and self._file_identity() not in held_here:
                raise StoreError(f"store {self.path}: this process still has the database file that was "
                                 "removed or replaced open; close it first")
            first_here = not held_here
            if first_here and companions.held_by_another_file(self.path):
                raise StoreError(f"store {self.path}: its -wal and -shm files are still in use by processes of "
                                 "the database file that was removed or replaced; it opens once they have stopped")
            if first_here and not os.path.exists(self.path):
                for kept in companions.move_orphans(self.path):
                    log.warning("event=orphaned_wal_moved path=%s kept=%s", self.path, kept)
            self._create_private()
            recovers = first_here and not companions.open_elsewhere(self.path)
            wal_damage = self._scan_wal() if recovers else None
            self._identity = self._file_identity()   # (device, inode) of the file opened
            _OPEN_IN_PROCESS.setdefault(self._real_path, Counter())[self._identity] += 1
        return wal_damage

    def _create_private(self) -> None:
        """Create the database file 0600 unless it exists (sqlite3 would create it 0644)."""
        try:
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE))
        except FileExistsError:
            pass
        except OSError as exc:
            raise StoreError(f"store {self.path}: cannot create: {exc.strerror}") from None

    def _file_identity(self) -> tuple[int, int] | None:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return None
        return stat.st_dev, stat.st_ino

    def _check_same_file(self) -> None:
        """Raise StoreGone when the path no longer names the file opened (removed, or replaced
        by another file: a restore, an operator's `mv`). One stat(), ~1 µs, per group commit."""
        now = self._file_identity()
        if now != self._identity:
            how = "removed" if now is None else "replaced by another file"
            raise StoreGone(f"store {self.path}: the database file was {how} since it was opened")

    def _connect(self, synchronous: str) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                   check_same_thread=False)
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise StoreError(f"store {self.path}: cannot switch to WAL mode (got {mode})")
            conn.execute(f"PRAGMA synchronous={synchronous}")
            conn.execute("PRAGMA wal_autocheckpoint=0")   # see _checkpoint_loop
            conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
            conn.execute("PRAGMA user_version").fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.path}: cannot open: {exc}") from None
        return conn

    def _migrate(self) -> None:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise StoreError(f"store {self.path}: schema version {version} is newer than this "
                                 f"frontdesk knows ({len(MIGRATIONS)}); upgrade frontdesk")
            for step in range(version, len(MIGRATIONS)):
                for statement in MIGRATIONS[step]:
                    self._conn.execute(statement)
                self._conn.execute(f"PRAGMA user_version={step + 1}")
                log.info("store_migrated path=%s version=%d", self.path, step + 1)
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(self._conn)
            raise StoreError(f"store {self.path}: cannot prepare the schema: {exc}") from None
        except StoreError:
            self._rollback(self._conn)
            raise

    # --- the integrity check at open ----------------------------------------------------------------
    def _scan_wal(self) -> str | None:
        """Find committed transactions that SQLite's recovery would drop from the WAL (store/wal.py).

        An open that SQLite will recover the WAL in (no process has the file open: after a crash,
        or when everything was stopped) does it before its first connection (that one replays the
        WAL, and the last one to close merges and deletes it), with the writers of every frontdesk
        process held off (a writer may overwrite or reset the WAL); one that finds any keeps copies
        of the WAL and the database as found first. Returns the problem, for the report. While
        other processes have the file open, its wal-index is live and SQLite recovers nothing: a
        process restarted then (a crash of one) pays nothing."""
        try:
            damage = wal.scan(self.path)
        except OSError as exc:
            raise StoreError(f"store {self.path}: cannot read its WAL: {exc.strerror or exc}") from None
        if damage is None:
            return None
        return f"{damage.describe()}; {self._keep_copies(damage)}"

    def _keep_copies(self, damage: wal.Damage) -> str:
        """Copy the database file and its WAL as found beside them, once per WAL generation (0600:
        they hold users' messages), and say where; `frontdesk integrity salvage` gets what can be got
        back from them. Called with the writers held off and no connection open."""
        mark = DAMAGED_SUFFIX + (damage.generation.hex() or time.strftime("%Y%m%dT%H%M%S"))
        copies = [(self.path + "-wal", self.path + "-wal" + mark), (self.path, self.path + mark)]
        kept = " and ".join(copy for _, copy in copies)
        if os.path.exists(copies[0][1]):
            return f"the WAL and the database as found are kept in {kept}"   # by an earlier open
        try:
            for found, copy in copies:
                _copy_private(found, copy)
        except OSError as exc:
            for _, copy in copies[:-1]:   # the WAL's, when the database's failed: both or neither
                if os.path.exists(copy):
                    os.unlink(copy)
            return f"no copy of the WAL and the database could be kept ({exc.filename}: {exc.strerror})"
        log.info("event=damaged_wal_kept path=%s copies=%s wal_bytes=%d", self.path, kept, damage.size)
        return f"the WAL and the database as found are kept in {kept}"

    def _check_integrity(self, wal_damage: str | None, quick_check: bool) -> None:
        """Say loudly when the file has lost or broken data, instead of carrying on silently.

        The WAL was scanned before this connection opened (_scan_wal). With `quick_check`, PRAGMA
        quick_check reads the database file too (files up to QUICK_CHECK_MAX_BYTES): a damaged page
        can go unnoticed until something reads it. A failure is logged CRITICAL and kept in the
        controls table, where `frontdesk status` shows it (and exits 3) and the receiver's /healthz
        answers 503, until an operator clears it (docs/store.md, "Integrity check")."""
        problems = [wal_damage] if wal_damage else []
        if quick_check:
            try:
                size = os.path.getsize(self.path)
                if size > QUICK_CHECK_MAX_BYTES:
                    log.info("store_quick_check_skipped path=%s bytes=%d above=%d", self.path, size,
                             QUICK_CHECK_MAX_BYTES)
                else:
                    rows = [row[0] for row in self._conn.execute("PRAGMA quick_check(20)")]
                    if rows != ["ok"]:
                        problems.append("quick_check: " + "; ".join(rows))
            except sqlite3.Error as exc:   # a page too broken to check ("database disk image is malformed")
                problems.append(f"quick_check: {exc}")
            except OSError as exc:
                problems.append(f"the check itself failed: {exc.strerror or exc}")
        if problems:
            report = {"ok": False, "checked_at": time.time(), "problems": problems}
            log.critical("event=store_integrity_failed path=%s problems=%r", self.path, problems)
            self.set_control(INTEGRITY_CONTROL, report)
        if wal_damage:
            self._retire_damaged_wal()

    def _retire_damaged_wal(self) -> None:
        """Merge what SQLite kept into the database and empty the WAL: the frames it dropped (kept
        in the copy) would otherwise stay in the file behind new ones, to be found at every open."""
        try:
            with self._shared_lock:
                busy, _, _ = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as exc:
            busy, reason = 1, str(exc)
        else:
            reason = "readers of other processes kept it busy"
        if busy:
            log.warning("event=damaged_wal_not_emptied path=%s reason=%s", self.path, reason)

    def integrity(self) -> dict | None:
        """The last failed integrity check ({"ok": False, "checked_at", "problems"}), or None."""
        return self.get_control(INTEGRITY_CONTROL)

    def clear_integrity(self) -> None:
        self._transaction(lambda conn: conn.execute("DELETE FROM controls WHERE name = ?", (INTEGRITY_CONTROL,)))

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    def _transaction(self, work):
        """Run work(conn) in one write transaction on the shared connection (not on a file that
        was removed or replaced since it was opened: StoreGone)."""
        with self._lock:
            if self._closed:
                raise StoreUnavailable(f"store {self.path} is closed")
            self._check_same_file()
            with self._shared_lock:
                try:
                    self._conn.execute("BEGIN IMMEDIATE")
                    result = work(self._conn)
                    self._conn.execute("COMMIT")
                except sqlite3.Error as exc:
                    self._rollback(self._conn)
                    raise StoreUnavailable(f"store {self.path}: {exc}") from None
                except BaseException:
                    self._rollback(self._conn)
                    raise
            return result

    def _checkpoint_loop(self) -> None:
        """Copy the WAL into the database file once it passes CHECKPOINT_WAL_BYTES (looked at four
        times a second), on a connection of its own; past WAL_BOUND_BYTES, restart it.

        SQLite's automatic checkpoint runs inside the commit that fills the WAL, holding every
        other writer while it copies and fsyncs (end-to-end p50 at 300 events/s: 1.1 s with it,
        ~90 ms without). A passive checkpoint here blocks no writer and no other store call, but
        it can never finish while readers and writers keep coming, and the WAL then grows without
        bound (1.1 GB while 100,000 events in random order drained, with a 31 MB database). Past
        the bound, writers of every process wait on the writer lock while a RESTART checkpoint
        copies the WAL back and lets the next writer start it over: peak 168 MB in that drain, at
        the price of its rate (18,200 -> 13,800 events/s); at 1,000 webhooks/s it never comes to
        that (docs/benchmarks.md)."""
        conn = self._connect(BOOKKEEPING_SYNC)
        try:
            while not self._stopping.wait(CHECKPOINT_INTERVAL_S):
                try:
                    size = os.path.getsize(self.path + "-wal")
                    if size >= WAL_BOUND_BYTES:
                        with self._checkpoint_lock:
                            conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
                    elif size >= CHECKPOINT_WAL_BYTES:
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except FileNotFoundError:
                    continue
                except sqlite3.Error as exc:
                    log.warning("checkpoint_failed path=%s reason=%s", self.path, exc)
        finally:
            conn.close()

    def _read(self, sql: str, params=()) -> list[tuple]:
        with self._read_lock:
            if self._closed:
                raise StoreUnavailable(f"store {self.path} is closed")
            try:
                return self._reader.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"store {self.path}: {exc}") from None

    # --- append: group commit (Store.append hands requests to self._writer) ----------------------
    def _commit_appends(self, take) -> bool:
        """One transaction for every request still wanted; returns whether anything new was stored."""
        conn = self._writer_conn
        with self._writer_lock:
            try:
                conn.execute("BEGIN IMMEDIATE")
                live = take()
                stored = self._insert_requests(conn, live)
                self._check_same_file()   # last thing before COMMIT: never a 200 for a lost file
                conn.execute("COMMIT" if live else "ROLLBACK")
            except BaseException as exc:
                self._rollback(conn)   # before the lock is released, so no writer meets it open
                if isinstance(exc, sqlite3.OperationalError):   # the disk, the file, a lock: not the data
                    raise StoreUnavailable(str(exc)) from None
                raise
        return stored

    @staticmethod
    def _insert_requests(conn: sqlite3.Connection, requests: list[AppendRequest]) -> bool:
        """Sets each request's result; one query to find duplicates and one batched insert
        (a statement per event measured ~30% slower)."""
        ids = [event["webhookEventId"] for request in requests for event in request.events]
        seen = set()
        for marks, chunk in _id_chunks(ids):
            seen.update(row[0] for row in conn.execute(f"SELECT id FROM events WHERE id IN ({marks})", chunk))
        rows, follows = [], []
        for request in requests:
            result = request.result = AppendResult()
            for event in request.events:
                event_id = event["webhookEventId"]
                if event_id in seen:
                    result.duplicates.append(event_id)
                    continue
                seen.add(event_id)
                result.new.append(event_id)
                rows.append((event_id, conversation_key(event), request.destination,
                             _JSON.encode(event), request.received_at_ms))
                if change := follow_change(event):
                    follows.append(change)
        conn.executemany(_INSERT_EVENT, rows)
        for kind, user_id, at in follows:
            conn.execute(_FOLLOW_SQL[kind], (user_id, at))
        return bool(rows)

    def _probe_write(self) -> None:
        """The health probe, on the writer thread while writes fail: PROBE_BYTES written the way
        appends are (the writer lock, synchronous=FULL). As big as a large webhook, so that room
        for a page or two on a nearly full disk does not pass for health."""
        conn = self._writer_conn
        with self._writer_lock:
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT OR REPLACE INTO controls VALUES ('health_probe', ?)", ("." * PROBE_BYTES,))
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback(conn)
                raise StoreUnavailable(str(exc)) from None

    def health(self) -> None:
        """Raises while the store cannot write; while the last write failed, asks the writer for
        a probe write (at most once a second), so a fault that cleared stops being reported
        within a second or two."""
        self._writer.ask_probe()
        if self._closed:
            raise StoreUnavailable(f"store {self.path} is closed")
        if not self._writer.alive():
            raise StoreUnavailable(f"store {self.path}: the writer thread has stopped")
        self._check_same_file()
        if self._writer.last_error:
            raise StoreUnavailable(self._writer.last_error)

    # --- handing out -----------------------------------------------------------------------------
    def claim(self, owner: str, limit: int, lease_s: float, max_attempts: int | None = None,
              run: int = 1) -> list[dict]:
        return self.ack_and_claim(owner, [], limit, lease_s, max_attempts, run)

    def ack_and_claim(self, owner: str, event_ids: list[str], limit: int, lease_s: float,
                      max_attempts: int | None = None, run: int = 1) -> list[dict]:
        now = time.time()
        # a wake-up often finds nothing new (another dispatcher took it): read before locking
        if not event_ids and (limit <= 0 or not self._read(
                "SELECT 1 FROM events WHERE head = 1 AND due <= ? LIMIT 1", (now,))):
            return []

        def work(conn):
            acked = self._finish(conn, owner, event_ids, DONE, None) if event_ids else 0
            rows = conn.execute(
                f"UPDATE events SET state = {LEASED}, owner = ?, due = ?, attempt = attempt + 1 WHERE seq IN"
                " (SELECT seq FROM events WHERE head = 1 AND due <= ? ORDER BY seq LIMIT ?)"
                " RETURNING seq, id, key, destination, event, received_at, attempt",
                (owner, now + lease_s, now, max(limit, 0))).fetchall()
            # the acked keys' next events are claimable by others only if this claim, full,
            # may have left some (else it took them: no wake-up, least of all our own)
            freed = acked if len(rows) == limit else 0
            if max_attempts is not None and any(row[6] > max_attempts for row in rows):
                spent = [row[1] for row in rows if row[6] > max_attempts]
                rows = [row for row in rows if row[6] <= max_attempts]
                freed += self._bury_spent(conn, owner, spent, max_attempts)
            if run > 1 and 0 < len(rows) < limit:
                rows += self._lease_runs(conn, owner, sorted(rows), limit - len(rows), run - 1,
                                         now, now + lease_s)
            return freed, rows

        freed, rows = self._transaction(work)
        if freed:
            self._notifier.notify()   # later events of these keys are claimable (by us too)
        rows.sort()   # RETURNING gives no order; store order is seq
        return [make_document(seq, self.db_name, event_id, destination, json.loads(text), key,
                              received_at, attempt)
                for seq, event_id, key, destination, text, received_at, attempt in rows]

    @staticmethod
    def _lease_runs(conn, owner: str, heads: list[tuple], room: int, followers: int, now: float,
                    until: float) -> list[tuple]:
        """Lease up to `followers` events behind each claimed head, `room` in all: the unbroken
        run of pending, due events that follows it (an event leased by anyone else ends the run,
        so nothing overtakes it). Their attempt is charged when each becomes head under this
        lease (_PROMOTE_HEAD), not now: a follower given back undelivered was never attempted."""
        rows = []
        for seq, _, key, *_ in heads:
            if room <= 0:
                break
            seqs = []
            for next_seq, state, due in conn.execute(
                    f"SELECT seq, state, due FROM events WHERE key = ? AND state < {DONE} AND seq > ?"
                    " ORDER BY seq LIMIT ?", (key, seq, min(followers, room))):
                if state != PENDING or due > now:
                    break
                seqs.append(next_seq)
            if seqs:
                room -= len(seqs)
                rows += conn.execute(
                    f"UPDATE events SET state = {LEASED}, owner = ?, due = ? WHERE seq IN"
                    f" ({','.join('?' * len(seqs))})"
                    " RETURNING seq, id, key, destination, event, received_at, attempt + 1",
                    (owner, until, *seqs)).fetchall()
        return rows

    def _finish(self, conn, owner: str, event_ids: list[str], state: int, error: str | None) -> int:
        """Move events leased to owner to done/dead and promote the next event of each key."""
        keys: set[str] = set()
        for marks, chunk in _id_chunks(event_ids):
            keys.update(row[0] for row in conn.execute(
                "UPDATE events SET state = ?, head = 0, owner = NULL, finished_at = ?,"
                f" error = coalesce(?, error) WHERE owner = ? AND state = {LEASED} AND id IN ({marks})"
                " RETURNING key", (state, time.time(), error, owner, *chunk)))
        # one statement per key: min() over a key is one index probe, but a GROUP BY over many
        # keys reads every active event of each (1,000x slower with 10 busy keys)
        conn.executemany(_PROMOTE_HEAD, [(owner, key) for key in keys])
        return len(keys)

    def _bury_spent(self, conn, owner: str, event_ids: list[str], max_attempts: int) -> int:
        """Dead-letter events just claimed past max_attempts (this claim's delivery not counted)."""
        for event_id in event_ids:
            (error,) = conn.execute("SELECT error FROM events WHERE id = ?", (event_id,)).fetchone()
            conn.execute("UPDATE events SET attempt = attempt - 1, error = ? WHERE id = ?",
                         (spent_error(max_attempts, error), event_id))
            log.warning("event_dead_lettered id=%s attempts=%d reason=attempts_spent", event_id, max_attempts)
        return self._finish(conn, owner, event_ids, DEAD, None)

    def ack(self, owner: str, event_ids: list[str]) -> None:
        if not event_ids:
            return
        if self._transaction(lambda conn: self._finish(conn, owner, event_ids, DONE, None)):
            self._notifier.notify()   # later events of these keys are claimable now

    def nack(self, owner: str, event_id: str, error: str, retry: bool, max_attempts: int,
             backoff_s: float, backoff_max_s: float) -> str:
        def work(conn):
            row = conn.execute(f"SELECT attempt FROM events WHERE id = ? AND owner = ? AND state = {LEASED}",
                               (event_id, owner)).fetchone()
            if row is None:
                return "lost"
            attempt = row[0]
            if not retry or attempt >= max_attempts:
                self._finish(conn, owner, [event_id], DEAD, error)
                log.warning("event_dead_lettered id=%s attempts=%d retry=%s", event_id, attempt, retry)
                return "dead"
            delay = min(backoff_s * 2 ** max(attempt - 1, 0), backoff_max_s)
            conn.execute(f"UPDATE events SET state = {PENDING}, owner = NULL, due = ?, error = ? WHERE id = ?",
                         (time.time() + delay, error, event_id))
            return "pending"

        state = self._transaction(work)
        if state == "dead":
            self._notifier.notify()   # the next event of its key is claimable now
        return state

    def release(self, owner: str, event_ids: list[str]) -> None:
        """Back to pending, claimable at once; the delivery is not counted (attempt - 1 for a head,
        whose attempt was charged; a follower's never was)."""
        if not event_ids:
            return
        now = time.time()
        released = self._transaction(lambda conn: sum(conn.execute(
            f"UPDATE events SET state = {PENDING}, owner = NULL, due = ?, attempt = max(attempt - head, 0)"
            f" WHERE id = ? AND owner = ? AND state = {LEASED}", (now, event_id, owner)).rowcount
            for event_id in event_ids))
        if released:
            self._notifier.notify()

    def expire_leases(self, owner: str) -> int:
        expired = self._transaction(lambda conn: conn.execute(
            f"UPDATE events SET due = ? WHERE owner = ? AND state = {LEASED}", (time.time(), owner)).rowcount)
        if expired:
            self._notifier.notify()
        return expired

    def extend_leases(self, owner: str, event_ids: list[str], lease_s: float) -> None:
        if not event_ids:
            return
        until = time.time() + lease_s
        self._transaction(lambda conn: conn.executemany(
            f"UPDATE events SET due = ? WHERE id = ? AND owner = ? AND state = {LEASED}",
            [(until, event_id, owner) for event_id in event_ids]))

    def next_wakeup(self) -> float | None:
        return self._read("SELECT min(due) FROM events WHERE head = 1 AND due > ?", (time.time(),))[0][0]

    def change_feed(self) -> ChangeFeed:
        follower = SocketFeed(feed_folder(self.path))
        self._followers.append(follower)
        return follower

    # --- dead letters and retention --------------------------------------------------------------
    def dead_letters(self, limit: int = 100) -> list[dict]:
        rows = self._read("SELECT id, key, attempt, error, finished_at, event FROM events"
                          f" WHERE state = {DEAD} ORDER BY seq LIMIT ?", (limit,))
        return [{"id": event_id, "key": key, "attempts": attempts, "error": error, "dead_at": dead_at,
                 "event": json.loads(text)} for event_id, key, attempts, error, dead_at, text in rows]

    @staticmethod
    def _dead_filter(event_ids: list[str] | None) -> tuple[str, list]:
        if event_ids is None:
            return f"state = {DEAD}", []
        return f"state = {DEAD} AND id IN ({','.join('?' * len(event_ids))})", list(event_ids)

    def retry_dead(self, event_ids: list[str] | None = None) -> int:
        """Re-queue dead letters at the end of the queue (a new ts) with a fresh attempt count.

        At the end, because later events of the same conversation were delivered meanwhile;
        re-inserting also keeps "one event per key in flight" true.
        """
        if event_ids == []:
            return 0
        where, params = self._dead_filter(event_ids)

        def work(conn):
            rows = conn.execute(f"DELETE FROM events WHERE {where} RETURNING id, key, destination,"
                                f" event, received_at, seq", params).fetchall()
            rows.sort(key=lambda row: row[5])
            for event_id, key, destination, text, received_at, _ in rows:
                busy = conn.execute(f"SELECT 1 FROM events WHERE key = ? AND state < {DONE} LIMIT 1",
                                    (key,)).fetchone()
                conn.execute("INSERT INTO events (id, key, destination, event, received_at, state,"
                             f" head, due) VALUES (?, ?, ?, ?, ?, {PENDING}, ?, 0)",
                             (event_id, key, destination, text, received_at, 0 if busy else 1))
            return len(rows)

        count = self._transaction(work)
        if count:
            log.info("dead_letters_requeued count=%d", count)
            self._notifier.notify()
        return count

    def drop_dead(self, event_ids: list[str] | None = None) -> int:
        if event_ids == []:
            return 0
        where, params = self._dead_filter(event_ids)

        def work(conn):
            ids = [row[0] for row in conn.execute(f"DELETE FROM events WHERE {where} RETURNING id",
                                                  params)]
            conn.executemany("DELETE FROM journal WHERE event_id = ?", [(i,) for i in ids])
            return len(ids)

        count = self._transaction(work)
        if count:
            log.info("dead_letters_dropped count=%d", count)
        return count

    def purge_done(self, older_than_s: float) -> int:
        """Delete done events (and their call journal) in chunks, one short transaction each, and
        after each chunk leave the writer lock free for as long as the chunk held it: a purge of
        any size takes at most half the lock, so appends keep their ack budget (purging 200,000
        back to back held appends up to 0.64 s)."""
        cutoff = time.time() - older_than_s

        def chunk(conn):
            ids = [row[0] for row in conn.execute(
                f"DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE state = {DONE}"
                " AND finished_at < ? LIMIT ?) RETURNING id", (cutoff, PURGE_CHUNK))]
            conn.executemany("DELETE FROM journal WHERE event_id = ?", [(i,) for i in ids])
            return len(ids)

        total = 0
        while True:
            started = time.monotonic()
            removed = self._transaction(chunk)
            total += removed
            if removed < PURGE_CHUNK or self._stopping.wait(time.monotonic() - started):
                break
        if total:
            log.info("done_events_purged count=%d older_than_s=%g", total, older_than_s)
        return total

    # --- call journal ------------------------------------------------------------------------------
    @staticmethod
    def _journal_entry(row) -> JournalEntry:
        event_id, call_no, fingerprint, state, request, response, updated_at = row
        return JournalEntry(event_id, call_no, fingerprint, state,
                            json.loads(request) if request is not None else None,
                            json.loads(response) if response is not None else None, updated_at)

    def journal_get(self, event_id: str, call_no: int) -> JournalEntry | None:
        rows = self._read("SELECT event_id, call_no, fingerprint, state, request, response, updated_at"
                          " FROM journal WHERE event_id = ? AND call_no = ?", (event_id, call_no))
        return self._journal_entry(rows[0]) if rows else None

    def journal_put(self, entry: JournalEntry) -> None:
        self.journal_put_many([entry])

    def journal_put_many(self, entries: list[JournalEntry]) -> None:
        self._transaction(lambda conn: conn.executemany(
            "INSERT OR REPLACE INTO journal VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(entry.event_id, entry.call_no, entry.fingerprint, entry.state,
              None if entry.request is None else json.dumps(entry.request),
              None if entry.response is None else json.dumps(entry.response),
              entry.updated_at or time.time()) for entry in entries]))

    def journal_unfinished(self) -> list[JournalEntry]:
        rows = self._read("SELECT event_id, call_no, fingerprint, state, request, response, updated_at"
                          " FROM journal WHERE state = 'started' ORDER BY updated_at")
        return [self._journal_entry(row) for row in rows]

    # --- shared rate budget --------------------------------------------------------------------------
    def budget_lease(self, endpoint: str, seconds: float, now: float,
                     max_ahead_s: float) -> tuple[bool, float]:
        def work(conn):   # BEGIN IMMEDIATE: no other process reads between our read and write
            row = conn.execute("SELECT reserved_until FROM rate_budget WHERE endpoint = ?",
                               (endpoint,)).fetchone()
            start = now if row is None else max(now, row[0])
            if start > now + max_ahead_s:
                return False, start
            conn.execute("INSERT OR REPLACE INTO rate_budget VALUES (?, ?)", (endpoint, start + seconds))
            return True, start
        return self._transaction(work)

    # --- users ---------------------------------------------------------------------------------------
    def user_get(self, user_id: str) -> dict | None:
        rows = self._read("SELECT profile, profile_fetched_at, followed, followed_at, unfollowed_at,"
                          " data FROM users WHERE user_id = ?", (user_id,))
        if not rows:
            return None
        profile, fetched_at, followed, followed_at, unfollowed_at, data = rows[0]
        return {"user_id": user_id, "profile": json.loads(profile) if profile else None,
                "profile_fetched_at": fetched_at,
                "followed": None if followed is None else bool(followed),
                "followed_at": followed_at, "unfollowed_at": unfollowed_at, "data": json.loads(data)}

    def user_put_profile(self, user_id: str, profile: dict, fetched_at: float) -> None:
        self._transaction(lambda conn: conn.execute(
            "INSERT INTO users (user_id, profile, profile_fetched_at) VALUES (?1, ?2, ?3)"
            " ON CONFLICT (user_id) DO UPDATE SET profile = ?2, profile_fetched_at = ?3",
            (user_id, json.dumps(profile), fetched_at)))

    def user_set_data(self, user_id: str, data: dict) -> None:
        self._transaction(lambda conn: conn.execute(
            "INSERT INTO users (user_id, data) VALUES (?1, ?2)"
            " ON CONFLICT (user_id) DO UPDATE SET data = ?2", (user_id, json.dumps(data))))

    # --- observation and control -----------------------------------------------------------------------
    def stats(self) -> dict:
        """Counts kept by triggers (event_counts), and the oldest undelivered event: a head of its
        key, so the first row of the heads index. A few rows read at any queue size."""
        now = time.time()
        counts = dict(self._read("SELECT state, n FROM event_counts"))
        oldest = self._read("SELECT received_at FROM events WHERE head = 1 ORDER BY seq LIMIT 1")
        return {"pending": counts.get(PENDING, 0), "in_flight": counts.get(LEASED, 0),
                "done": counts.get(DONE, 0), "dead": counts.get(DEAD, 0),
                "oldest_pending_s": round(max(0.0, now - oldest[0][0] / 1000.0), 3) if oldest else 0.0}

    def busiest_keys(self, limit: int = 1) -> list[tuple[str, int]]:
        rows = self._read(f"SELECT key, count(*) AS n FROM events WHERE state < {DONE} GROUP BY key "
                          "ORDER BY n DESC, key LIMIT ?", (limit,))
        return [(key, n) for key, n in rows]

    def put_status(self, name: str, status: dict) -> None:
        self._transaction(lambda conn: conn.execute(
            "INSERT OR REPLACE INTO statuses VALUES (?, ?, ?)", (name, json.dumps(status), time.time())))

    def get_statuses(self) -> dict[str, dict]:
        """Every published status document, each with "updated_at" (epoch s) added."""
        return {name: {**json.loads(doc), "updated_at": updated_at}
                for name, doc, updated_at in self._read("SELECT name, doc, updated_at FROM statuses")}

    def delete_status(self, name: str) -> None:
        self._transaction(lambda conn: conn.execute("DELETE FROM statuses WHERE name = ?", (name,)))

    def prune_statuses(self, older_than_s: float) -> int:
        cutoff = time.time() - older_than_s
        return self._transaction(lambda conn: conn.execute(
            "DELETE FROM statuses WHERE updated_at < ?", (cutoff,)).rowcount)

    def set_control(self, name: str, value) -> None:
        self._transaction(lambda conn: conn.execute(
            "INSERT OR REPLACE INTO controls VALUES (?, ?)", (name, json.dumps(value))))

    def get_control(self, name: str):
        rows = self._read("SELECT value FROM controls WHERE name = ?", (name,))
        return json.loads(rows[0][0]) if rows else None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._writer.stop()
        self._stopping.set()
        self._checkpointer.join()
        for follower in self._followers:
            follower.close()
        self._notifier.close()
        with self._lock:
            self._conn.close()
        with self._read_lock:
            self._reader.close()
        self._writer_conn.close()
        self._release_locks()

    def _release_locks(self) -> None:
        """The writer locks, and this store's count among the ones the process holds open."""
        self._shared_lock.close()
        self._writer_lock.close()
        self._checkpoint_lock.close()
        with _OPEN_IN_PROCESS_LOCK:
            held_here = _OPEN_IN_PROCESS.get(self._real_path)
            if held_here is None or self._identity not in held_here:
                return   # an open that failed before it counted
            held_here[self._identity] -= 1
            if held_here[self._identity] <= 0:
                del held_here[self._identity]
            if not held_here:
                del _OPEN_IN_PROCESS[self._real_path]
