"""The SQLite store's waiting chats: the one-to-one chats whose oldest event not yet acked has
waited longer than a given time (the rate limiter shows them LINE's loading animation)."""
from __future__ import annotations

from .base import Waiting
from .sqlite_connections import SQLiteConnections

# A one-to-one chat's conversation key is its user ID (protocol/events.py conversation_key: a
# group's or room's event has the group or room as its key): LINE's user IDs start with U.
_WAITING = ("SELECT key, received_at FROM events INDEXED BY events_heads "
            "WHERE head = 1 AND key >= 'U' AND key < 'V' AND received_at <= ? ORDER BY seq LIMIT ?")


class SQLiteWaiting(Waiting):
    """One read of the heads index (each conversation's oldest pending-or-leased event): as many
    rows as conversations have events waiting, whatever the queue's length."""

    def __init__(self, db: SQLiteConnections):
        self._db = db

    def waiting_chats(self, received_before_ms: int, limit: int) -> list[tuple[str, int]]:
        return [(key, received_at) for key, received_at in self._db.read(_WAITING, (received_before_ms, limit))]
