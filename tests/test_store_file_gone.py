"""A dispatcher whose SQLite file is removed or replaced underneath (issue 14, defect 6) stops
with exit status 1, so that its supervisor starts it on the file now at the configured path
(the receiver's side is in tests/test_receiver.py)."""
from __future__ import annotations

import os

from frontdesk.store import open_store


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
