"""The SQLite store's dead letters and retention: listing, re-queuing and dropping dead letters,
and purging done events (with their call journal) in short transactions."""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Callable

from .base import DEAD, DONE, PENDING, Retention
from .sqlite_connections import SQLiteConnections

log = logging.getLogger("frontdesk.store.sqlite")

PURGE_CHUNK = 500   # rows deleted per transaction, so writers are never held up long


def _dead_filter(event_ids: list[str] | None) -> tuple[str, list]:
    if event_ids is None:
        return f"state = {DEAD}", []
    return f"state = {DEAD} AND id IN ({','.join('?' * len(event_ids))})", list(event_ids)


class SQLiteRetention(Retention):
    """What leaves the queue, and how: dead letters stay until an operator acts; done events go
    after retention_s, purged by the dispatcher on a thread of its own. `close()` ends a purge's
    pauses between chunks."""

    def __init__(self, db: SQLiteConnections, notify: Callable[[], None], clock: Callable[[], float] = time.time):
        self._db = db
        self._notify = notify
        self._clock = clock
        self._closing = threading.Event()

    def dead_letters(self, limit: int = 100) -> list[dict]:
        rows = self._db.read("SELECT id, key, attempt, error, finished_at, event FROM events"
                             f" WHERE state = {DEAD} ORDER BY seq LIMIT ?", (limit,))
        return [{"id": event_id, "key": key, "attempts": attempts, "error": error, "dead_at": dead_at,
                 "event": json.loads(text)} for event_id, key, attempts, error, dead_at, text in rows]

    def retry_dead(self, event_ids: list[str] | None = None) -> int:
        """Re-queue dead letters at the end of the queue (a new seq) with a fresh attempt count.

        At the end, because later events of the same conversation were delivered meanwhile;
        re-inserting also keeps "one event per key in flight" true.
        """
        if event_ids == []:
            return 0
        where, params = _dead_filter(event_ids)

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

        count = self._db.transaction(work)
        if count:
            log.info("event=dead_letters_requeued count=%d", count)
            self._notify()
        return count

    def drop_dead(self, event_ids: list[str] | None = None) -> int:
        if event_ids == []:
            return 0
        where, params = _dead_filter(event_ids)

        def work(conn):
            ids = [row[0] for row in conn.execute(f"DELETE FROM events WHERE {where} RETURNING id", params)]
            conn.executemany("DELETE FROM journal WHERE event_id = ?", [(i,) for i in ids])
            return len(ids)

        count = self._db.transaction(work)
        if count:
            log.info("event=dead_letters_dropped count=%d", count)
        return count

    def purge_done(self, older_than_s: float) -> int:
        """Delete done events (and their call journal) in chunks, one short transaction each, and
        after each chunk leave the writer lock free for as long as the chunk held it: a purge of
        any size takes at most half the lock, so appends keep their ack budget (purging 200,000
        back to back held appends up to 0.64 s)."""
        cutoff = self._clock() - older_than_s

        def chunk(conn):
            ids = [row[0] for row in conn.execute(
                f"DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE state = {DONE}"
                " AND finished_at < ? LIMIT ?) RETURNING id", (cutoff, PURGE_CHUNK))]
            conn.executemany("DELETE FROM journal WHERE event_id = ?", [(i,) for i in ids])
            return len(ids)

        total = 0
        while True:
            started = time.monotonic()
            removed = self._db.transaction(chunk)
            total += removed
            if removed < PURGE_CHUNK or self._closing.wait(time.monotonic() - started):
                break
        if total:
            log.info("event=done_events_purged count=%d older_than_s=%g", total, older_than_s)
        return total

    def close(self) -> None:
        self._closing.set()
