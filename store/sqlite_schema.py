"""The SQLite store's schema: its tables and indexes, and the migrations that build them.

The schema version is SQLite's `PRAGMA user_version`: a file is migrated when it is opened, and
one from a newer frontdesk is refused. Claiming does not scan: each conversation key's oldest
pending-or-leased event carries `head = 1`, and a partial index over heads ordered by seq is all
claim reads. `due` is the not_before of a pending event and the lease expiry of a leased one, so
"deliverable" is simply `head = 1 AND due <= now` (an expired lease is deliverable again).
"""
from __future__ import annotations

import logging
import sqlite3

from .base import DEAD, DONE, LEASED, PENDING, StoreError
from .sqlite_connections import rollback

log = logging.getLogger("frontdesk.store.sqlite")

# Schema migrations: index i brings user_version i to i + 1. Append, never edit.
MIGRATIONS: list[list[str]] = [
    [
        f"""CREATE TABLE events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- store order: the document's ts
            id TEXT NOT NULL UNIQUE,                -- webhookEventId
            key TEXT NOT NULL,                      -- conversation key
            destination TEXT NOT NULL,
            event TEXT NOT NULL,                    -- the LINE event as received (JSON)
            received_at INTEGER NOT NULL,           -- epoch ms
            state INTEGER NOT NULL,                 -- {PENDING} pending, {LEASED} leased, {DONE} done, {DEAD} dead
            head INTEGER NOT NULL,                  -- 1: oldest pending/leased event of its key
            due REAL NOT NULL,                      -- pending: not_before; leased: lease expiry
            attempt INTEGER NOT NULL DEFAULT 0,     -- deliveries so far
            owner TEXT,                             -- lease holder
            error TEXT,                             -- last nack's error
            finished_at REAL                        -- done or dead since (epoch s)
        )""",
        "CREATE INDEX events_heads ON events(seq, due) WHERE head = 1",
        f"CREATE INDEX events_active ON events(key, seq) WHERE state < {DONE}",
        f"CREATE INDEX events_done ON events(finished_at) WHERE state = {DONE}",
        f"CREATE INDEX events_dead ON events(seq) WHERE state = {DEAD}",
        """CREATE TABLE journal (
            event_id TEXT NOT NULL, call_no INTEGER NOT NULL, fingerprint TEXT NOT NULL,
            state TEXT NOT NULL, request TEXT, response TEXT, updated_at REAL NOT NULL,
            PRIMARY KEY (event_id, call_no)) WITHOUT ROWID""",
        "CREATE INDEX journal_started ON journal(event_id) WHERE state = 'started'",
        """CREATE TABLE users (
            user_id TEXT PRIMARY KEY, profile TEXT, profile_fetched_at REAL,
            followed INTEGER, followed_at REAL, unfollowed_at REAL,
            data TEXT NOT NULL DEFAULT '{}')""",
        "CREATE TABLE statuses (name TEXT PRIMARY KEY, doc TEXT NOT NULL, updated_at REAL NOT NULL)",
        "CREATE TABLE controls (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ],
    # Events per state kept by triggers, so that stats() reads four rows instead of counting a
    # queue that may hold millions (0.37 s at 500,000 pending, on every /metrics scrape).
    [
        "CREATE TABLE event_counts (state INTEGER PRIMARY KEY, n INTEGER NOT NULL)",
        f"""INSERT INTO event_counts SELECT s.state, (SELECT count(*) FROM events WHERE state = s.state)
            FROM (SELECT {PENDING} AS state UNION ALL SELECT {LEASED} UNION ALL SELECT {DONE}
                  UNION ALL SELECT {DEAD}) AS s""",
        """CREATE TRIGGER events_counted_insert AFTER INSERT ON events
            BEGIN UPDATE event_counts SET n = n + 1 WHERE state = NEW.state; END""",
        """CREATE TRIGGER events_counted_delete AFTER DELETE ON events
            BEGIN UPDATE event_counts SET n = n - 1 WHERE state = OLD.state; END""",
        """CREATE TRIGGER events_counted_update AFTER UPDATE OF state ON events WHEN OLD.state <> NEW.state
            BEGIN UPDATE event_counts SET n = n - 1 WHERE state = OLD.state;
                  UPDATE event_counts SET n = n + 1 WHERE state = NEW.state; END""",
    ],
    # The shared rate budget (Store.budget_lease): per endpoint, the time its calls are reserved to.
    [
        "CREATE TABLE rate_budget (endpoint TEXT PRIMARY KEY, reserved_until REAL NOT NULL) WITHOUT ROWID",
    ],
    # The month's messages sent per kind (Store.sends_add): a few rows a month.
    [
        """CREATE TABLE sends (month TEXT NOT NULL, kind TEXT NOT NULL, n INTEGER NOT NULL,
            PRIMARY KEY (month, kind)) WITHOUT ROWID""",
    ],
]


def migrate(conn: sqlite3.Connection, path: str) -> None:
    """Bring the file's schema to the newest version in one transaction (the caller holds the
    writer lock). Raises StoreError for a file from a newer frontdesk, or one that cannot take
    the schema."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise StoreError(f"store {path}: schema version {version} is newer than this "
                             f"frontdesk knows ({len(MIGRATIONS)}); upgrade frontdesk")
        for step in range(version, len(MIGRATIONS)):
            for statement in MIGRATIONS[step]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={step + 1}")
            log.info("event=store_migrated path=%s version=%d", path, step + 1)
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        rollback(conn)
        raise StoreError(f"store {path}: cannot prepare the schema: {exc}") from None
    except StoreError:
        rollback(conn)
        raise

