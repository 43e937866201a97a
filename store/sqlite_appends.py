"""The SQLite store's appends: what the group commit (store/groupcommit.py) writes, on the writer
connection at synchronous=FULL, and the health probe written the same way.

One transaction for every request of a group (one transaction per request inside waitress threads
measured 0.4-0.6x the throughput, with p99 in the hundreds of ms; batches of 100 rows ~256,000
rows/s): one query finds the duplicates, one batched insert stores the rest (a statement per
event measured ~30% slower).
"""
from __future__ import annotations

import json
import sqlite3

import orjson

from frontdesk.protocol.events import conversation_key

from .base import DONE, PENDING, AppendResult, StoreUnavailable
from .groupcommit import AppendRequest, Take
from .rules import follow_change, new_events
from .sqlite_connections import SQLiteConnections, id_chunks, rollback
from .sqlite_users import SQLiteUsers

PROBE_BYTES = 64 << 10   # the health probe's write (SQLiteAppends.probe)
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))

# A new event heads its key when the key has no pending or leased event yet.
_INSERT_EVENT = f"""INSERT INTO events (id, key, destination, event, received_at, state, head, due)
    SELECT ?1, ?2, ?3, ?4, ?5, {PENDING}, NOT EXISTS (SELECT 1 FROM events WHERE key = ?2 AND state < {DONE}), 0
    WHERE true ON CONFLICT (id) DO NOTHING"""


def _event_text(event: dict) -> str:
    """The event as stored: by orjson (a webhook's events come parsed from JSON and fit it), by the
    standard library for what orjson refuses (an integer beyond 64 bits, say, appended by a caller
    other than the receiver: stored, and dead-lettered by the dispatcher, which cannot send it)."""
    try:
        return orjson.dumps(event).decode()
    except TypeError:
        return _JSON.encode(event)


class SQLiteAppends:
    """The group commit's commit function and probe for one SQLite store."""

    def __init__(self, db: SQLiteConnections, users: SQLiteUsers):
        self._db = db
        self._users = users

    def commit(self, take: Take) -> bool:
        """One transaction for every request still wanted; returns whether anything new was stored.
        The disk, the file, a lock (sqlite3.OperationalError) is the store's fault:
        StoreUnavailable; anything else is what a request holds (the group commit writes apart)."""
        conn = self._db.writer
        with self._db.writer_lock:
            try:
                conn.execute("BEGIN IMMEDIATE")
                live = take()
                stored = self._insert(conn, live)
                self._db.file.check_same()   # last thing before COMMIT: never a 200 for a lost file
                conn.execute("COMMIT" if live else "ROLLBACK")
            except BaseException as exc:
                rollback(conn)   # before the lock is released, so no writer meets it open
                if isinstance(exc, sqlite3.OperationalError):
                    raise StoreUnavailable(str(exc)) from None
                raise
        return stored

    def _insert(self, conn: sqlite3.Connection, requests: list[AppendRequest]) -> bool:
        """Sets each request's result; True when any event was new."""
        ids = [event["webhookEventId"] for request in requests for event in request.events]
        seen = set()
        for marks, chunk in id_chunks(ids):
            seen.update(row[0] for row in conn.execute(f"SELECT id FROM events WHERE id IN ({marks})", chunk))
        rows, follows = [], []
        for request in requests:
            result = request.result = AppendResult()
            for event_id, event in new_events(request.events, seen, result):
                rows.append((event_id, conversation_key(event), request.destination,
                             _event_text(event), request.received_at_ms))
                if change := follow_change(event):
                    follows.append(change)
        conn.executemany(_INSERT_EVENT, rows)
        for kind, user_id, at in follows:
            self._users.record_follow(conn, kind, user_id, at)
        return bool(rows)

    def probe(self) -> None:
        """The health probe, on the writer thread while writes fail: PROBE_BYTES written the way
        appends are (the writer lock, synchronous=FULL). As big as a large webhook, so that room
        for a page or two on a nearly full disk does not pass for health."""
        conn = self._db.writer
        with self._db.writer_lock:
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT OR REPLACE INTO controls VALUES ('health_probe', ?)", ("." * PROBE_BYTES,))
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                rollback(conn)
                raise StoreUnavailable(str(exc)) from None
