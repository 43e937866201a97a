"""The SQLite store's integrity check at open: damage that SQLite passes over in silence (a WAL
it would replay only in part, a broken database page) is logged CRITICAL, the receiver's /healthz
answers 503 and `frontdesk status` shows it and exits 3 (docs/store.md, "Integrity check")."""
from __future__ import annotations

import logging
import os
import re
import signal
import sqlite3
import stat
import struct
import subprocess
import sys

import pytest
import requests

from frontdesk.store import open_store
from tests.helpers import wait_until
from tests.test_receiver import Receiver, make_body, make_event


def frontdesk(store_url: str, *command: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRONTDESK_", "LINE_"))}
    return subprocess.run([sys.executable, "-m", "frontdesk", *command, "--store", store_url],
                          env=env, capture_output=True, text=True, timeout=60)


def frontdesk_status(store_url: str) -> subprocess.CompletedProcess:
    return frontdesk(store_url, "status")


def stored_count(store) -> int:
    stats = store.stats()
    return stats["pending"] + stats["in_flight"] + stats["done"] + stats["dead"]


def healthz(receiver: Receiver) -> tuple[int, dict] | None:
    """(status, body) of the receiver's /healthz; None while it does not listen yet."""
    try:
        answer = requests.get(receiver.url + "/healthz", timeout=2)
    except requests.ConnectionError:
        return None
    return answer.status_code, answer.json()


@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_acknowledged_events_a_damaged_wal_would_lose_are_found_loudly(tmp_path, where):
    """40 webhooks acknowledged, the receiver killed with its WAL not merged, 4 KiB of the WAL
    overwritten (its header and first frame / the middle / the last commit frame's page): the
    restarted receiver logs CRITICAL, keeps copies of the WAL and the database as found beside the
    store, answers /healthz 503, and `frontdesk status` exits 3; `frontdesk integrity salvage`
    gets the dropped events back but one whose own page was damaged; `frontdesk integrity clear`
    ends it."""
    running = Receiver(tmp_path)
    events = [make_event() for _ in range(40)]
    try:
        running.wait_ready()
        assert all(running.post(make_body(event)).status_code == 200 for event in events)
    finally:
        running.proc.send_signal(signal.SIGKILL)   # a crash: the WAL is left as it is, not merged
        running.proc.wait()
    wal = tmp_path / "frontdesk.db-wal"
    size = os.path.getsize(wal)
    with open(wal, "r+b") as f:
        f.seek({"start": 0, "middle": size // 2, "end": size - 4096}[where])
        f.write(b"\xde\xad\xbe\xef" * 1024)
    damaged = wal.read_bytes()

    restarted = Receiver(tmp_path)
    try:
        answer = wait_until(lambda: healthz(restarted), timeout=15, message="the restarted receiver answers")
        assert answer[0] == 503 and answer[1]["status"] == "integrity_failed", answer
        log = restarted.log()
        assert re.search(r"CRITICAL .*event=store_integrity_failed .*committed transaction", log), log
        copies = list(tmp_path.glob("frontdesk.db-wal.damaged-*"))
        assert len(copies) == 1 and copies[0].read_bytes() == damaged, copies
        database_copy = tmp_path / copies[0].name.replace("-wal.", ".")
        assert database_copy.exists() and str(copies[0]) in log and str(database_copy) in log
        assert {stat.S_IMODE(path.stat().st_mode) for path in (copies[0], database_copy)} == {0o600}
        assert restarted.post(make_body(make_event())).status_code == 200   # it stores what comes
    finally:
        assert restarted.stop() == 0
    status = frontdesk_status(restarted.store_url)
    assert status.returncode == 3, status
    assert "INTEGRITY  FAILED" in status.stdout and str(copies[0]) in status.stdout
    acked = {event["webhookEventId"] for event in events}
    assert len(acked - stored_ids(tmp_path)) > 0   # SQLite did drop acknowledged events

    again = Receiver(tmp_path)   # the next start finds nothing new: the report stands until cleared
    try:
        answer = wait_until(lambda: healthz(again), timeout=15, message="the receiver answers again")
        assert answer[0] == 503 and "store_integrity_failed" not in again.log(), answer
        salvaged = frontdesk(again.store_url, "integrity", "salvage")
        assert salvaged.returncode == 0 and "SQLite had dropped; re-queued" in salvaged.stdout, salvaged
        missing = acked - stored_ids(tmp_path)
        assert len(missing) <= 1, salvaged.stdout   # the event whose page was damaged, if any
        if where == "end":
            assert missing == {events[-1]["webhookEventId"]}   # the last commit frame's page: its row
        assert frontdesk(again.store_url, "integrity", "clear").returncode == 0
        wait_until(lambda: healthz(again)[0] == 200, timeout=15, message="/healthz 200 once cleared")
    finally:
        again.stop()
    assert list(tmp_path.glob("frontdesk.db-wal.damaged-*")) == copies
    assert frontdesk_status(again.store_url).returncode == 0


def stored_ids(tmp_path) -> set[str]:
    with sqlite3.connect(tmp_path / "frontdesk.db") as conn:
        return {row[0] for row in conn.execute("SELECT id FROM events")}


def test_salvage_needs_a_sqlite_store_and_says_when_there_is_nothing(tmp_path):
    mongo = frontdesk("mongodb://127.0.0.1:1/fd?replicaSet=rs0", "integrity", "salvage")
    assert mongo.returncode == 2 and "only a SQLite store" in mongo.stderr
    nothing = frontdesk(f"sqlite:///{tmp_path / 'fd.db'}", "integrity", "salvage")
    assert nothing.returncode == 0 and "nothing to salvage" in nothing.stdout


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
