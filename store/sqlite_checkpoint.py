"""The SQLite store's checkpoints, on a thread of their own, never inside a commit.

SQLite's automatic checkpoint runs inside the commit that fills the WAL, holding every other
writer while it copies and fsyncs (end-to-end p50 at 300 events/s: 1.1 s with it, ~90 ms
without). A passive checkpoint here blocks no writer and no other store call, but it can never
finish while readers and writers keep coming, and the WAL then grows without bound (1.1 GB while
100,000 events in random order drained, with a 31 MB database). Past the bound, writers of every
process wait on the writer lock while a RESTART checkpoint copies the WAL back and lets the next
writer start it over: peak 168 MB in that drain, at the price of its rate (18,200 -> 13,800
events/s); at 1,000 webhooks/s it never comes to that (docs/benchmarks.md).

Every checkpoint, passive ones too, runs under the writer lock, so that no transaction of any
process commits while one runs. SQLite from 3.7.0 to 3.51.2 (3.40 on Debian 12 and 13's Python)
has a race, the "WAL-reset bug" (sqlite.org/wal.html#walresetbug): a checkpoint that starts just
after another one completed, while a commit resets the WAL, marks frames as copied back that were
not, and their pages are lost. With a checkpointer in every process and writers in several, it
happened here: 1 of 6 bench runs at 1,000 events/s left zeroed pages in the database file
("database disk image is malformed") 14 s in, at the first checkpoint. Holding writers off costs
them the checkpoint's time, once per CHECKPOINT_WAL_BYTES of WAL (docs/store.md).
"""
from __future__ import annotations

import logging
import os
import sqlite3
import threading
from typing import Callable

from .sqlite_connections import BOOKKEEPING_SYNC, WriterLock

log = logging.getLogger("frontdesk.store.sqlite")

CHECKPOINT_INTERVAL_S = 0.25
CHECKPOINT_WAL_BYTES = 16 << 20   # a checkpoint copies back a WAL at least this big
WAL_BOUND_BYTES = 128 << 20       # past this, writers wait while the WAL is restarted


class Checkpointer:
    """Looks at the WAL's size four times a second and copies it back into the database file
    once it passes CHECKPOINT_WAL_BYTES, on a connection of its own, under the writer lock; past
    WAL_BOUND_BYTES it also restarts the WAL. Built idle: `start()`, then `stop()`."""

    def __init__(self, path: str, connect: Callable[[str], sqlite3.Connection],
                 lock: Callable[[], WriterLock], wal_bytes: int = CHECKPOINT_WAL_BYTES,
                 bound_bytes: int = WAL_BOUND_BYTES):
        self._path = path
        self._wal_bytes = wal_bytes
        self._bound_bytes = bound_bytes
        self._connect = connect
        self._lock = lock   # the writer lock a RESTART holds (opened with the store)
        self._conn: sqlite3.Connection | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="store-checkpoint", daemon=True)

    def start(self) -> None:
        """Open its connection (raises StoreError as any connection does), then start the thread."""
        self._conn = self._connect(BOOKKEEPING_SYNC)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.ident is not None:   # started
            self._thread.join()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _run(self) -> None:
        while not self._stopping.wait(CHECKPOINT_INTERVAL_S):
            self.checkpoint(self._conn)

    def checkpoint(self, conn: sqlite3.Connection) -> None:
        """One look at the WAL: nothing, a passive checkpoint, or a restart past the bound; either
        with every writer held off (the module's docstring says why)."""
        try:
            size = os.path.getsize(self._path + "-wal")
            if size >= self._wal_bytes:
                mode = "RESTART" if size >= self._bound_bytes else "PASSIVE"
                with self._lock():
                    conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()
        except FileNotFoundError:
            pass
        except sqlite3.Error as exc:
            log.warning("event=checkpoint_failed path=%s reason=%s", self._path, exc)
