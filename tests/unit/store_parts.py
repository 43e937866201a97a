"""The SQLite store's parts opened on a temporary file, for the unit tests of each concern: the
connections as the store opens them, a clock the test moves, a notify that counts."""
from __future__ import annotations

from frontdesk.store.groupcommit import AppendRequest
from frontdesk.store.sqlite_appends import SQLiteAppends
from frontdesk.store.sqlite_connections import SQLiteConnections
from frontdesk.store.sqlite_files import SQLiteFile
from frontdesk.store.sqlite_schema import migrate
from frontdesk.store.sqlite_users import SQLiteUsers

EPOCH = 1_700_000_000.0   # the injected clock's start


class Wakeups:
    """A notify() that counts the wake-ups it was asked for."""

    def __init__(self):
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def open_connections(path: str) -> SQLiteConnections:
    """Connections to a new or existing store file, opened in the order SQLiteStore.open uses."""
    db = SQLiteConnections(SQLiteFile(path))
    db.open_locks()
    db.file.open(lambda: None)
    db.open_bookkeeping()
    migrate(db.bookkeeping, path)
    db.open_writers()
    return db


def event(n: int, key: str = "U1", kind: str = "message", timestamp: int | None = None) -> dict:
    return {"type": kind, "timestamp": 1_700_000_000_000 + n if timestamp is None else timestamp,
            "webhookEventId": f"ev{n:03d}", "source": {"type": "user", "userId": key},
            "message": {"type": "text", "id": str(n), "text": f"hello {n}"}}


def append(db: SQLiteConnections, *events: dict, received_at_ms: int = 0) -> list[str]:
    """Append events as one webhook through the group commit's commit function; the new ids."""
    request = AppendRequest("Ubot", list(events), received_at_ms, None)
    SQLiteAppends(db, SQLiteUsers(db)).commit(lambda: [request])
    return request.result.new
