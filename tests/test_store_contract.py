"""The store contract, one suite for every implementation.

SQLite always runs (real files in tmp_path); MongoDB runs when FRONTDESK_TEST_MONGODB_URI names
a replica set (e.g. mongodb://127.0.0.1:27017/?replicaSet=rs0), otherwise its cases are skipped.
Other processes are real child processes writing to the same store.
"""
from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from frontdesk.store import JournalEntry, StoreUnavailable, open_store
from tests.helpers import wait_until

REPO = Path(__file__).resolve().parents[1]
MONGO_URI = os.environ.get("FRONTDESK_TEST_MONGODB_URI")


def mongo_url(base: str, db: str) -> str:
    """The test URI with its database path replaced by `db`."""
    scheme, rest = base.split("://", 1)
    hosts, _, tail = rest.partition("/")
    query = tail.partition("?")[2]
    return f"{scheme}://{hosts}/{db}" + (f"?{query}" if query else "")


@pytest.fixture(params=["sqlite", "mongo"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/store.db"
        return
    if not MONGO_URI:
        pytest.skip("FRONTDESK_TEST_MONGODB_URI is not set")
    db = f"fdtest_{uuid.uuid4().hex[:12]}"
    yield mongo_url(MONGO_URI, db)
    import pymongo

    pymongo.MongoClient(MONGO_URI).drop_database(db)


@pytest.fixture
def store(store_url):
    opened = open_store(store_url)
    try:
        yield opened
    finally:
        opened.close()


def event(n: int, user: str = "U1", kind: str = "message", timestamp: int | None = None,
          group: str | None = None) -> dict:
    source = {"type": "group", "groupId": group, "userId": user} if group else {"type": "user", "userId": user}
    body = {"type": kind, "mode": "active", "timestamp": 1_700_000_000_000 + n if timestamp is None else timestamp,
            "webhookEventId": f"ev{n:05d}", "source": source,
            "deliveryContext": {"isRedelivery": False}}
    if kind == "message":
        body["message"] = {"type": "text", "id": str(n), "text": f"hello {n}"}
        body["replyToken"] = f"rt{n}"
    return body


def now_ms() -> int:
    return int(time.time() * 1000)


def ids(documents) -> list[str]:
    return [doc["o"]["_id"] for doc in documents]


def drain_all(store, owner="d1", limit=100) -> list[str]:
    """Claim and ack until nothing is deliverable; the ids in delivery order."""
    seen = []
    while batch := store.claim(owner, limit, 30):
        seen += ids(batch)
        store.ack(owner, ids(batch))
    return seen


CHILD_PRELUDE = """
import sys, time, json
from frontdesk.store import open_store
"""


def child(code: str, *args: str) -> subprocess.Popen:
    """A real Python process running `code` (with open_store imported); argv[1:] = args."""
    return subprocess.Popen([sys.executable, "-c", CHILD_PRELUDE + textwrap.dedent(code), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def children():
    started: list[subprocess.Popen] = []
    try:
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)
            process.stdout.close()
            process.stderr.close()


# --- append --------------------------------------------------------------------------------------

def test_append_returns_new_and_duplicates(store):
    first = store.append("Udest", [event(1), event(2)], now_ms())
    assert first.new == ["ev00001", "ev00002"] and first.duplicates == []
    again = store.append("Udest", [event(2), event(3)], now_ms())
    assert again.new == ["ev00003"] and again.duplicates == ["ev00002"]
    assert store.stats()["pending"] == 3


def test_append_empty_body_stores_nothing(store):
    result = store.append("Udest", [], now_ms())
    assert result.new == [] and result.duplicates == []
    assert store.stats()["pending"] == 0


def test_concurrent_duplicate_appends_store_once(store):
    results = []

    def send():
        results.append(store.append("Udest", [event(n) for n in range(20)], now_ms()))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(sum((r.new for r in results), [])) == [f"ev{n:05d}" for n in range(20)]
    assert sum(len(r.duplicates) for r in results) == 7 * 20
    assert store.stats()["pending"] == 20


def test_document_shape(store):
    received = now_ms()
    store.append("Udest", [event(7, user="Ux", group="Cg")], received)
    (doc,) = store.claim("d1", 10, 30)
    assert isinstance(doc["ts"], int) and doc["op"] == "i" and doc["ns"].endswith(".events")
    assert doc["o"] == {"_id": "ev00007", "destination": "Udest", "event": event(7, user="Ux", group="Cg"),
                        "key": "Cg", "received_at": received, "attempt": 1}


def test_deadline_passed_is_unavailable_and_stores_nothing(store):
    with pytest.raises(StoreUnavailable, match="deadline"):
        store.append("Udest", [event(1)], now_ms(), deadline=time.monotonic() - 0.001)
    assert store.claim("d1", 10, 30) == []
    assert store.stats() == {"pending": 0, "in_flight": 0, "done": 0, "dead": 0, "oldest_pending_s": 0.0}
    # a deadline in the future is fine
    assert store.append("Udest", [event(1)], now_ms(), deadline=time.monotonic() + 5).new == ["ev00001"]


def test_follow_events_update_users_only_when_newer(store):
    store.append("Udest", [event(1, user="Uf", kind="follow", timestamp=1_000_000)], now_ms())
    user = store.user_get("Uf")
    assert user["followed"] is True and user["followed_at"] == 1000.0
    store.append("Udest", [event(2, user="Uf", kind="unfollow", timestamp=3_000_000)], now_ms())
    # an older follow delivered late changes nothing
    store.append("Udest", [event(3, user="Uf", kind="follow", timestamp=2_000_000)], now_ms())
    user = store.user_get("Uf")
    assert user["followed"] is False and user["unfollowed_at"] == 3000.0 and user["followed_at"] == 1000.0
    assert store.user_get("Unobody") is None


# --- claim, ack, per-key order ---------------------------------------------------------------------

def test_claim_is_oldest_first_and_one_per_key(store):
    store.append("Udest", [event(1, "A"), event(2, "A"), event(3, "B"), event(4, "C"), event(5, "B")], now_ms())
    first = store.claim("d1", 10, 30)
    assert ids(first) == ["ev00001", "ev00003", "ev00004"]
    assert [doc["o"]["attempt"] for doc in first] == [1, 1, 1]
    assert store.claim("d2", 10, 30) == []          # A and B have events in flight
    store.ack("d1", ["ev00001", "ev00003"])
    assert ids(store.claim("d2", 10, 30)) == ["ev00002", "ev00005"]
    stats = store.stats()
    assert (stats["pending"], stats["in_flight"], stats["done"]) == (0, 3, 2)


def test_claim_respects_limit_and_ts_increases(store):
    store.append("Udest", [event(n, f"U{n}") for n in range(10)], now_ms())
    first, second = store.claim("d1", 4, 30), store.claim("d1", 100, 30)
    assert len(first) == 4 and len(second) == 6
    ts = [doc["ts"] for doc in first + second]
    assert ts == sorted(ts) and len(set(ts)) == 10


def test_ack_from_a_lost_lease_is_ignored(store):
    store.append("Udest", [event(1)], now_ms())
    store.claim("d1", 10, 30)
    store.ack("intruder", ["ev00001"])
    assert store.stats()["in_flight"] == 1
    store.ack("d1", ["ev00001", "unknown-id"])
    assert store.stats()["done"] == 1
    assert store.nack("d1", "ev00001", "late", True, 5, 1, 10) == "lost"


def test_per_key_order_holds_through_retries(store):
    store.append("Udest", [event(n, "A" if n % 2 else "B") for n in range(1, 11)], now_ms())
    delivered = []
    while len(delivered) < 10:
        batch = store.claim("d1", 10, 30)
        assert batch, "nothing deliverable while events remain"
        for doc in batch:
            if doc["o"]["attempt"] == 1 and int(doc["o"]["_id"][2:]) % 3 == 0:
                assert store.nack("d1", doc["o"]["_id"], "flaky", True, 5, 0.0, 0.0) == "pending"
            else:
                delivered.append((doc["o"]["key"], doc["o"]["_id"]))
                store.ack("d1", [doc["o"]["_id"]])
    for key in "AB":
        of_key = [event_id for k, event_id in delivered if k == key]
        assert of_key == sorted(of_key) and len(of_key) == 5


# --- nack, dead letters ------------------------------------------------------------------------------

def test_nack_backs_off_doubling(store):
    store.append("Udest", [event(1)], now_ms())
    store.claim("d1", 1, 30)
    before = time.time()
    assert store.nack("d1", "ev00001", "boom", True, 5, 10.0, 300.0) == "pending"
    assert 9.0 <= store.next_wakeup() - before <= 11.0
    assert store.claim("d1", 1, 30) == []            # not before the backoff
    assert store.stats()["pending"] == 1


def test_backoff_is_capped(store):
    store.append("Udest", [event(1)], now_ms())
    for attempt in range(1, 4):
        (doc,) = wait_until(lambda: store.claim("d1", 1, 30), 5)
        assert doc["o"]["attempt"] == attempt
        assert store.nack("d1", "ev00001", "boom", True, 10, 0.01, 0.05) == "pending"
    assert store.next_wakeup() - time.time() <= 0.06


def test_dead_letter_after_max_attempts_then_retry_and_drop(store):
    store.append("Udest", [event(1, "A"), event(2, "A"), event(3, "B")], now_ms())
    for attempt in (1, 2):
        docs = wait_until(lambda: [d for d in store.claim("d1", 10, 30) if d["o"]["key"] == "A"], 5)
        assert docs[0]["o"]["attempt"] == attempt
        state = store.nack("d1", "ev00001", f"error {attempt}", True, 2, 0.0, 0.0)
    assert state == "dead"
    (dead,) = store.dead_letters()
    assert dead["id"] == "ev00001" and dead["attempts"] == 2 and dead["error"] == "error 2"
    assert dead["key"] == "A" and dead["event"] == event(1, "A") and dead["dead_at"] <= time.time()
    assert store.stats()["dead"] == 1
    # the dead letter does not block its key
    assert "ev00002" in ids(store.claim("d1", 10, 30))
    store.ack("d1", ["ev00002", "ev00003"])
    # re-queue: delivered again with a fresh attempt count, at the end of the queue
    assert store.retry_dead() == 1
    (doc,) = store.claim("d1", 10, 30)
    assert doc["o"]["_id"] == "ev00001" and doc["o"]["attempt"] == 1 and store.dead_letters() == []
    assert store.nack("d1", "ev00001", "fatal", False, 5, 0.0, 0.0) == "dead"   # retry False: at once
    assert store.retry_dead(["other-id"]) == 0
    assert store.drop_dead(["ev00001"]) == 1
    assert store.dead_letters() == [] and store.stats()["dead"] == 0


def test_ack_and_claim_hands_out_the_acked_keys_next_event_in_the_same_call(store):
    store.append("Udest", [event(1, "U1"), event(2, "U1"), event(3, "U2")], now_ms())
    first = store.claim("d1", 10, 30)
    assert sorted(d["o"]["_id"] for d in first) == ["ev00001", "ev00003"]
    again = store.ack_and_claim("d1", ["ev00001"], 10, 30)
    assert [d["o"]["_id"] for d in again] == ["ev00002"]
    assert store.ack_and_claim("d1", ["ev00002", "ev00003"], 10, 30) == []
    assert store.stats()["done"] == 3


def test_release_does_not_count_an_attempt(store):
    store.append("Udest", [event(1)], now_ms())
    store.claim("d1", 1, 30)
    store.release("d1", ["ev00001"])
    (doc,) = store.claim("d2", 1, 30)
    assert doc["o"]["attempt"] == 1


# --- leases and recovery ---------------------------------------------------------------------------------

def test_expired_lease_is_claimable_again_and_counted(store):
    store.append("Udest", [event(1)], now_ms())
    store.claim("d1", 1, 0.2)
    assert store.claim("d2", 1, 30) == []
    assert store.next_wakeup() <= time.time() + 0.2
    (doc,) = wait_until(lambda: store.claim("d2", 1, 30), 5)
    assert doc["o"]["attempt"] == 2
    store.ack("d1", ["ev00001"])                    # the old owner lost its lease
    assert store.stats()["in_flight"] == 1


def test_expire_leases_of_a_dead_owner_makes_only_its_events_deliverable_at_once(store):
    store.append("Udest", [event(1, "U1"), event(2, "U2"), event(3, "U3")], now_ms())
    assert len(store.claim("dead", 2, 60)) == 2
    assert len(store.claim("alive", 1, 60)) == 1
    assert store.expire_leases("dead") == 2
    again = store.claim("heir", 10, 60)
    assert sorted(d["o"]["_id"] for d in again) == ["ev00001", "ev00002"]
    assert {d["o"]["attempt"] for d in again} == {2}
    assert store.expire_leases("dead") == 0          # nothing left: the heir holds them now
    store.ack("alive", ["ev00003"])
    assert store.stats()["done"] == 1


def test_claim_dead_letters_an_event_whose_attempts_ran_out_unanswered(store):
    store.append("Udest", [event(1, "A"), event(2, "A"), event(3, "B")], now_ms())
    assert {d["o"]["_id"] for d in store.claim("d1", 10, 0)} == {"ev00001", "ev00003"}
    store.ack("d1", ["ev00003"])
    for owner in ("d2", "d3"):   # every lease runs out at once (lease_s=0): the holder "died"
        assert [d["o"]["_id"] for d in store.claim(owner, 10, 0, max_attempts=3)] == ["ev00001"]
    assert store.claim("d4", 10, 60, max_attempts=3) == []   # spent: buried, not handed out
    (dead,) = store.dead_letters()
    assert dead["id"] == "ev00001" and dead["attempts"] == 3
    assert dead["error"].startswith("max_attempts=3 deliveries made, none answered; last: its lease ran out")
    assert [d["o"]["_id"] for d in store.claim("d4", 10, 60, max_attempts=3)] == ["ev00002"]
    assert store.stats()["dead"] == 1 and store.stats()["in_flight"] == 1


def test_extend_leases_keeps_events(store):
    store.append("Udest", [event(1)], now_ms())
    store.claim("d1", 1, 1.0)
    store.extend_leases("d1", ["ev00001"], 60)
    assert store.next_wakeup() is None or store.next_wakeup() > time.time() + 30
    assert store.claim("d2", 1, 30) == []


def test_restart_finds_everything_not_done(store_url):
    first = open_store(store_url)
    first.append("Udest", [event(n, f"U{n}") for n in range(6)], now_ms())
    first.claim("d1", 2, 0.3)                 # leased, then the process "dies"
    first.ack("d1", [])
    claimed = first.claim("d1", 1, 30)
    first.ack("d1", ids(claimed))
    first.close()
    second = open_store(store_url)
    try:
        found = second.claim("d2", 100, 30)   # the 3 pending at once (and the 2 leased, on a slow box)
        if len(found) < 5:
            found += wait_until(lambda: second.claim("d2", 100, 30), 5)   # once their lease runs out
        assert sorted(d["o"]["attempt"] for d in found) == [1, 1, 1, 2, 2]
        assert second.stats()["done"] == 1
    finally:
        second.close()


def test_kill_9_of_a_lease_holder_loses_nothing(store, children):
    store.append("Udest", [event(n, f"U{n}") for n in range(5)], now_ms())
    holder = child("""
        store = open_store(sys.argv[1])
        print(json.dumps([d["o"]["_id"] for d in store.claim("victim", 100, 0.5)]), flush=True)
        time.sleep(60)
        """, store.url)
    children.append(holder)
    held = json.loads(holder.stdout.readline() or "null")
    assert held and len(held) == 5, holder.stderr.read() if holder.poll() is not None else held
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(5)
    recovered = []
    wait_until(lambda: recovered.extend(ids(store.claim("survivor", 100, 30))) or len(recovered) == 5, 5)
    assert sorted(recovered) == sorted(held)


def test_concurrent_appenders_from_several_processes(store, children):
    writer = """
        store = open_store(sys.argv[1])
        base = int(sys.argv[2])
        for batch in range(10):
            events = [{"type": "message", "timestamp": 1, "webhookEventId": f"p{(base + batch * 10 + i) % 250}",
                       "source": {"type": "user", "userId": f"U{i % 5}"}} for i in range(10)]
            store.append("Udest", events, 1)
        store.close()
        print("ok", flush=True)
        """
    for process_no in range(4):
        children.append(child(writer, store.url, str(process_no * 50)))
    for process in children:
        assert process.wait(60) == 0, process.stderr.read()
    # ids overlap between processes: 4 x 100 appended, 250 distinct values possible
    expected = {f"p{(p * 50 + b * 10 + i) % 250}" for p in range(4) for b in range(10) for i in range(10)}
    delivered = drain_all(store)
    assert sorted(delivered) == sorted(expected)
    assert store.stats()["pending"] == 0 and store.stats()["done"] == len(expected)


# --- change feed ------------------------------------------------------------------------------------

def test_change_feed_wakes_on_append_by_another_process(store, children):
    feed = store.change_feed()
    selector = selectors.DefaultSelector()
    selector.register(feed.fileno(), selectors.EVENT_READ)
    try:
        assert selector.select(timeout=0.2) == []           # no wake-up of its own at start
        appender = child("""
            store = open_store(sys.argv[1])
            store.append("Udest", [{"type": "message", "timestamp": 1, "webhookEventId": "x1",
                                    "source": {"type": "user", "userId": "U1"}}], 1)
            store.close()
            """, store.url)
        children.append(appender)
        assert selector.select(timeout=10), "no wake-up after another process appended"
        assert ids(store.claim("d1", 10, 30)) == ["x1"]
        feed.drain()
        assert appender.wait(10) == 0, appender.stderr.read()
        assert selector.select(timeout=0.05) == []          # drained
    finally:
        selector.close()
        feed.close()


def test_change_feed_wakes_on_release_and_on_ack_of_a_key_head(store):
    store.append("Udest", [event(1, "A"), event(2, "A")], now_ms())
    store.claim("d1", 10, 30)
    feed = store.change_feed()
    selector = selectors.DefaultSelector()
    selector.register(feed.fileno(), selectors.EVENT_READ)
    try:
        store.release("d1", ["ev00001"])
        assert selector.select(timeout=10)
        feed.drain()
        store.claim("d1", 10, 30)
        store.ack("d1", ["ev00001"])                        # ev00002 becomes deliverable
        assert selector.select(timeout=10)
    finally:
        selector.close()
        feed.close()


def test_change_feed_outlives_a_dead_follower(store, children):
    follower = child("""
        store = open_store(sys.argv[1])
        feed = store.change_feed()
        print("ready", flush=True)
        time.sleep(60)
        """, store.url)
    children.append(follower)
    assert follower.stdout.readline().strip() == "ready"
    os.kill(follower.pid, signal.SIGKILL)
    follower.wait(5)
    feed = store.change_feed()
    selector = selectors.DefaultSelector()
    selector.register(feed.fileno(), selectors.EVENT_READ)
    try:
        store.append("Udest", [event(1)], now_ms())
        assert selector.select(timeout=10)
    finally:
        selector.close()
        feed.close()


# --- retention ------------------------------------------------------------------------------------------

def test_purge_done_removes_only_old_done_events(store):
    store.append("Udest", [event(1, "A"), event(2, "B"), event(3, "C")], now_ms())
    store.claim("d1", 10, 30)
    store.ack("d1", ["ev00001"])
    store.nack("d1", "ev00002", "bad", False, 5, 0, 0)
    store.journal_put(JournalEntry("ev00001", 1, "fp", "done", {"path": "/x"}, {"ok": True}))
    assert store.purge_done(3600) == 0
    assert store.purge_done(0) == 1
    stats = store.stats()
    assert (stats["done"], stats["dead"], stats["in_flight"]) == (0, 1, 1)
    assert store.journal_get("ev00001", 1) is None
    assert store.append("Udest", [event(1, "A")], now_ms()).new == ["ev00001"]  # dedupe window ends


# --- journal, users, status, control -----------------------------------------------------------------------

def test_call_journal(store):
    assert store.journal_get("ev1", 1) is None
    entry = JournalEntry("ev1", 1, "fp1", "started", {"endpoint": "push", "retry_key": "k"}, None, 100.0)
    store.journal_put(entry)
    store.journal_put(JournalEntry("ev1", 2, "fp2", "done", {"endpoint": "reply"}, {"sentMessages": []}, 101.0))
    assert store.journal_get("ev1", 1) == entry
    assert [(e.event_id, e.call_no) for e in store.journal_unfinished()] == [("ev1", 1)]
    store.journal_put(JournalEntry("ev1", 1, "fp1", "failed", {"endpoint": "push"}, {"status": 400}, 102.0))
    assert store.journal_get("ev1", 1).state == "failed" and store.journal_unfinished() == []


# --- the month's sends ---------------------------------------------------------------------------------

def test_sends_add_up_per_month_and_kind_and_survive_a_reopen(store_url):
    store = open_store(store_url)
    try:
        assert store.sends_add("2026-12", {}) == {}
        assert store.sends_add("2026-12", {"push": 3, "reply": 1}) == {"push": 3, "reply": 1}
        assert store.sends_add("2026-12", {"push": 2, "multicast": 0}) == {"push": 5, "reply": 1}
        assert store.sends_add("2027-01", {"push": 1}) == {"push": 1}    # a month of its own
    finally:
        store.close()
    reopened = open_store(store_url)
    try:
        assert reopened.sends_add("2026-12", {}) == {"push": 5, "reply": 1}
    finally:
        reopened.close()


# --- shared rate budget ---------------------------------------------------------------------------------

def test_budget_lease_starts_now_when_idle_and_reservations_follow_each_other(store):
    now = time.time()
    assert store.budget_lease("reply", 0.1, now, 1.0) == (True, now)
    assert store.budget_lease("reply", 0.1, now + 0.01, 1.0) == (True, pytest.approx(now + 0.1))
    assert store.budget_lease("reply", 0.05, now + 0.02, 1.0) == (True, pytest.approx(now + 0.2))
    assert store.budget_lease("push", 0.1, now + 0.03, 1.0) == (True, now + 0.03)   # its own budget
    # once the reservations have run out, an idle endpoint's next lease starts at its caller's now
    assert store.budget_lease("reply", 0.1, now + 5, 1.0) == (True, now + 5)


def test_budget_lease_refuses_beyond_max_ahead_and_reserves_nothing(store):
    now = time.time()
    for n in range(10):
        assert store.budget_lease("multicast", 0.1, now, 0.55)[0] is (n <= 5)
    granted, reserved_until = store.budget_lease("multicast", 0.1, now, 0.55)
    assert not granted and reserved_until == pytest.approx(now + 0.6)
    assert store.budget_lease("multicast", 0.1, now + 0.1, 0.55) == (True, pytest.approx(now + 0.6))


def test_budget_leases_from_several_processes_never_overlap(store, children):
    leaser = """
        store = open_store(sys.argv[1])
        slices = []
        for n in range(50):
            granted, start = store.budget_lease("reply", 0.01, time.time(), 60.0)
            assert granted
            slices.append(start)
        store.close()
        print(json.dumps(slices), flush=True)
        """
    for _ in range(3):
        children.append(child(leaser, store.url))
    starts = []
    for process in children:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        starts += json.loads(out)
    starts.sort()
    gaps = [later - earlier for earlier, later in zip(starts, starts[1:])]
    assert len(starts) == 150 and min(gaps) >= 0.01 - 1e-6, "two reservations overlap"


def test_call_journal_put_many_writes_every_entry_and_replaces_older_ones(store):
    store.journal_put(JournalEntry("ev1", 1, "fp1", "started", {"endpoint": "push"}, None, 100.0))
    done = JournalEntry("ev1", 1, "fp1", "done", {"endpoint": "push"}, {"result": {}}, 101.0)
    started = [JournalEntry(f"ev{n}", 2, f"fp{n}", "started", {"endpoint": "reply"}, None, 102.0) for n in (1, 2)]
    store.journal_put_many([done, *started])
    assert store.journal_get("ev1", 1) == done
    assert sorted((e.event_id, e.call_no) for e in store.journal_unfinished()) == [("ev1", 2), ("ev2", 2)]
    store.journal_put_many([])


def test_user_profile_and_data(store):
    store.user_put_profile("U1", {"displayName": "Ann", "language": "ja"}, 1234.5)
    store.user_set_data("U1", {"step": 2})
    user = store.user_get("U1")
    assert user == {"user_id": "U1", "profile": {"displayName": "Ann", "language": "ja"},
                    "profile_fetched_at": 1234.5, "followed": None, "followed_at": None,
                    "unfollowed_at": None, "data": {"step": 2}}
    store.user_set_data("U1", {})
    assert store.user_get("U1")["data"] == {} and store.user_get("U1")["profile"]["displayName"] == "Ann"


def test_stats_oldest_pending(store):
    store.append("Udest", [event(1)], now_ms() - 5000)
    assert 4.5 <= store.stats()["oldest_pending_s"] <= 60


def test_busiest_keys_count_events_not_done_per_key(store):
    assert store.busiest_keys() == []
    store.append("Udest", [event(n, "UA") for n in range(1, 5)] + [event(n, "UB") for n in range(5, 7)]
                 + [event(7, "UC")], now_ms())
    assert store.busiest_keys(2) == [("UA", 4), ("UB", 2)]
    store.claim("d1", 10, 60)                    # leased events are not done: still counted
    assert store.busiest_keys(3) == [("UA", 4), ("UB", 2), ("UC", 1)]
    store.ack("d1", ["ev00001", "ev00005", "ev00007"])
    assert store.busiest_keys(5) == [("UA", 3), ("UB", 1)]


def test_waiting_chats_are_one_to_one_chats_whose_oldest_unacked_event_is_old_enough(store):
    alice, bob, carol = ("U" + c * 32 for c in "abc")
    old, recent = now_ms() - 5000, now_ms()
    store.append("Udest", [event(1, alice), event(2, alice), event(3, bob, group="C" + "9" * 32)], old)
    store.append("Udest", [event(4, bob), event(5, carol)], recent)
    cutoff = now_ms() - 2000
    assert store.waiting_chats(cutoff, 100) == [(alice, old)]       # not the group, not the recent ones
    assert store.waiting_chats(now_ms(), 100) == [(alice, old), (bob, recent), (carol, recent)]
    assert store.waiting_chats(now_ms(), 1) == [(alice, old)] and store.waiting_chats(now_ms(), 0) == []
    claimed = store.claim("d1", 100, 30)
    assert store.waiting_chats(cutoff, 100) == [(alice, old)]       # leased but not acked: still waiting
    store.ack("d1", [doc["o"]["_id"] for doc in claimed if doc["o"]["_id"] in ("ev00001", "ev00003")])
    assert store.waiting_chats(cutoff, 100) == [(alice, old)]       # alice's second event waits as long
    store.ack("d1", [doc["o"]["_id"] for doc in store.claim("d1", 100, 30)] + ["ev00004", "ev00005"])
    assert store.waiting_chats(now_ms(), 100) == []


def test_statuses_and_controls(store):
    store.put_status("dispatcher-host-1", {"handlers": [{"pid": 1, "state": "ready"}]})
    store.put_status("dispatcher-host-1", {"handlers": [{"pid": 2, "state": "busy"}]})
    statuses = store.get_statuses()
    assert list(statuses) == ["dispatcher-host-1"]
    assert statuses["dispatcher-host-1"]["handlers"] == [{"pid": 2, "state": "busy"}]
    assert statuses["dispatcher-host-1"]["updated_at"] <= time.time()
    store.put_status("run-host-2", {"state": "running"})
    store.delete_status("run-host-2")
    store.delete_status("never-published")
    assert list(store.get_statuses()) == ["dispatcher-host-1"]
    assert store.prune_statuses(60) == 0 and list(store.get_statuses()) == ["dispatcher-host-1"]
    assert store.prune_statuses(-1) == 1 and store.get_statuses() == {}   # "not updated since a second ahead"
    assert store.get_control("handlers") is None
    store.set_control("handlers", 4)
    assert store.get_control("handlers") == 4


def test_health_and_closed_store(store_url):
    opened = open_store(store_url)
    opened.health()
    opened.close()
    with pytest.raises(StoreUnavailable):
        opened.append("Udest", [event(1)], now_ms())
    with pytest.raises(StoreUnavailable):
        opened.health()


# --- parity: the contract's edges, the same on every store ----------------------------------------------

def test_stats_count_every_kind_of_state_change_exactly(store):
    """Counted, not estimated: every path that moves an event, and retention, shows in stats()."""
    store.append("Udest", [event(n, key) for n, key in enumerate("AABBCDE")], now_ms())
    claimed = ids(store.claim("d1", 10, 30))                  # A, B, C, D, E heads
    store.ack("d1", claimed[:2])                              # A's and B's heads done
    store.nack("d1", claimed[2], "bad", False, 5, 1, 10)      # C dead
    store.release("d1", [claimed[3]])                         # D back to pending
    store.expire_leases("d1")                                 # E's lease ended: still leased until claimed
    store.retry_dead([claimed[2]])                            # C pending again
    expected = {"pending": 4, "in_flight": 1, "done": 2, "dead": 0}   # A2, B2, C, D; E
    assert {k: store.stats()[k] for k in expected} == expected
    again = ids(store.claim("d2", 10, 30, run=2))             # every key's head, E's lease taken over
    assert len(again) == 5
    store.ack("d2", again)
    assert store.purge_done(0) == 7
    assert {k: store.stats()[k] for k in expected} == {"pending": 0, "in_flight": 0, "done": 0, "dead": 0}


def test_stats_oldest_pending_counts_a_leased_event(store):
    """"The age of the oldest event not done yet": one in flight is not done."""
    store.append("Udest", [event(1)], now_ms() - 5000)
    store.claim("d1", 10, 60)
    assert 4.5 <= store.stats()["oldest_pending_s"] <= 60


def test_dead_letters_limit_is_sqls_limit(store):
    store.append("Udest", [event(n, f"U{n}") for n in range(3)], now_ms())
    for doc in store.claim("d1", 10, 30):
        store.nack("d1", doc["o"]["_id"], "bad", False, 5, 0, 0)
    assert store.dead_letters(0) == []
    assert [d["id"] for d in store.dead_letters(2)] == ["ev00000", "ev00001"]
    assert [d["id"] for d in store.dead_letters(-1)] == ["ev00000", "ev00001", "ev00002"]


def test_busiest_keys_limit_is_sqls_limit(store):
    store.append("Udest", [event(1, "UA"), event(2, "UA"), event(3, "UB")], now_ms())
    assert store.busiest_keys(0) == []
    assert store.busiest_keys(-1) == [("UA", 2), ("UB", 1)]


def test_change_feed_wakes_on_expire_leases(store):
    store.append("Udest", [event(1)], now_ms())
    store.claim("gone", 10, 600)
    feed = store.change_feed()
    selector = selectors.DefaultSelector()
    selector.register(feed.fileno(), selectors.EVENT_READ)
    try:
        assert store.expire_leases("gone") == 1
        assert selector.select(timeout=10), "no wake-up when a dead owner's leases ended"
        assert ids(store.claim("heir", 10, 30)) == ["ev00001"]
    finally:
        selector.close()
        feed.close()


def test_one_append_the_store_cannot_encode_fails_alone(store):
    """A lone surrogate neither store can encode, among appends that may share a commit: only that
    request gets the error, the others are stored and the store stays healthy."""
    finished = []
    handles = [store.append_nowait("Udest", [event(n, f"U{n}")], now_ms(), None, finished.append)
               for n in range(10)]
    bad_event = event(99)
    bad_event["message"]["text"] = "\ud800 alone"
    bad = store.append_nowait("Udest", [bad_event], now_ms(), None, finished.append)
    handles += [store.append_nowait("Udest", [event(n, f"U{n}")], now_ms(), None, finished.append)
                for n in range(10, 20)]
    wait_until(lambda: len(finished) == 21, timeout=30, message="every append answered")
    assert bad.error is not None and "cannot be stored" in str(bad.error)
    assert [h.error for h in handles] == [None] * 20
    assert sorted(drain_all(store)) == [f"ev{n:05d}" for n in range(20)]
    store.health()


def test_user_data_is_stored_as_json_stores_it(store):
    store.user_set_data("U1", {1: "one", "list": [1, 2.5, None]})
    assert store.user_get("U1")["data"] == {"1": "one", "list": [1, 2.5, None]}
    with pytest.raises(TypeError):
        store.user_set_data("U1", {"raw": b"bytes"})
    assert store.user_get("U1")["data"] == {"1": "one", "list": [1, 2.5, None]}


def test_retry_and_drop_all_dead_letters_beyond_one_transactions_worth(store):
    """retry_dead(None) / drop_dead(None) commit in chunks (MongoDB: 500 per transaction, under
    its 60 s transaction lifetime); every dead letter is re-queued, then dropped, all the same."""
    count = 1100
    store.append("Udest", [event(n, f"U{n}") for n in range(count)], now_ms())
    while batch := store.claim("d1", 500, 60):
        for doc in batch:
            store.nack("d1", doc["o"]["_id"], "bad", False, 5, 0, 0)
    assert store.stats()["dead"] == count
    assert store.retry_dead() == count
    assert store.stats()["dead"] == 0 and store.stats()["pending"] == count
    while batch := store.claim("d1", 500, 60):
        for doc in batch:
            store.nack("d1", doc["o"]["_id"], "bad again", False, 5, 0, 0)
    assert store.drop_dead() == count
    assert store.dead_letters(-1) == [] and store.stats()["dead"] == 0


# --- runs (claim_run): a key's following events leased with its head ---------------------------------
def test_claim_run_leases_the_unbroken_run_behind_each_head_in_store_order(store):
    store.append("Udest", [event(1, "A"), event(2, "A"), event(3, "A"), event(4, "B"), event(5, "A")], now_ms())
    docs = store.claim("d1", 10, 60, run=3)
    assert ids(docs) == ["ev00001", "ev00002", "ev00003", "ev00004"]   # A's head and 2 followers, B's head
    assert [doc["o"]["attempt"] for doc in docs] == [1, 1, 1, 1]        # as each will be when delivered
    assert store.claim("d2", 10, 60, run=3) == []    # ev00005 is behind a leased run: nobody's yet
    store.ack("d1", ["ev00001", "ev00002", "ev00003"])
    assert ids(store.claim("d2", 10, 60, run=3)) == ["ev00005"]


def test_claim_run_fills_only_the_room_the_heads_leave(store):
    store.append("Udest", [event(n, "A") for n in range(1, 6)] + [event(9, "B")], now_ms())
    assert ids(store.claim("d1", 2, 60, run=16)) == ["ev00001", "ev00009"]   # heads fill the limit: no run
    store.release("d1", ["ev00001", "ev00009"])
    assert ids(store.claim("d1", 3, 60, run=16)) == ["ev00001", "ev00002", "ev00009"]


def test_a_follower_is_charged_an_attempt_only_once_its_turn_comes(store):
    store.append("Udest", [event(1, "A"), event(2, "A"), event(3, "A")], now_ms())
    assert ids(store.claim("d1", 10, 60, run=3)) == ["ev00001", "ev00002", "ev00003"]
    store.release("d1", ["ev00002", "ev00003"])   # given back undelivered (a nack of the head, a drain)
    store.ack("d1", ["ev00001"])
    doc, follower = store.claim("d2", 10, 60, run=2)
    assert (doc["o"]["_id"], doc["o"]["attempt"]) == ("ev00002", 1)   # never charged for the run
    assert follower["o"]["_id"] == "ev00003"
    store.ack("d2", ["ev00002"])     # ev00003's turn under d2's lease: its delivery counts now
    assert store.nack("d2", "ev00003", "boom", True, 1, 0.0, 0.0) == "dead"
    assert store.dead_letters()[0]["attempts"] == 1


def test_release_takes_back_a_heads_attempt_not_a_followers(store):
    store.append("Udest", [event(1, "A"), event(2, "A")], now_ms())
    store.claim("d1", 10, 60, run=2)
    store.release("d1", ["ev00001", "ev00002"])
    assert [(doc["o"]["_id"], doc["o"]["attempt"]) for doc in store.claim("d1", 10, 60)] == [("ev00001", 1)]
    store.ack("d1", ["ev00001"])
    assert [(doc["o"]["_id"], doc["o"]["attempt"]) for doc in store.claim("d1", 10, 60)] == [("ev00002", 1)]


def test_a_dead_owners_run_is_taken_over_in_order_one_by_one(store):
    """A dispatcher died holding a run: the next claimer takes its events in order, each as head
    (charged at that claim), never as a follower of its own run: one of them may have been in flight."""
    store.append("Udest", [event(n, "A") for n in range(1, 5)], now_ms())
    assert ids(store.claim("d1", 10, 60, run=3)) == ["ev00001", "ev00002", "ev00003"]
    assert store.expire_leases("d1") == 3
    taken = []
    while docs := store.claim("d2", 10, 60, run=3):
        taken += [(doc["o"]["_id"], doc["o"]["attempt"]) for doc in docs]
        store.ack("d2", ids(docs))
    assert taken == [("ev00001", 2), ("ev00002", 1), ("ev00003", 1), ("ev00004", 1)]


# --- MongoDB specifics: what the server does (run where FRONTDESK_TEST_MONGODB_URI names a replica set) ---

@pytest.fixture
def mongo_db(store_url):
    """The test's database, through pymongo directly (to act as an operator or another version)."""
    if not store_url.startswith("mongodb"):
        pytest.skip("MongoDB only")
    import pymongo

    client = pymongo.MongoClient(store_url)
    try:
        yield client.get_default_database()
    finally:
        client.close()


def test_mongo_feed_outlives_an_invalidate(mongo_db, store):
    """Dropping `events` invalidates the change stream: the feed starts a new one from now, wakes
    the dispatcher once, and later appends wake it again (it used to spin on the dead stream)."""
    feed = store.change_feed()
    selector = selectors.DefaultSelector()
    selector.register(feed.fileno(), selectors.EVENT_READ)
    try:
        mongo_db.drop_collection("events")
        assert selector.select(timeout=15), "no wake-up after the invalidate"
        feed.drain()
        store.append("Udest", [event(1)], now_ms())
        assert selector.select(timeout=15), "the feed did not follow the new stream"
    finally:
        selector.close()
        feed.close()


def test_mongo_ttl_index_of_an_earlier_version_is_dropped_and_purge_done_owns_retention(mongo_db, store_url):
    mongo_db.events.create_index([("done_at", 1)], name="done_ttl", expireAfterSeconds=3600)
    opened = open_store(store_url)
    try:
        assert "done_ttl" not in mongo_db.events.index_information()
        opened.append("Udest", [event(1, "A"), event(2, "B")], now_ms())
        opened.ack("d1", ids(opened.claim("d1", 10, 30)))
        opened.journal_put(JournalEntry("ev00001", 1, "fp", "done", {"path": "/x"}, {"ok": True}))
        assert opened.purge_done(0) == 2 and opened.stats()["done"] == 0
        assert mongo_db.journal.count_documents({}) == 0
    finally:
        opened.close()


def test_mongo_append_is_bounded_by_its_deadline_while_its_commit_cannot_go_through(mongo_db, store):
    """Another transaction holds the counter every append writes: the append's transaction meets
    a write conflict again and again; it gives up at its deadline (with_transaction alone would
    retry for 120 s)."""
    store.append("Udest", [event(1)], now_ms())   # the counter document exists
    with mongo_db.client.start_session() as session:
        session.start_transaction()
        mongo_db.counters.update_one({"_id": "events"}, {"$set": {"held_by": "a test"}}, session=session)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            store.append("Udest", [event(2)], now_ms(), deadline=time.monotonic() + 1.0)
        assert time.monotonic() - started < 20
        session.abort_transaction()
    assert store.append("Udest", [event(3)], now_ms()).new == ["ev00003"]


def test_mongo_leases_are_the_servers_time_whatever_a_hosts_clock_says(mongo_db, store_url):
    """A host whose clock is two minutes behind leases for 30 s: by the server's clock, which both
    hosts use, the lease has not run out, so the other host cannot take the event."""
    from frontdesk.store.mongo import MongoStore

    behind = MongoStore(store_url, clock=lambda: time.time() - 120).open()   # an offset of about +120 s
    other = open_store(store_url)
    try:
        behind.append("Udest", [event(1)], now_ms())
        assert ids(behind.claim("slow-host", 10, 30)) == ["ev00001"]
        assert other.claim("other-host", 10, 30) == []
        assert 20 <= other.next_wakeup() - time.time() <= 40
    finally:
        behind.close()
        other.close()
