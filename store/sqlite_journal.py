"""The SQLite store's call journal (`journal`): one row per (event, n-th API call)."""
from __future__ import annotations

import time
from typing import Callable

import orjson

from .base import Journal, JournalEntry
from .sqlite_connections import SQLiteConnections

_COLUMNS = "event_id, call_no, fingerprint, state, request, response, updated_at"


def _entry(row) -> JournalEntry:
    event_id, call_no, fingerprint, state, request, response, updated_at = row
    return JournalEntry(event_id, call_no, fingerprint, state,
                        orjson.loads(request) if request is not None else None,
                        orjson.loads(response) if response is not None else None, updated_at)


def _json_or_null(value) -> str | None:
    return None if value is None else orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


class SQLiteJournal(Journal):
    """The `journal` table; requests and responses stored as JSON."""

    def __init__(self, db: SQLiteConnections, clock: Callable[[], float] = time.time):
        self._db = db
        self._clock = clock

    def journal_get(self, event_id: str, call_no: int) -> JournalEntry | None:
        rows = self._db.read(f"SELECT {_COLUMNS} FROM journal WHERE event_id = ? AND call_no = ?",
                             (event_id, call_no))
        return _entry(rows[0]) if rows else None

    def journal_put_many(self, entries: list[JournalEntry]) -> None:
        self._db.transaction(self._insert(entries))

    def journal_put_many_nowait(self, entries: list[JournalEntry]) -> bool:
        return self._db.transaction_nowait(self._insert(entries))

    def _insert(self, entries: list[JournalEntry]):
        rows = [(entry.event_id, entry.call_no, entry.fingerprint, entry.state, _json_or_null(entry.request),
                 _json_or_null(entry.response), entry.updated_at or self._clock()) for entry in entries]
        return lambda conn: conn.executemany(f"INSERT OR REPLACE INTO journal ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def journal_unfinished(self) -> list[JournalEntry]:
        rows = self._db.read(f"SELECT {_COLUMNS} FROM journal WHERE state = 'started' ORDER BY updated_at")
        return [_entry(row) for row in rows]
