"""The SQLite store's database file: where it is, whether the path still names the file this
process opened, and whether its -wal and -shm are its own (docs/store.md, "A file removed or
replaced underneath").

Every process remembers the device and inode of the file it opened; each write checks that the
path still names that file (one stat, ~1 µs), so that no webhook is answered 200 for a file nobody
will read again. SQLite finds a database's -wal and -shm by name, so a new file at the path is not
opened while processes of the old one still use them (store/sqlite_companions.py).
"""
from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from typing import Callable

from . import sqlite_companions
from .base import StoreError, StoreGone

log = logging.getLogger("frontdesk.store.sqlite")

# Files this store creates are its owner's only: the events hold users' messages and reply
# tokens. SQLite gives the -wal and -shm files the database file's mode, so creating that one
# 0600 first covers them.
FILE_MODE = 0o600
# The stores this process holds open: path -> the (device, inode) of each one's file. SQLite's
# locks on a database and its -shm file are POSIX locks, which closing *any* descriptor of that
# file in the process drops: the checks at open that read those files with descriptors of their
# own (store/sqlite_companions.py, store/sqlite_wal.py) run only where this process holds no store
# of the path.
_OPEN_IN_PROCESS: dict[str, Counter] = {}
_OPEN_IN_PROCESS_LOCK = threading.Lock()


def path_from_url(url: str) -> str:
    """sqlite:///relative.db -> relative.db; sqlite:////abs/x.db -> /abs/x.db.

    Raises:
        StoreError: the URL names no file.
    """
    path = url[len("sqlite:///"):].split("?", 1)[0]
    if not path:
        raise StoreError(f"store URL {url!r} names no file (use sqlite:///path.db)")
    return path


class SQLiteFile:
    """One store's database file on disk, from the checks before it is opened to the check before
    every commit that it is still the file at the path.

    Owns the file's identity (device, inode) and this store's count among the stores the process
    holds open on the path."""

    def __init__(self, path: str):
        self.path = path
        self._identity: tuple[int, int] | None = None
        self._registered_as: str | None = None   # the real path this store counts under

    def check_location(self) -> None:
        """Raises StoreError naming what is wrong with where the file is (or would be created)."""
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

    def open(self, scan_wal: Callable[[], str | None]) -> str | None:
        """Before the first connection, with frontdesk's writers held off: make sure the -wal and
        -shm beside the path are this file's, create the file if need be, run scan_wal() when
        SQLite will recover the WAL (no process has the file open) and count this store as open
        in the process. Returns what scan_wal() found wrong, if anything.

        Raises:
            StoreError: the old file of the path is still open here or in another process, or
                the file cannot be created.
        """
        real_path = os.path.realpath(self.path)
        with _OPEN_IN_PROCESS_LOCK:
            held_here = _OPEN_IN_PROCESS.get(real_path)
            if held_here and self._current_identity() not in held_here:
                raise StoreError(f"store {self.path}: this process still has the database file that was "
                                 "removed or replaced open; close it first")
            first_here = not held_here
            if first_here and sqlite_companions.held_by_another_file(self.path):
                raise StoreError(f"store {self.path}: its -wal and -shm files are still in use by processes of "
                                 "the database file that was removed or replaced; it opens once they have stopped")
            if first_here and not os.path.exists(self.path):
                for kept in sqlite_companions.move_orphans(self.path):
                    log.warning("event=orphaned_wal_moved path=%s kept=%s", self.path, kept)
            self._create_private()
            recovers = first_here and not sqlite_companions.open_elsewhere(self.path)
            wal_damage = scan_wal() if recovers else None
            self._identity = self._current_identity()   # (device, inode) of the file opened
            _OPEN_IN_PROCESS.setdefault(real_path, Counter())[self._identity] += 1
            self._registered_as = real_path
        return wal_damage

    def check_same(self) -> None:
        """Raise StoreGone when the path no longer names the file opened (removed, or replaced
        by another file: a restore, an operator's `mv`). One stat(), ~1 µs, per group commit."""
        now = self._current_identity()
        if now != self._identity:
            how = "removed" if now is None else "replaced by another file"
            raise StoreGone(f"store {self.path}: the database file was {how} since it was opened")

    def release(self) -> None:
        """This store no longer counts among the ones the process holds open (nothing if it never
        did: an open that failed first)."""
        if self._registered_as is None:
            return
        with _OPEN_IN_PROCESS_LOCK:
            held_here = _OPEN_IN_PROCESS[self._registered_as]
            held_here[self._identity] -= 1
            if held_here[self._identity] <= 0:
                del held_here[self._identity]
            if not held_here:
                del _OPEN_IN_PROCESS[self._registered_as]
        self._registered_as = None

    def _create_private(self) -> None:
        """Create the database file 0600 unless it exists (sqlite3 would create it 0644)."""
        try:
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE))
        except FileExistsError:
            pass
        except OSError as exc:
            raise StoreError(f"store {self.path}: cannot create: {exc.strerror}") from None

    def _current_identity(self) -> tuple[int, int] | None:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return None
        return stat.st_dev, stat.st_ino
