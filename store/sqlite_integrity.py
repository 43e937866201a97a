"""The SQLite store's integrity check at open, and its report (docs/store.md, "Integrity check").

SQLite replays its WAL at open up to the last commit frame before the first damaged frame and
silently drops every later one, acknowledged appends included; a damaged database page can go
unnoticed until something reads it. So the WAL is scanned before the first connection when SQLite
will recover it (store/sqlite_wal.py), `PRAGMA quick_check` reads the file when the long-lived
processes open it, and a failure is logged CRITICAL and kept in the controls table until an
operator clears it: `frontdesk status` shows it (and exits 3), the receiver's /healthz answers 503.
"""
from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import time
from typing import Callable

from . import sqlite_wal
from .base import Observation, StoreError
from .sqlite_connections import SQLiteConnections
from .sqlite_files import FILE_MODE

log = logging.getLogger("frontdesk.store.sqlite")

# PRAGMA quick_check reads the whole file, ~0.11 s of CPU (0.28 s wall, warm cache) for 106 MB /
# 200,000 events; files above this skip it (logged).
QUICK_CHECK_MAX_BYTES = 256 << 20
INTEGRITY_CONTROL = "integrity"   # controls row: the last failed check, until an operator clears it
# A WAL found damaged is kept with the database file as they were: <db>.damaged-<X> and
# <db>-wal.damaged-<X>, X the WAL generation's salts (names SQLite never pairs: opening the copy
# of the database cannot replay or delete the copy of the WAL). store/sqlite_salvage.py reads them.
DAMAGED_SUFFIX = ".damaged-"


def copy_private(source: str, copy: str) -> None:
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


class SQLiteIntegrity:
    """Finds lost or broken data at open and keeps the report: says so loudly, instead of carrying
    on silently. The report lives in the controls table (`controls`), read by every process."""

    def __init__(self, db: SQLiteConnections, controls: Observation, clock: Callable[[], float] = time.time):
        self._db = db
        self._controls = controls
        self._clock = clock
        self.path = db.path

    def scan_wal(self) -> str | None:
        """Find committed transactions that SQLite's recovery would drop from the WAL.

        Run at an open that SQLite will recover the WAL in (no process has the file open: after a
        crash, or when everything was stopped), before its first connection (that one replays the
        WAL, and the last one to close merges and deletes it), with the writers of every frontdesk
        process held off (a writer may overwrite or reset the WAL); one that finds any keeps copies
        of the WAL and the database as found first. Returns the problem, for the report."""
        try:
            damage = sqlite_wal.scan(self.path)
        except OSError as exc:
            raise StoreError(f"store {self.path}: cannot read its WAL: {exc.strerror or exc}") from None
        if damage is None:
            return None
        return f"{damage.describe()}; {self._keep_copies(damage)}"

    def _keep_copies(self, damage: sqlite_wal.Damage) -> str:
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
                copy_private(found, copy)
        except OSError as exc:
            for _, copy in copies[:-1]:   # the WAL's, when the database's failed: both or neither
                if os.path.exists(copy):
                    os.unlink(copy)
            return f"no copy of the WAL and the database could be kept ({exc.filename}: {exc.strerror})"
        log.info("event=damaged_wal_kept path=%s copies=%s wal_bytes=%d", self.path, kept, damage.size)
        return f"the WAL and the database as found are kept in {kept}"

    def check(self, wal_damage: str | None, quick_check: bool) -> None:
        """Report what the WAL scan found and, with `quick_check`, what PRAGMA quick_check finds in
        the database file (files up to QUICK_CHECK_MAX_BYTES); then empty a damaged WAL."""
        problems = [wal_damage] if wal_damage else []
        if quick_check:
            problems += self._quick_check()
        if problems:
            report = {"ok": False, "checked_at": self._clock(), "problems": problems}
            log.critical("event=store_integrity_failed path=%s problems=%r", self.path, problems)
            self._controls.set_control(INTEGRITY_CONTROL, report)
        if wal_damage:
            self._retire_damaged_wal()

    def _quick_check(self) -> list[str]:
        try:
            size = os.path.getsize(self.path)
            if size > QUICK_CHECK_MAX_BYTES:
                log.info("event=store_quick_check_skipped path=%s bytes=%d above=%d", self.path, size,
                         QUICK_CHECK_MAX_BYTES)
                return []
            rows = [row[0] for row in self._db.bookkeeping.execute("PRAGMA quick_check(20)")]
            return [] if rows == ["ok"] else ["quick_check: " + "; ".join(rows)]
        except sqlite3.Error as exc:   # a page too broken to check ("database disk image is malformed")
            return [f"quick_check: {exc}"]
        except OSError as exc:
            return [f"the check itself failed: {exc.strerror or exc}"]

    def _retire_damaged_wal(self) -> None:
        """Merge what SQLite kept into the database and empty the WAL: the frames it dropped (kept
        in the copy) would otherwise stay in the file behind new ones, to be found at every open."""
        try:
            with self._db.shared_lock:
                busy, _, _ = self._db.bookkeeping.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as exc:
            busy, reason = 1, str(exc)
        else:
            reason = "readers of other processes kept it busy"
        if busy:
            log.warning("event=damaged_wal_not_emptied path=%s reason=%s", self.path, reason)

    def report(self) -> dict | None:
        """The last failed integrity check ({"ok": False, "checked_at", "problems"}), or None."""
        return self._controls.get_control(INTEGRITY_CONTROL)

    def clear(self) -> None:
        self._db.transaction(lambda conn: conn.execute("DELETE FROM controls WHERE name = ?",
                                                       (INTEGRITY_CONTROL,)))
