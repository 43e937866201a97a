"""Whose are the `-wal` and `-shm` files beside a SQLite database?

SQLite finds a database's WAL and wal-index by name only. When the database file is removed or
replaced while processes still have it open, those two files stay theirs: a process that opens
the file now at the path with them reads pages the new file does not have (SQLITE_IOERR_SHORT_READ
while the database has grown since their last checkpoint), recovers the old WAL into the new
file, and loses its own WAL when the last process of the old file closes (SQLite then deletes both
by name). Measured before this check: after `rm frontdesk.db` under `frontdesk run`, every
restarted process failed "disk I/O error" until the old ones were gone, or for good.

The locks tell. Every open connection holds a shared lock on its database file and on the
wal-index's "DMS" byte (sqlite.org/fileformat2.html, "WAL-Index Format"; os_unix.c): a wal-index
in use while nobody holds the file at the path belongs to another file. The probes use F_GETLK,
which changes no lock; like any descriptor of these files they must not be opened by a process
that has the database open itself (closing one drops all of that process's POSIX locks on the file).
"""
from __future__ import annotations

import fcntl
import os
import struct
import time

SHARED_FIRST, SHARED_SIZE = 0x40000002, 510   # the database file's range of shared (reader) locks
WAL_INDEX_DMS = 128                           # the wal-index byte every connection keeps a shared lock on
_FLOCK = struct.Struct("hhqqi")               # struct flock (Linux): type, whence, start, length, pid
ORPHAN_SUFFIX = ".orphaned-"


def _locked_by_another_process(path: str, start: int, length: int) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        probe = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, start, length, 0)
        return _FLOCK.unpack(fcntl.fcntl(fd, fcntl.F_GETLK, probe))[0] != fcntl.F_UNLCK
    finally:
        os.close(fd)


def open_elsewhere(db_path: str) -> bool:
    """Another process has the database file at db_path open: its wal-index is live, and SQLite
    will not recover the WAL when this process connects."""
    return _locked_by_another_process(db_path, SHARED_FIRST, SHARED_SIZE)


def held_by_another_file(db_path: str) -> bool:
    """The wal-index beside db_path is in use while no process holds the database file at the path:
    the processes using it have another file open (one removed or replaced since)."""
    return _locked_by_another_process(db_path + "-shm", WAL_INDEX_DMS, 1) and not open_elsewhere(db_path)


def move_orphans(db_path: str) -> list[str]:
    """Before a new database file is created: a `-wal` or `-shm` left beside the path is a removed
    file's, whose processes all died without closing it. The WAL is moved aside (it may hold that
    file's last transactions), the wal-index removed. Returns what the WAL became."""
    moved = []
    if os.path.exists(db_path + "-wal"):
        kept = db_path + "-wal" + ORPHAN_SUFFIX + time.strftime("%Y%m%dT%H%M%S")
        os.replace(db_path + "-wal", kept)
        moved.append(kept)
    try:
        os.unlink(db_path + "-shm")
    except FileNotFoundError:
        pass
    return moved
