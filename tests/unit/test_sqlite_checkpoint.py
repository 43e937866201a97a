"""The SQLite store's checkpointer (store/sqlite_checkpoint.py), one look at the WAL at a time,
with thresholds small enough for a few rows."""
from __future__ import annotations

import logging
import os

import pytest

from frontdesk.store.sqlite_checkpoint import Checkpointer
from tests.unit.store_parts import append, event, open_connections

KIB = 1024


@pytest.fixture
def db(tmp_path):
    connections = open_connections(str(tmp_path / "c.db"))
    yield connections
    connections.close()


def checkpointer(db, wal_bytes: int, bound_bytes: int) -> Checkpointer:
    return Checkpointer(db.path, db.connect, lambda: db.checkpoint_lock, wal_bytes, bound_bytes)


def test_a_wal_below_the_threshold_is_left_alone(db):
    append(db, event(1))
    size = os.path.getsize(db.path)
    conn = db.connect("NORMAL")
    try:
        checkpointer(db, wal_bytes=1 << 30, bound_bytes=1 << 31).checkpoint(conn)
    finally:
        conn.close()
    assert os.path.getsize(db.path) == size


def test_a_wal_past_the_threshold_is_copied_back_into_the_database_file(db):
    append(db, *(event(n, f"U{n}") for n in range(200)))
    size = os.path.getsize(db.path)
    conn = db.connect("NORMAL")
    try:
        checkpointer(db, wal_bytes=4 * KIB, bound_bytes=1 << 31).checkpoint(conn)
    finally:
        conn.close()
    assert os.path.getsize(db.path) > size


class RecordingLock:
    """Stands in for the writer lock: records whether it is held."""

    def __init__(self):
        self.inside = False

    def __enter__(self):
        self.inside = True

    def __exit__(self, *exc_info):
        self.inside = False


@pytest.mark.parametrize("bound_bytes, mode", [(8 * KIB, "RESTART"), (1 << 31, "PASSIVE")])
def test_every_checkpoint_runs_with_every_writer_held_off(db, bound_bytes, mode):
    """A checkpoint beside a commit that resets the WAL can lose pages in SQLite before 3.51.3
    (store/sqlite_checkpoint.py): no checkpoint may run outside the writer lock."""
    append(db, *(event(n, f"U{n}") for n in range(200)))
    lock = RecordingLock()
    ran = []
    conn = db.connect("NORMAL")
    conn.set_trace_callback(lambda sql: ran.append((sql, lock.inside)))
    try:
        Checkpointer(db.path, db.connect, lambda: lock, 4 * KIB, bound_bytes).checkpoint(conn)
    finally:
        conn.close()
    assert ran == [(f"PRAGMA wal_checkpoint({mode})", True)]


def test_a_failed_checkpoint_is_logged_not_raised(db, caplog):
    append(db, event(1))
    conn = db.connect("NORMAL")
    conn.close()   # a connection that cannot run the checkpoint
    with caplog.at_level(logging.WARNING, logger="frontdesk.store.sqlite"):
        checkpointer(db, wal_bytes=1, bound_bytes=1 << 31).checkpoint(conn)
    assert "event=checkpoint_failed" in caplog.text


def test_a_checkpointer_never_started_stops_at_once(tmp_path):
    Checkpointer(str(tmp_path / "c.db"), lambda sync: None, lambda: None).stop()
