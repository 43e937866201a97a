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
    """Stands in for the writer lock: records whether the checkpoint held it."""

    def __init__(self):
        self.held = 0

    def __enter__(self):
        self.held += 1

    def __exit__(self, *exc_info):
        pass


@pytest.mark.parametrize("bound_bytes, writers_held_off", [(8 * KIB, 1), (1 << 31, 0)])
def test_only_a_wal_past_the_bound_holds_every_writer_off_while_it_is_restarted(db, bound_bytes, writers_held_off):
    append(db, *(event(n, f"U{n}") for n in range(200)))
    lock = RecordingLock()
    conn = db.connect("NORMAL")
    try:
        Checkpointer(db.path, db.connect, lambda: lock, 4 * KIB, bound_bytes).checkpoint(conn)
    finally:
        conn.close()
    assert lock.held == writers_held_off


def test_a_failed_checkpoint_is_logged_not_raised(db, caplog):
    append(db, event(1))
    conn = db.connect("NORMAL")
    conn.close()   # a connection that cannot run the checkpoint
    with caplog.at_level(logging.WARNING, logger="frontdesk.store.sqlite"):
        checkpointer(db, wal_bytes=1, bound_bytes=1 << 31).checkpoint(conn)
    assert "event=checkpoint_failed" in caplog.text


def test_a_checkpointer_never_started_stops_at_once(tmp_path):
    Checkpointer(str(tmp_path / "c.db"), lambda sync: None, lambda: None).stop()
