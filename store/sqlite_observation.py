"""The SQLite store's observation and control: counts and hot keys for operators, the processes'
status documents (`statuses`) and operator controls (`controls`)."""
from __future__ import annotations

import json
import time
from typing import Callable

from .base import DEAD, DONE, LEASED, PENDING, Observation
from .sqlite_connections import SQLiteConnections


class SQLiteObservation(Observation):
    """Reads that operators poll (cheap at any queue size: the counts are kept by triggers in
    `event_counts`, schema 2) and the small documents processes publish for each other."""

    def __init__(self, db: SQLiteConnections, clock: Callable[[], float] = time.time):
        self._db = db
        self._clock = clock

    def stats(self) -> dict:
        """Counts kept by triggers (event_counts), and the oldest undelivered event: a head of its
        key, so the first row of the heads index. A few rows read at any queue size."""
        now = self._clock()
        counts = dict(self._db.read("SELECT state, n FROM event_counts"))
        oldest = self._db.read("SELECT received_at FROM events WHERE head = 1 ORDER BY seq LIMIT 1")
        return {"pending": counts.get(PENDING, 0), "in_flight": counts.get(LEASED, 0),
                "done": counts.get(DONE, 0), "dead": counts.get(DEAD, 0),
                "oldest_pending_s": round(max(0.0, now - oldest[0][0] / 1000.0), 3) if oldest else 0.0}

    def busiest_keys(self, limit: int = 1) -> list[tuple[str, int]]:
        rows = self._db.read(f"SELECT key, count(*) AS n FROM events WHERE state < {DONE} GROUP BY key "
                             "ORDER BY n DESC, key LIMIT ?", (limit,))
        return [(key, n) for key, n in rows]

    def put_status(self, name: str, status: dict) -> None:
        document = json.dumps(status)
        self._db.transaction(lambda conn: conn.execute(
            "INSERT OR REPLACE INTO statuses VALUES (?, ?, ?)", (name, document, self._clock())))

    def get_statuses(self) -> dict[str, dict]:
        return {name: {**json.loads(doc), "updated_at": updated_at}
                for name, doc, updated_at in self._db.read("SELECT name, doc, updated_at FROM statuses")}

    def delete_status(self, name: str) -> None:
        self._db.transaction(lambda conn: conn.execute("DELETE FROM statuses WHERE name = ?", (name,)))

    def prune_statuses(self, older_than_s: float) -> int:
        cutoff = self._clock() - older_than_s
        return self._db.transaction(lambda conn: conn.execute(
            "DELETE FROM statuses WHERE updated_at < ?", (cutoff,)).rowcount)

    def set_control(self, name: str, value) -> None:
        document = json.dumps(value)
        self._db.transaction(lambda conn: conn.execute(
            "INSERT OR REPLACE INTO controls VALUES (?, ?)", (name, document)))

    def get_control(self, name: str):
        rows = self._db.read("SELECT value FROM controls WHERE name = ?", (name,))
        return json.loads(rows[0][0]) if rows else None
