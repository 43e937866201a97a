"""A SQLite file removed or replaced underneath: a dispatcher stops with exit status 1, so that
its supervisor starts it on the file now at the configured path (the receiver's side is in
tests/test_receiver.py); the status page too; and nothing opens the new file with the old one's
-wal and -shm (docs/store.md, "A file removed or replaced underneath")."""
from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys

import pytest
import requests

from frontdesk.store import StoreError, open_store
from tests.helpers import free_port, sign, wait_until
from tests.test_receiver import Receiver, make_body, make_event


def test_a_dispatcher_whose_store_file_was_replaced_exits_1_for_a_restart(harness):
    dispatcher = harness.start(handlers=1)
    harness.wait_status(dispatcher, lambda doc: doc["state"] == "running", timeout=20)
    path = harness.url[len("sqlite:///"):]
    open_store(f"sqlite:///{path}.restored").close()
    os.replace(f"{path}.restored", path)
    assert dispatcher.wait(timeout=20) == 1
    log = harness.log_text(0)
    assert "event=store_file_gone" in log and "replaced by another file" in log
    assert "Traceback" not in log


@pytest.mark.parametrize("how", ["replaced", "removed"])
def test_frontdesk_run_carries_on_with_the_file_now_at_the_path(harness, how):
    """The whole tree: after the file is replaced (a restore) or removed, webhooks get 503 until the
    receiver has been restarted on the file now at the path, then 200, and the restarted
    dispatcher delivers them; the status page is started again on that file too."""
    port, admin = free_port(), free_port()
    process = harness.start(handlers=1, command="run", args=["--listen", f"127.0.0.1:{port}",
                                                              "--admin-listen", f"127.0.0.1:{admin}"],
                            env={"LINE_CHANNEL_SECRET": "test-secret"})
    url = f"http://127.0.0.1:{port}/callback"

    def post(event_id: str) -> int:
        body = json.dumps({"destination": "Ubot", "events": [{
            "type": "message", "timestamp": 1, "webhookEventId": event_id, "replyToken": "r",
            "source": {"type": "user", "userId": "U" + event_id},
            "message": {"type": "text", "id": "1", "text": "hi"}}]}).encode()
        try:
            return requests.post(url, data=body, timeout=5,
                                 headers={"x-line-signature": sign(body, "test-secret")}).status_code
        except requests.ConnectionError:
            return 0   # being restarted
    wait_until(lambda: post("before") == 200, timeout=30, message="the receiver takes webhooks")
    wait_until(lambda: status_page_health(admin) == 200, timeout=30, message="the status page is up")
    harness.store.close()   # the test's own handle on the old file goes too, like every process's
    path = harness.url[len("sqlite:///"):]
    if how == "replaced":
        open_store(f"sqlite:///{path}.restored").close()
        os.replace(f"{path}.restored", path)
    else:
        os.remove(path)
    answers = []
    wait_until(lambda: answers.append(post(f"after{len(answers)}")) or answers[-1] == 200, timeout=30,
               interval=0.2, message="webhooks are taken again, into the new file")
    assert 503 in answers and set(answers) <= {0, 200, 503}, answers
    accepted = f"after{len(answers) - 1}"
    wait_until(lambda: any(r[0] == "end" and r[1] == accepted for r in harness.records()), timeout=30,
               message="the restarted dispatcher delivered it")
    wait_until(lambda: re.search(r"frontdesk\.statuspage\[\d+\] event=store_file_gone .*action=exit_for_restart",
                                 harness.log_text(0)), timeout=30, message="the status page saw the file go")
    wait_until(lambda: status_page_health(admin) == 200, timeout=30, message="the status page, on the new file")
    log = harness.log_text(0)
    assert process.poll() is None and "Traceback" not in log and "disk I/O error" not in log


def status_page_health(address_port: int) -> int:
    try:
        return requests.get(f"http://127.0.0.1:{address_port}/healthz", timeout=5).status_code
    except requests.ConnectionError:
        return 0


HOLDER = """import sys
from frontdesk.store import open_store
store = open_store(sys.argv[1])
print("open", flush=True)
sys.stdin.read()   # until the test closes it
store.close()
"""


def test_the_file_now_at_the_path_opens_once_the_old_files_processes_have_stopped(tmp_path):
    """Its -wal and -shm are still the old file's while a process has that one open: opening it
    then is refused with a clear error (SQLite read the new file through the old wal-index:
    "disk I/O error", or recovered the old WAL into it), and works once that process has gone."""
    url = f"sqlite:///{tmp_path / 'fd.db'}"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline() == "open\n"
        writer = open_store(url)
        writer.append("Ubot", [make_event() for _ in range(300)], 0)   # the file grows past its checkpoint
        writer.close()
        os.remove(tmp_path / "fd.db")
        with pytest.raises(StoreError, match="still in use by processes of the database file that was removed"):
            open_store(url)
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=30) == 0
    store = open_store(url)
    try:
        assert store.stats()["pending"] == 0   # a new, empty file
    finally:
        store.close()


def test_a_wal_left_by_a_removed_file_is_moved_aside_not_replayed_into_the_new_one(tmp_path, caplog):
    running = Receiver(tmp_path)
    try:
        running.wait_ready()
        assert all(running.post(make_body(make_event())).status_code == 200 for _ in range(5))
    finally:
        running.proc.send_signal(signal.SIGKILL)   # its -wal and -shm stay, with the 5 events
        running.proc.wait()
    os.remove(tmp_path / "frontdesk.db")
    with caplog.at_level(logging.WARNING, logger="frontdesk.store.sqlite"):
        store = open_store(running.store_url)
    try:
        assert store.stats()["pending"] == 0 and store.integrity() is None
    finally:
        store.close()
    kept = list(tmp_path.glob("frontdesk.db-wal.orphaned-*"))
    assert len(kept) == 1 and kept[0].stat().st_size > 0
    assert "event=orphaned_wal_moved" in caplog.text and str(kept[0].name) in caplog.text
