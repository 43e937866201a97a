"""The SQLite store's shared rate budget (`rate_budget`, schema 3): per endpoint, the time its
calls are reserved to (ratelimiter/shared_budget.py spends it)."""
from __future__ import annotations

from .base import Budget
from .sqlite_connections import SQLiteConnections


class SQLiteBudget(Budget):
    """One row per endpoint, read and moved on in one write transaction (BEGIN IMMEDIATE: no
    other process reads between the read and the write), so reservations never overlap."""

    def __init__(self, db: SQLiteConnections):
        self._db = db

    def budget_lease(self, endpoint: str, seconds: float, now: float,
                     max_ahead_s: float) -> tuple[bool, float]:
        def work(conn):
            row = conn.execute("SELECT reserved_until FROM rate_budget WHERE endpoint = ?",
                               (endpoint,)).fetchone()
            start = now if row is None else max(now, row[0])
            if start > now + max_ahead_s:
                return False, start
            conn.execute("INSERT OR REPLACE INTO rate_budget VALUES (?, ?)", (endpoint, start + seconds))
            return True, start
        return self._db.transaction(work)
