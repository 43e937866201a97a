"""The SQLite store's count of the messages sent per quota month and kind (`sends`, schema 4)."""
from __future__ import annotations

from .base import Sends
from .sqlite_connections import SQLiteConnections


class SQLiteSends(Sends):
    """One row per (month, kind), added to with an upsert in one write transaction, so the rate
    limiters of several dispatchers on one file add up."""

    def __init__(self, db: SQLiteConnections):
        self._db = db

    def sends_add(self, month: str, counts: dict[str, int]) -> dict[str, int]:
        if not any(counts.values()):
            return dict(self._db.read("SELECT kind, n FROM sends WHERE month = ?", (month,)))

        def work(conn):
            conn.executemany("INSERT INTO sends VALUES (?, ?, ?) ON CONFLICT (month, kind) DO UPDATE "
                             "SET n = n + excluded.n", [(month, kind, n) for kind, n in counts.items() if n])
            return dict(conn.execute("SELECT kind, n FROM sends WHERE month = ?", (month,)).fetchall())
        return self._db.transaction(work)
