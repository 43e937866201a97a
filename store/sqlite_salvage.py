"""Getting back the events a damaged WAL lost, from the copies of the database file and its WAL
that the SQLite store keeps when it finds one (store/sqlite_integrity.py; docs/store.md, "Integrity check").

The copies are merged twice into scratch databases (store/sqlite_wal.py `replay`): as SQLite's recovery
merged them (what it kept), and with every intact committed frame (what was committed, less the
damaged frames). An event in the second and not in the first was stored, acknowledged, and then
dropped; `frontdesk integrity salvage` appends those not finished before the crash to the store
again (deduplicated by webhookEventId, so running it twice re-queues nothing twice). An event
whose own page was in a damaged frame cannot be read back.
"""
from __future__ import annotations

import glob
import json
import os
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import sqlite_wal
from .base import DEAD, DONE
from .sqlite_integrity import DAMAGED_SUFFIX


@dataclass(frozen=True)
class LostEvent:
    destination: str
    event: dict | None        # the LINE event as received; None when its text cannot be read back
    received_at_ms: int
    finished: bool            # acked or dead-lettered before the crash: nothing left to deliver


def copies_beside(db_path: str) -> list[tuple[str, str]]:
    """(database copy, WAL copy) of every damaged WAL kept beside the database, oldest first."""
    pairs = []
    for wal_copy in glob.glob(glob.escape(db_path + "-wal" + DAMAGED_SUFFIX) + "*"):
        db_copy = db_path + DAMAGED_SUFFIX + wal_copy.rsplit(DAMAGED_SUFFIX, 1)[1]
        if os.path.exists(db_copy):
            pairs.append((db_copy, wal_copy))
    return sorted(pairs, key=lambda pair: os.path.getmtime(pair[1]))


def lost_events(db_copy: str, wal_copy: str) -> list[LostEvent]:
    """The events the WAL held that SQLite's recovery dropped, in store order. Raises
    sqlite3.DatabaseError when what can be merged is too broken to read."""
    with tempfile.TemporaryDirectory(prefix=".salvage-", dir=os.path.dirname(os.path.abspath(db_copy))) as scratch:
        kept, committed = os.path.join(scratch, "kept.db"), os.path.join(scratch, "committed.db")
        sqlite_wal.replay(db_copy, wal_copy, kept, everything=False)
        sqlite_wal.replay(db_copy, wal_copy, committed, everything=True)
        kept_ids = {row[0] for row in _events(kept, "id")}
        return [LostEvent(destination, _parsed(event), received_at, state in (DONE, DEAD))
                for event_id, destination, event, received_at, state
                in _events(committed, "id, destination, event, received_at, state") if event_id not in kept_ids]


def _parsed(text) -> dict | None:
    try:
        event = json.loads(text)
    except (TypeError, ValueError):
        return None
    return event if isinstance(event, dict) else None


def _events(path: str, columns: str) -> list[tuple]:
    """Rows of a scratch database's events table ([] if it has none: the WAL held its creation)."""
    conn = sqlite3.connect(Path(path).as_uri() + "?immutable=1", uri=True)
    try:
        return conn.execute(f"SELECT {columns} FROM events ORDER BY seq").fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    finally:
        conn.close()
