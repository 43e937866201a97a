"""store/sqlite_salvage.py on a store's files as a killed process leaves them, with the WAL damaged: the
events only the dropped transactions held, and whether each is left to deliver."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3

from frontdesk.store import sqlite_salvage as salvage
from frontdesk.store.base import DONE, PENDING
from frontdesk.store.sqlite_schema import MIGRATIONS

ROWS = 60


def crashed_store(tmp_path, states: dict[int, int]) -> str:
    """A database with the store's schema and ROWS events, one per transaction, its WAL not
    merged (copied while the connection is open); event n has state states.get(n, PENDING)."""
    live = str(tmp_path / "live.db")
    conn = sqlite3.connect(live, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("PRAGMA synchronous=OFF")
    for step in MIGRATIONS:
        for statement in step:
            conn.execute(statement)
    for n in range(ROWS):
        event = json.dumps({"webhookEventId": f"ev{n}", "text": "x" * 1500})
        conn.execute("INSERT INTO events (id, key, destination, event, received_at, state, head, due)"
                     " VALUES (?, ?, 'Ubot', ?, ?, ?, 1, 0)", (f"ev{n}", f"U{n}", event, 1000 + n,
                                                               states.get(n, PENDING)))
    path = str(tmp_path / "fd.db")
    for suffix in ("", "-wal"):
        shutil.copyfile(live + suffix, path + suffix)
    conn.close()
    return path


def kept_by_sqlite(path: str) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {row[0] for row in conn.execute("SELECT id FROM events")}
    except sqlite3.OperationalError:
        return set()
    finally:
        conn.close()


def test_the_events_only_dropped_transactions_held_come_back_with_what_is_left_to_do(tmp_path):
    path = crashed_store(tmp_path, states={ROWS - 1: DONE})
    size = os.path.getsize(path + "-wal")
    with open(path + "-wal", "r+b") as f:
        f.seek(size // 2)
        f.write(b"\xde\xad\xbe\xef" * 1024)
    lost = salvage.lost_events(path, path + "-wal")   # (reads the copies only: nothing is merged)
    kept = kept_by_sqlite(path)
    ids = [event.event["webhookEventId"] for event in lost if event.event is not None]
    assert kept and not kept & set(ids) and len(kept) + len(lost) >= ROWS - 1
    assert ids == sorted(ids, key=lambda event_id: int(event_id[2:]))   # store order
    assert lost[-1].finished and not any(event.finished for event in lost[:-1])
    assert {event.destination for event in lost} == {"Ubot"} and lost[0].received_at_ms >= 1000
    assert not any(name.startswith(".salvage-") for name in os.listdir(tmp_path))   # scratch files gone


def test_copies_are_found_in_pairs_only(tmp_path):
    db = str(tmp_path / "fd.db")
    for name in ("fd.db-wal.damaged-aa", "fd.db.damaged-aa", "fd.db-wal.damaged-bb"):
        (tmp_path / name).write_bytes(b"")
    assert salvage.copies_beside(db) == [(db + ".damaged-aa", db + "-wal.damaged-aa")]
