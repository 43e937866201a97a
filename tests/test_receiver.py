"""The receiver as LINE sees it: a real `frontdesk receiver` process, real HTTP, a real SQLite file."""
from __future__ import annotations

import http.client
import json
import os
import re
import resource
import signal
import sqlite3
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from frontdesk.store import open_store
from tests.helpers import free_port, sign, wait_until

SECRET = "test-channel-secret-0123456789"
MAX_BODY = 4096


def make_event(event_id: str | None = None, user: str | None = None, text: str = "hello") -> dict:
    return {
        "type": "message", "mode": "active", "timestamp": 1_700_000_000_000,
        "webhookEventId": event_id or uuid.uuid4().hex,
        "deliveryContext": {"isRedelivery": False},
        "source": {"type": "user", "userId": user or "U" + uuid.uuid4().hex},
        "replyToken": uuid.uuid4().hex,
        "message": {"type": "text", "id": "1", "text": text},
    }


def make_body(*events: dict) -> bytes:
    return json.dumps({"destination": "Ubot", "events": list(events)}).encode()


class Receiver:
    """One `frontdesk receiver` subprocess; its log goes to a file the tests can read. `extra_env`
    adds to its environment (a None value removes the name)."""

    def __init__(self, tmp_path, extra_env: dict | None = None, preexec_fn=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.store_url = f"sqlite:///{tmp_path}/frontdesk.db"
        self.log_path = tmp_path / "receiver.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FRONTDESK_", "LINE_"))}
        env.update({"LINE_CHANNEL_SECRET": SECRET, "FRONTDESK_STORE": self.store_url,
                    "FRONTDESK_LISTEN": f"127.0.0.1:{self.port}",
                    "FRONTDESK_MAX_BODY_BYTES": str(MAX_BODY)})
        for name, value in (extra_env or {}).items():   # None: not in its environment at all
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "frontdesk", "receiver"],
                                         env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                         preexec_fn=preexec_fn)

    def wait_ready(self) -> None:
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"receiver exited with {self.proc.returncode}: {self.log()}")
            try:
                return requests.get(self.url + "/healthz", timeout=1).status_code == 200
            except requests.ConnectionError:
                return False
        wait_until(ready, timeout=15, message="receiver answers /healthz")

    def post(self, body: bytes, signature: str | None = "sign", path: str = "/callback", **kw):
        headers = kw.pop("headers", {})
        if signature == "sign":
            signature = sign(body, SECRET)
        if signature is not None:
            headers["x-line-signature"] = signature
        kw.setdefault("timeout", 5)
        return requests.post(self.url + path, data=body, headers=headers, **kw)

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="module")
def receiver(tmp_path_factory):
    running = Receiver(tmp_path_factory.mktemp("receiver"))
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def store(receiver):
    """The receiver's store, opened from the test process the way a dispatcher opens it."""
    opened = open_store(receiver.store_url)
    try:
        yield opened
    finally:
        opened.close()


def stored_total(store) -> int:
    stats = store.stats()
    return stats["pending"] + stats["in_flight"] + stats["done"] + stats["dead"]


def stored_ids(running) -> set[str]:
    """Every event id a (stopped) receiver left in its store."""
    store = open_store(running.store_url)
    try:
        return set(claim_all(store))
    finally:
        store.close()


def claim_all(store) -> dict[str, dict]:
    """Every deliverable event by id (the tests give each event its own user, so its own key)."""
    return {doc["o"]["_id"]: doc for doc in store.claim("test", 10_000, 60.0)}


def test_valid_signed_body_is_stored_then_answered_200(receiver, store):
    events = [make_event(), make_event()]
    before = stored_total(store)
    response = receiver.post(make_body(*events))
    assert response.status_code == 200
    assert stored_total(store) == before + 2
    claimed = claim_all(store)
    for event in events:
        document = claimed[event["webhookEventId"]]["o"]
        assert document["event"] == event
        assert document["destination"] == "Ubot"
        assert document["key"] == event["source"]["userId"]


def _body_over_limit() -> bytes:
    event = make_event(text="x" * MAX_BODY)
    return make_body(event)


# name -> (how to send it, expected status, a word the error must contain): one of each kind through
# real HTTP; every case of each kind, and their order, in-process in tests/unit/test_receiver.py
REJECTIONS = {
    "wrong signature": (lambda r, b: r.post(b, signature=sign(b, "another-secret")), 401, "signature"),
    "missing signature": (lambda r, b: r.post(b, signature=None), 401, "signature"),
    "malformed JSON": (lambda r, b: r.post(b[:-1]), 400, "JSON"),
    "event without webhookEventId": (
        lambda r, b: r.post(make_body({k: v for k, v in make_event().items() if k != "webhookEventId"})),
        400, "webhookEventId"),
    "lone surrogate": (lambda r, b: r.post(make_body(make_event(text="\ud800 alone"))), 400, "lone surrogate"),
    "body over the limit": (lambda r, b: r.post(_body_over_limit()), 413, "limit"),
    "wrong method": (lambda r, b: requests.get(r.url + "/callback", timeout=5), 405, ""),
    "wrong path": (lambda r, b: r.post(b, path="/webhook"), 404, ""),
}


@pytest.mark.parametrize("case", sorted(REJECTIONS))
def test_rejected_request_gets_its_status_and_stores_nothing(receiver, store, case):
    send, status, word = REJECTIONS[case]
    before = stored_total(store)
    response = send(receiver, make_body(make_event()))
    assert response.status_code == status, response.text
    if word:
        assert word in response.json()["description"]
    assert stored_total(store) == before


def test_chunked_body_over_the_limit_gets_413(receiver, store):
    body = _body_over_limit()
    before = stored_total(store)
    # A generator body makes requests send Transfer-Encoding: chunked (no Content-Length).
    response = requests.post(receiver.url + "/callback", data=iter([body[:1000], body[1000:]]),
                             headers={"x-line-signature": sign(body, SECRET)}, timeout=5)
    assert response.status_code == 413
    assert stored_total(store) == before


def test_huge_content_length_is_refused_before_the_body_is_sent(receiver):
    """The server answers from the header alone: the client never sends its 40 MB."""
    conn = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=5)
    try:
        conn.putrequest("POST", "/callback")
        conn.putheader("Content-Length", str(10_000 * MAX_BODY))
        conn.putheader("x-line-signature", "irrelevant")
        conn.endheaders()
        assert conn.getresponse().status == 413
    finally:
        conn.close()


def test_redelivery_is_acknowledged_and_stored_once(receiver, store):
    event = make_event()
    before, duplicates = stored_total(store), duplicates_counted(receiver)
    assert receiver.post(make_body(event)).status_code == 200
    redelivered = dict(event, deliveryContext={"isRedelivery": True})
    assert receiver.post(make_body(redelivered)).status_code == 200
    assert receiver.post(make_body(event)).status_code == 200
    assert stored_total(store) == before + 1
    assert claim_all(store)[event["webhookEventId"]]["o"]["event"] == event
    assert duplicates_counted(receiver) == duplicates + 2   # the redelivery and the repeat


def test_an_event_repeated_inside_one_body_is_stored_once(receiver, store):
    event, other = make_event(), make_event()
    before, duplicates = stored_total(store), duplicates_counted(receiver)
    assert receiver.post(make_body(event, other, dict(event, deliveryContext={"isRedelivery": True}))).status_code == 200
    assert stored_total(store) == before + 2
    assert claim_all(store)[event["webhookEventId"]]["o"]["event"] == event   # the first one is kept
    assert duplicates_counted(receiver) == duplicates + 1   # the repeat counted as a duplicate


def test_100_concurrent_clients_each_event_stored_exactly_once(receiver, store):
    events = [make_event() for _ in range(100)]
    before = stored_total(store)

    def deliver(event):
        with requests.Session() as session:
            body = make_body(event)
            return session.post(receiver.url + "/callback", data=body, timeout=10,
                                headers={"x-line-signature": sign(body, SECRET)}).status_code

    with ThreadPoolExecutor(max_workers=100) as pool:
        statuses = list(pool.map(deliver, events))
    assert statuses == [200] * 100
    assert stored_total(store) == before + 100
    claimed = claim_all(store)
    assert {e["webhookEventId"] for e in events} <= set(claimed)


def test_healthz_answers_200_when_the_store_is_writable(receiver):
    response = requests.get(receiver.url + "/healthz", timeout=5)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def duplicates_counted(receiver) -> float:
    """Events the receiver acknowledged as repeats so far (its /metrics)."""
    return _metric(requests.get(receiver.url + "/metrics", timeout=5).text, "frontdesk_receiver_events_duplicate_total")


def _metric(text: str, name: str) -> float:
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " ")]
    assert len(values) == 1, f"{name} missing from /metrics"
    return values[0]


def test_metrics_count_requests_events_duplicates_and_latency(receiver):
    before = requests.get(receiver.url + "/metrics", timeout=5).text
    event = make_event()
    assert receiver.post(make_body(event)).status_code == 200
    assert receiver.post(make_body(event)).status_code == 200
    assert receiver.post(b"{}", signature="bad").status_code == 401
    response = requests.get(receiver.url + "/metrics", timeout=5)
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    after = response.text
    for name, delta in [('frontdesk_receiver_requests_total{route="/callback",status="200"}', 2),
                        ('frontdesk_receiver_requests_total{route="/callback",status="401"}', 1),
                        ("frontdesk_receiver_events_stored_total", 1),
                        ("frontdesk_receiver_events_duplicate_total", 1),
                        ("frontdesk_receiver_ack_seconds_count", 3),
                        ("frontdesk_receiver_store_append_seconds_count", 2)]:
        old = _metric(before, name) if name + " " in before else 0.0
        assert _metric(after, name) - old == delta, name
    assert 'frontdesk_receiver_ack_seconds_bucket{le="+Inf"}' in after
    assert _metric(after, "frontdesk_receiver_server_queue_depth") >= 0


def test_metrics_queue_gauges_follow_the_store_within_a_second(receiver, store):
    assert receiver.post(make_body(make_event())).status_code == 200
    expected = store.stats()  # nobody acks here, so these only grow

    def caught_up():
        text = requests.get(receiver.url + "/metrics", timeout=5).text
        return (_metric(text, "frontdesk_store_pending_events") + _metric(text, "frontdesk_store_in_flight_events")
                >= expected["pending"] + expected["in_flight"] >= 1)
    wait_until(caught_up, timeout=5, message="store gauges refreshed")


def test_metrics_show_each_dispatchers_pool_and_its_degraded_reason(receiver, store):
    reason = "handlers: 6 crashes within restart_period_s=60; last: handler-1: exited with status 1"
    store.put_status("dispatcher:hostA:11", {"degraded": reason, "handlers": [
        {"pid": 5, "state": "ready"}, {"pid": None, "state": "waiting_restart"}]})
    store.put_status("dispatcher:hostB:12", {"degraded": None, "handlers": [{"pid": 7, "state": "ready"}] * 2})

    def shown():
        text = requests.get(receiver.url + "/metrics", timeout=5).text
        return "hostB" in text and text
    text = wait_until(shown, timeout=5, message="pool gauges refreshed")
    assert _metric(text, f'frontdesk_handler_pool_degraded{{process="dispatcher:hostA:11",reason="{reason}"}}') == 1
    assert _metric(text, 'frontdesk_handler_pool_degraded{process="dispatcher:hostB:12",reason=""}') == 0
    assert _metric(text, 'frontdesk_handlers_ready{process="dispatcher:hostA:11"}') == 1
    assert _metric(text, 'frontdesk_handlers_ready{process="dispatcher:hostB:12"}') == 2


def test_metrics_show_each_rate_limiters_share_of_the_shared_budget(receiver, store):
    for host, share in (("hostA", 0.6), ("hostB", 0.35)):
        store.put_status(f"dispatcher:{host}:1", {"handlers": [], "ratelimiter": {"stats": {
            "budget": {"reply": {"share": share, "sent": 1, "expired": 0, "leases": 1}}}}})
    def shown():
        text = requests.get(receiver.url + "/metrics", timeout=5).text
        return 'frontdesk_rate_budget_share{process="dispatcher:hostB:1"' in text and text
    text = wait_until(shown, timeout=5, message="budget gauge refreshed")
    assert _metric(text, 'frontdesk_rate_budget_share{process="dispatcher:hostA:1",endpoint="reply"}') == 0.6
    assert _metric(text, 'frontdesk_rate_budget_share{process="dispatcher:hostB:1",endpoint="reply"}') == 0.35


def test_log_has_a_line_per_refused_webhook_none_per_stored_one_and_no_body_or_secret(receiver):
    stored = make_event(text="a very private message")
    assert receiver.post(make_body(stored)).status_code == 200
    refused = make_event(text="another private message")
    assert receiver.post(make_body(refused), signature="bad").status_code == 401
    wait_until(lambda: "status=401 events=0 new=0 dup=0 ms=" in receiver.log(), timeout=5)
    log = receiver.log()
    assert "status=200" not in log   # at DEBUG: a line per stored webhook cost a tenth of the receiver's CPU
    assert "private message" not in log
    assert SECRET not in log


def _limit_file_size():
    """Runs in the receiver child: a 200 KiB file size limit, so the disk is 'full' soon."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (200 * 1024, 200 * 1024))


def test_store_that_cannot_write_gets_503_and_stores_nothing(tmp_path):
    """A real write failure: the kernel refuses to grow the database files (as a full disk does)."""
    running = Receiver(tmp_path, preexec_fn=_limit_file_size)
    try:
        running.wait_ready()
        answered = []
        for _ in range(400):  # each stored event adds a few KiB to the WAL; 200 KiB runs out soon
            event = make_event(text="y" * 1000)
            status = running.post(make_body(event)).status_code
            answered.append((event, status))
            if status != 200:
                break
        refused_event, refused_status = answered[-1]
        assert refused_status == 503
        event = make_event()
        response = running.post(make_body(event))
        answered.append((event, response.status_code))
        assert str(tmp_path) not in response.text  # the client is not told server paths
        assert "status=503" in running.log() and "store unavailable" in running.log()
        health = requests.get(running.url + "/healthz", timeout=5)
        assert health.status_code == 503 and health.json()["status"] == "unavailable"
        assert running.stop() == 0
    finally:
        running.stop()
    stored = stored_ids(running)
    assert stored == {event["webhookEventId"] for event, status in answered if status == 200}
    assert refused_event["webhookEventId"] not in stored


def test_healthz_recovers_by_itself_within_seconds_once_the_disk_has_room_again(tmp_path):
    """After a disk-full spell /healthz turns 200 again without any webhook succeeding first (a
    load balancer following /healthz sends none, so a receiver that waited for one stayed 503)."""
    running = Receiver(tmp_path, preexec_fn=_limit_file_size)
    try:
        running.wait_ready()
        wait_until(lambda: running.post(make_body(make_event(text="y" * 1000))).status_code == 503,
                   timeout=60, interval=0, message="the 'disk' is full")
        assert requests.get(running.url + "/healthz", timeout=5).status_code == 503
        with sqlite3.connect(str(tmp_path / "frontdesk.db")) as db:   # the disk has room again: the
            assert db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0   # WAL, back to 0 bytes
        wait_until(lambda: requests.get(running.url + "/healthz", timeout=5).status_code == 200,
                   timeout=5, interval=0.2, message="/healthz says 200 again")
        assert "store_writable_again" in running.log()
        assert running.post(make_body(make_event())).status_code == 200
    finally:
        running.stop()


def test_overload_gets_fast_503s_and_only_200s_are_stored(tmp_path):
    """A 10 ms budget and a store that takes 50 ms per group commit (its linger): of 100
    simultaneous webhooks the first group is stored in time, the later ones wait too long."""
    running = Receiver(tmp_path, extra_env={"FRONTDESK_APPEND_LINGER_MS": "50",
                                            "FRONTDESK_ACK_BUDGET_S": "0.01"})
    try:
        running.wait_ready()
        events = [make_event() for _ in range(100)]
        with ThreadPoolExecutor(max_workers=100) as pool:
            statuses = list(pool.map(lambda event: running.post(make_body(event)).status_code, events))
        assert set(statuses) <= {200, 503} and 503 in statuses and 200 in statuses
        assert "status=503" in running.log()
    finally:
        running.stop()
    assert stored_ids(running) == {e["webhookEventId"] for e, status in zip(events, statuses) if status == 200}


def test_store_locked_by_another_process_still_gets_an_answer_within_2s(tmp_path):
    running = Receiver(tmp_path)
    try:
        running.wait_ready()
        holder = sqlite3.connect(str(tmp_path / "frontdesk.db"), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # e.g. another process's long write transaction
        try:
            event = make_event()
            response = running.post(make_body(event), timeout=2.0)
            assert response.status_code == 503
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    finally:
        running.stop()
    store = open_store(running.store_url)
    try:
        assert stored_total(store) == 0  # answered 503, so nothing may have been written later
    finally:
        store.close()


@pytest.mark.parametrize("how", ["removed", "replaced"])
def test_a_store_file_removed_or_replaced_underneath_gets_503_and_the_receiver_exits(tmp_path, how):
    """Webhooks after the file at the store's path changed are never answered
    200 (they would go to a file nobody reads); the receiver says so loudly and exits 1, for its
    supervisor to start it again on the file now at that path."""
    running = Receiver(tmp_path)
    try:
        running.wait_ready()
        assert running.post(make_body(make_event())).status_code == 200
        path = tmp_path / "frontdesk.db"
        if how == "removed":
            for suffix in ("", "-wal", "-shm"):
                os.remove(f"{path}{suffix}")
        else:
            open_store(f"sqlite:///{tmp_path / 'restored.db'}").close()
            os.replace(tmp_path / "restored.db", path)
        statuses = []
        for _ in range(20):
            try:
                statuses.append(running.post(make_body(make_event())).status_code)
            except requests.ConnectionError:
                statuses.append("closed")   # it has exited
        assert 200 not in statuses and 503 in statuses, statuses
        assert running.proc.wait(timeout=10) == 1
    finally:
        running.stop()
    log = running.log()
    assert f"the database file was {how}" in log and "event=store_file_gone" in log and "CRITICAL" in log
    assert "Traceback" not in log


def test_store_path_that_is_a_directory_stops_the_receiver_with_a_clear_error(tmp_path):
    (tmp_path / "frontdesk.db").mkdir()
    running = Receiver(tmp_path)
    try:
        assert running.proc.wait(timeout=15) == 1
    finally:
        running.stop()
    assert "is a directory" in running.log()
    assert "Traceback" not in running.log()


def test_busy_port_stops_the_receiver_with_a_clear_error(tmp_path, receiver):
    running = Receiver(tmp_path, extra_env={"FRONTDESK_LISTEN": f"127.0.0.1:{receiver.port}"})
    try:
        assert running.proc.wait(timeout=15) == 1
    finally:
        running.stop()
    assert "event=listen_failed" in running.log() and "Traceback" not in running.log()


def test_missing_channel_secret_is_a_configuration_error(tmp_path):
    running = Receiver(tmp_path, extra_env={"LINE_CHANNEL_SECRET": ""})
    try:
        assert running.proc.wait(timeout=15) == 2
    finally:
        running.stop()
    assert "LINE_CHANNEL_SECRET" in running.log()


def test_sigterm_stops_the_receiver_cleanly(tmp_path):
    running = Receiver(tmp_path)
    try:
        running.wait_ready()
        assert running.post(make_body(make_event())).status_code == 200
        assert running.stop() == 0
    finally:
        running.stop()
    assert "event=stopped" in running.log()
    assert "Traceback" not in running.log()


# --- the HTTP server itself: framing, slow clients, limits -----------------------------------------

def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send bytes on a fresh connection; everything the server answers until it closes or goes quiet."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
                if answer.count(b"HTTP/1.1 ") >= data.count(b" HTTP/1.1\r\n") and answer.endswith(b"}"):
                    break
        except TimeoutError:
            pass
        return answer


def signed_request(body: bytes, extra: str = "") -> bytes:
    return (f"POST /callback HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"x-line-signature: {sign(body, SECRET)}\r\nContent-Length: {len(body)}\r\n{extra}\r\n").encode() + body


def test_pipelined_webhooks_are_answered_in_order_on_one_connection(receiver, store):
    events = [make_event(), make_event()]
    before = stored_total(store)
    answer = raw_exchange(receiver.port, signed_request(make_body(events[0])) +
                          b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n" + signed_request(make_body(events[1])))
    statuses = [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)]
    assert statuses == [200, 404, 200]
    assert stored_total(store) == before + 2


@pytest.mark.parametrize("request_bytes,status", [
    (b"POST /callback HTTP/1.1\r\nHost: x\r\n\r\n", 411),
    (b"POST /callback HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431),
    (b"NONSENSE\r\n\r\n", 400),
    (b"POST /callback HTTP/1.1\r\nContent-Length: twelve\r\n\r\n", 400),
])
def test_unreadable_requests_get_their_status_and_the_connection_closes(receiver, request_bytes, status):
    answer = raw_exchange(receiver.port, request_bytes)
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:200]
    assert b"Connection: close" in answer


@pytest.fixture
def strict_receiver(tmp_path):
    """A receiver with a 0.5 s request deadline and room for only 4 connections."""
    running = Receiver(tmp_path, extra_env={"FRONTDESK_RECEIVER_REQUEST_TIMEOUT_S": "0.5",
                                            "FRONTDESK_RECEIVER_CONNECTION_LIMIT": "4"})
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


def test_a_slow_client_gets_408_and_a_webhook_beside_it_is_stored(strict_receiver):
    import socket

    slow = socket.create_connection(("127.0.0.1", strict_receiver.port), timeout=5)
    try:
        slow.sendall(b"POST /callback HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"dest")  # then stops
        event = make_event()
        assert strict_receiver.post(make_body(event)).status_code == 200
        answer = slow.recv(65536)          # the deadline passes while it drips nothing more
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert slow.recv(65536) == b""     # and the connection is closed
    finally:
        slow.close()
    assert strict_receiver.stop() == 0
    assert event["webhookEventId"] in stored_ids(strict_receiver)


def test_idle_connections_at_the_limit_make_room_for_a_webhook(strict_receiver):
    import socket

    held = [socket.create_connection(("127.0.0.1", strict_receiver.port), timeout=5) for _ in range(4)]
    try:
        answer = raw_exchange(strict_receiver.port, signed_request(make_body(make_event())))
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
        assert held[0].recv(65536) == b""   # the longest idle one was closed to make room
    finally:
        for sock in held:
            sock.close()


def test_a_webhook_gets_its_200_within_2s_while_twice_the_connection_limit_of_slow_clients_connect(tmp_path):
    """Slow clients holding every connection, scaled down: a limit of 100 and 200 slow clients (each
    sent the start of a request, then nothing more) instead of the default 1,000 and 2,000. Each newcomer takes the place of
    the slowest connection, so LINE's webhooks are still served in time."""
    import socket

    running = Receiver(tmp_path, extra_env={"FRONTDESK_RECEIVER_CONNECTION_LIMIT": "100",
                                            "FRONTDESK_RECEIVER_REQUEST_TIMEOUT_S": "60"})
    slow: list[socket.socket] = []
    try:
        running.wait_ready()
        for _ in range(200):
            sock = socket.create_connection(("127.0.0.1", running.port), timeout=5)
            sock.sendall(b"POST /callback HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            slow.append(sock)
        events = [make_event() for _ in range(5)]
        for event in events:
            response = running.post(make_body(event), timeout=2.0)   # LINE gives up after 2 s
            assert response.status_code == 200
            assert response.elapsed.total_seconds() < 2.0
        evicted = 0
        for sock in slow:
            sock.setblocking(False)
            try:
                answer = sock.recv(65536)
                evicted += answer == b"" or answer.startswith(b"HTTP/1.1 408 ")
            except BlockingIOError:
                pass   # still open: one of the newest
            except ConnectionResetError:
                evicted += 1   # closed before the server had read what it sent
        assert evicted >= 100, evicted   # the oldest slow connections made room
    finally:
        for sock in slow:
            sock.close()
        running.stop()
    assert {e["webhookEventId"] for e in events} <= stored_ids(running)


def test_a_connection_beyond_the_limit_gets_503_only_while_every_connection_is_being_answered():
    """In-process (the server's own loop, real sockets): four requests waiting for their answers
    are never closed to make room; the fifth connection is refused."""
    import asyncio

    from frontdesk.protocol.http_server import Limits, Response, Server

    async def scenario() -> bytes:
        loop = asyncio.get_running_loop()
        never = loop.create_future()   # the answers do not come while the test looks
        server = Server(lambda request: never, Limits(4096, 30.0, 30.0, 4))
        listener = await loop.create_server(server.protocol, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        clients = []
        try:
            for _ in range(4):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
                clients.append(writer)
            while server.busy < 4:
                await asyncio.sleep(0.01)   # yield to the server's reads (the same loop)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            clients.append(writer)
            answer = await asyncio.wait_for(reader.read(65536), 5)
            assert server.busy == 4
            return answer
        finally:
            never.set_result(Response(200))
            for writer in clients:
                writer.close()
            listener.close()

    answer = asyncio.run(scenario())
    assert answer.startswith(b"HTTP/1.1 503 ") and b"too many open connections" in answer
