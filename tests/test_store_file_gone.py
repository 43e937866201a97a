"""A dispatcher whose SQLite file is removed or replaced underneath (issue 14, defect 6) stops
with exit status 1, so that its supervisor starts it on the file now at the configured path
(the receiver's side is in tests/test_receiver.py)."""
from __future__ import annotations

import json
import os

import requests

from frontdesk.store import open_store
from tests.helpers import free_port, sign, wait_until


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


def test_frontdesk_run_carries_on_with_the_file_now_at_the_path(harness):
    """The whole tree: after the file is replaced, webhooks get 503 until the receiver has been
    restarted on the new file, then 200, and the restarted dispatcher delivers them."""
    port = free_port()
    process = harness.start(handlers=1, command="run", args=["--listen", f"127.0.0.1:{port}"],
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
    path = harness.url[len("sqlite:///"):]
    open_store(f"sqlite:///{path}.restored").close()
    os.replace(f"{path}.restored", path)
    answers = []
    wait_until(lambda: answers.append(post(f"after{len(answers)}")) or answers[-1] == 200, timeout=30,
               interval=0.2, message="webhooks are taken again, into the new file")
    assert 503 in answers and set(answers) <= {0, 200, 503}, answers
    accepted = f"after{len(answers) - 1}"
    wait_until(lambda: any(r[0] == "end" and r[1] == accepted for r in harness.records()), timeout=30,
               message="the restarted dispatcher delivered it")
    assert process.poll() is None and "Traceback" not in harness.log_text(0)
