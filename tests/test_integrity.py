"""The SQLite store's integrity check at open (issue 14, defect 12): damage that SQLite passes over
in silence is logged CRITICAL, and `frontdesk status` shows it and exits 3."""
from __future__ import annotations

import logging
import os
import signal
import struct
import subprocess
import sys

from frontdesk.store import open_store
from tests.test_receiver import Receiver, make_body, make_event


def frontdesk_status(store_url: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRONTDESK_", "LINE_"))}
    return subprocess.run([sys.executable, "-m", "frontdesk", "status", "--store", store_url],
                          env=env, capture_output=True, text=True, timeout=30)


def stored_count(store) -> int:
    stats = store.stats()
    return stats["pending"] + stats["in_flight"] + stats["done"] + stats["dead"]


def test_acknowledged_events_dropped_with_a_damaged_wal_are_reported_loudly(tmp_path, caplog):
    running = Receiver(tmp_path)
    try:
        running.wait_ready()
        acked = sum(running.post(make_body(make_event())).status_code == 200 for _ in range(30))
    finally:
        running.proc.send_signal(signal.SIGKILL)   # a crash: the WAL is left as it is, not checkpointed
        running.proc.wait()
    assert acked == 30
    wal = tmp_path / "frontdesk.db-wal"
    with open(wal, "r+b") as f:
        page_size = struct.unpack(">I", f.read(12)[8:12])[0]
        frames = (os.path.getsize(wal) - 32) // (24 + page_size)
        f.seek(32 + (frames // 2) * (24 + page_size) + 24 + 64)   # page data of a frame halfway
        f.write(b"\xde\xad\xbe\xef" * 4)
    with caplog.at_level(logging.CRITICAL, logger="frontdesk.store.sqlite"):
        store = open_store(running.store_url, check_integrity=True)
    try:
        assert stored_count(store) < 30   # SQLite did drop acknowledged events ...
        assert "event=store_integrity_failed" in caplog.text and "committed transaction" in caplog.text
    finally:
        store.close()
    status = frontdesk_status(running.store_url)   # ... and frontdesk says so until it is cleared
    assert status.returncode == 3, status
    assert "INTEGRITY  FAILED" in status.stdout and "integrity check" in status.stderr


def test_a_damaged_database_page_fails_quick_check(tmp_path, caplog):
    url = f"sqlite:///{tmp_path / 'fd.db'}"
    store = open_store(url)
    for start in range(0, 3000, 500):
        store.append("Ubot", [make_event(text="x" * 200) for _ in range(500)], 0)
    store.close()   # a clean close: everything is in the database file
    with open(tmp_path / "fd.db", "r+b") as f:
        page_size = struct.unpack(">H", f.read(18)[16:18])[0]
        pages = os.path.getsize(tmp_path / "fd.db") // page_size
        f.seek((pages // 2) * page_size + 8)   # inside a b-tree page of the events
        f.write(os.urandom(64))
    with caplog.at_level(logging.CRITICAL, logger="frontdesk.store.sqlite"):
        store = open_store(url, check_integrity=True)
    store.close()
    assert "event=store_integrity_failed" in caplog.text and "quick_check" in caplog.text
    assert frontdesk_status(url).returncode == 3


def test_a_sound_store_passes_and_status_exits_0(tmp_path, caplog):
    url = f"sqlite:///{tmp_path / 'fd.db'}"
    with caplog.at_level(logging.CRITICAL, logger="frontdesk.store.sqlite"):
        store = open_store(url, check_integrity=True)
        store.append("Ubot", [make_event()], 0)
        store.close()
        open_store(url, check_integrity=True).close()
    assert "store_integrity_failed" not in caplog.text
    status = frontdesk_status(url)
    assert status.returncode == 0 and "INTEGRITY" not in status.stdout
