"""The SQLite store's queue (store/sqlite_queue.py) on a temporary file, with a clock the test moves:
each state change, the nack/backoff and dead-letter rule, the run-leasing rule, and when the
change feed's followers are woken."""
from __future__ import annotations

import pytest

from frontdesk.store.sqlite_queue import SQLiteQueue
from tests.unit.clock import Clock
from tests.unit.store_parts import EPOCH, Wakeups, append, event, open_connections


@pytest.fixture
def db(tmp_path):
    connections = open_connections(str(tmp_path / "q.db"))
    yield connections
    connections.close()


@pytest.fixture
def clock():
    return Clock(EPOCH)


@pytest.fixture
def wakeups():
    return Wakeups()


@pytest.fixture
def queue(db, clock, wakeups):
    return SQLiteQueue(db, "q", wakeups, clock)


def ids(docs) -> list[str]:
    return [doc["o"]["_id"] for doc in docs]


def states(db) -> dict[str, tuple]:
    """id -> (state, head, attempt, owner, due) as stored."""
    return {row[0]: row[1:] for row in db.read("SELECT id, state, head, attempt, owner, due FROM events")}


def test_a_claim_leases_each_keys_head_for_lease_s_and_counts_the_delivery(db, queue, clock):
    append(db, event(1, "A"), event(2, "A"), event(3, "B"))
    docs = queue.claim("d1", 10, 30.0)
    assert ids(docs) == ["ev001", "ev003"] and [d["o"]["attempt"] for d in docs] == [1, 1]
    assert states(db)["ev001"] == (1, 1, 1, "d1", clock.now + 30.0)
    assert states(db)["ev002"] == (0, 0, 0, None, 0.0)


def test_a_claim_with_no_room_or_nothing_due_reads_and_writes_nothing(db, queue):
    assert queue.claim("d1", 0, 30.0) == [] and queue.claim("d1", 10, 30.0) == []
    append(db, event(1))
    assert queue.claim("d1", 0, 30.0) == []
    assert states(db)["ev001"][0] == 0


def test_an_expired_lease_is_claimable_again_and_its_delivery_counted(db, queue, clock):
    append(db, event(1))
    queue.claim("d1", 10, 5.0)
    assert queue.claim("d2", 10, 5.0) == []
    clock.advance(5.0)
    (doc,) = queue.claim("d2", 10, 5.0)
    assert doc["o"]["attempt"] == 2 and states(db)["ev001"][3] == "d2"


def test_an_ack_finishes_the_head_promotes_the_next_event_and_wakes_followers(db, queue, wakeups, clock):
    append(db, event(1, "A"), event(2, "A"))
    queue.claim("d1", 10, 30.0)
    queue.ack("d1", ["ev001"])
    assert states(db)["ev001"][:2] == (2, 0) and states(db)["ev002"][1] == 1
    assert db.read("SELECT finished_at FROM events WHERE id = 'ev001'") == [(clock.now,)]
    assert wakeups.count == 1


def test_an_ack_from_an_owner_that_lost_the_lease_changes_nothing_and_wakes_nobody(db, queue, wakeups):
    append(db, event(1))
    queue.claim("d1", 10, 30.0)
    queue.ack("intruder", ["ev001"])
    queue.ack("d1", [])
    assert states(db)["ev001"][0] == 1 and wakeups.count == 0


def test_ack_and_claim_takes_the_acked_keys_next_event_and_wakes_no_one_for_it(db, queue, wakeups):
    append(db, event(1, "A"), event(2, "A"))
    queue.claim("d1", 10, 30.0)
    assert ids(queue.ack_and_claim("d1", ["ev001"], 10, 30.0)) == ["ev002"]
    assert wakeups.count == 0   # this claim, not full, took what the ack freed


def test_ack_and_claim_that_fills_its_limit_wakes_others_for_what_it_left(db, queue, wakeups):
    append(db, event(1, "A"), event(2, "A"), event(3, "B"))
    queue.claim("d1", 1, 30.0)
    assert ids(queue.ack_and_claim("d1", ["ev001"], 1, 30.0)) == ["ev002"]
    assert wakeups.count == 1


def test_a_retried_nack_makes_the_event_pending_after_the_doubling_backoff(db, queue, clock):
    append(db, event(1))
    for attempt, delay in ((1, 2.0), (2, 4.0), (3, 8.0)):
        queue.claim("d1", 10, 30.0)
        assert queue.nack("d1", "ev001", f"boom {attempt}", True, 10, 2.0, 300.0) == "pending"
        assert queue.next_wakeup() == clock.now + delay
        assert queue.claim("d1", 10, 30.0) == []
        clock.advance(delay)
    assert states(db)["ev001"][:2] == (0, 1)
    assert db.read("SELECT error FROM events") == [("boom 3",)]


def test_a_nacks_backoff_is_capped(db, queue, clock):
    append(db, event(1))
    db.transaction(lambda conn: conn.execute("UPDATE events SET attempt = 40"))
    queue.claim("d1", 10, 30.0)
    queue.nack("d1", "ev001", "boom", True, 100, 1.0, 60.0)
    assert queue.next_wakeup() == clock.now + 60.0


def test_a_nack_on_the_last_attempt_dead_letters_keeps_the_error_and_frees_the_key(db, queue, wakeups):
    append(db, event(1, "A"), event(2, "A"))
    queue.claim("d1", 10, 30.0)
    assert queue.nack("d1", "ev001", "fatal", True, 1, 1.0, 60.0) == "dead"
    assert states(db)["ev001"][:2] == (3, 0) and states(db)["ev002"][1] == 1
    assert db.read("SELECT error FROM events WHERE id = 'ev001'") == [("fatal",)]
    assert wakeups.count == 1


def test_a_nack_with_retry_false_dead_letters_at_once(db, queue):
    append(db, event(1))
    queue.claim("d1", 10, 30.0)
    assert queue.nack("d1", "ev001", "no", False, 5, 1.0, 60.0) == "dead"


def test_a_nack_of_an_event_not_leased_to_the_owner_is_lost(db, queue):
    append(db, event(1))
    queue.claim("d1", 10, 30.0)
    assert queue.nack("d2", "ev001", "late", True, 5, 1.0, 60.0) == "lost"
    assert states(db)["ev001"][0] == 1


def test_a_claim_buries_an_event_whose_attempts_ran_out_unanswered(db, queue, clock, wakeups):
    append(db, event(1, "A"), event(2, "A"))
    for _ in range(2):
        queue.claim("d1", 10, 1.0, max_attempts=2)
        clock.advance(1.0)   # the holder died: its lease runs out
    assert queue.claim("d2", 10, 1.0, max_attempts=2) == []   # buried, not handed out
    assert wakeups.count == 1                                   # its key's next event is claimable
    assert ids(queue.claim("d2", 10, 1.0, max_attempts=2)) == ["ev002"]
    assert states(db)["ev001"][:3] == (3, 0, 2)
    (error,) = db.read("SELECT error FROM events WHERE id = 'ev001'")[0]
    assert error.startswith("max_attempts=2 deliveries made, none answered")


def test_release_gives_a_head_back_uncounted_and_claimable_at_once(db, queue, wakeups):
    append(db, event(1))
    queue.claim("d1", 10, 30.0)
    queue.release("d1", ["ev001"])
    assert states(db)["ev001"][:4] == (0, 1, 0, None) and wakeups.count == 1
    assert queue.claim("d2", 10, 30.0)[0]["o"]["attempt"] == 1


def test_release_of_nothing_leased_wakes_nobody(db, queue, wakeups):
    append(db, event(1))
    queue.release("d1", ["ev001"])
    queue.release("d1", [])
    assert wakeups.count == 0


def test_a_run_leases_the_pending_due_followers_behind_a_head_without_charging_them(db, queue):
    append(db, event(1, "A"), event(2, "A"), event(3, "A"), event(4, "B"))
    docs = queue.claim("d1", 10, 30.0, run=3)
    assert ids(docs) == ["ev001", "ev002", "ev003", "ev004"]
    assert [states(db)[i][2] for i in ("ev001", "ev002", "ev003")] == [1, 0, 0]
    assert [d["o"]["attempt"] for d in docs] == [1, 1, 1, 1]   # as each will be when delivered


def test_a_followers_attempt_is_charged_when_the_ack_before_it_makes_it_head(db, queue):
    append(db, event(1, "A"), event(2, "A"))
    queue.claim("d1", 10, 30.0, run=2)
    queue.ack("d1", ["ev001"])
    assert states(db)["ev002"][1:3] == (1, 1)


def test_a_run_stops_at_a_follower_waiting_for_its_backoff(db, queue, clock):
    append(db, event(1, "A"), event(2, "A"), event(3, "A"))
    db.transaction(lambda conn: conn.execute("UPDATE events SET due = ? WHERE id = 'ev002'", (clock.now + 9,)))
    assert ids(queue.claim("d1", 10, 30.0, run=3)) == ["ev001"]


def test_a_run_fills_only_the_room_the_heads_leave(db, queue):
    append(db, event(1, "A"), event(2, "A"), event(3, "A"), event(4, "B"))
    assert ids(queue.claim("d1", 3, 30.0, run=5)) == ["ev001", "ev002", "ev004"]


def test_expire_leases_makes_a_dead_owners_events_due_now_and_wakes_followers(db, queue, clock, wakeups):
    append(db, event(1, "A"), event(2, "B"))
    queue.claim("gone", 1, 600.0)
    queue.claim("alive", 1, 600.0)
    assert queue.expire_leases("gone") == 1 and wakeups.count == 1
    assert ids(queue.claim("heir", 10, 30.0)) == ["ev001"]
    assert queue.expire_leases("nobody") == 0 and wakeups.count == 1


def test_extend_leases_moves_only_the_owners_leases(db, queue, clock):
    append(db, event(1, "A"), event(2, "B"))
    queue.claim("d1", 1, 5.0)
    queue.claim("d2", 1, 5.0)
    queue.extend_leases("d1", ["ev001", "ev002"], 60.0)
    assert states(db)["ev001"][4] == clock.now + 60.0 and states(db)["ev002"][4] == clock.now + 5.0


def test_next_wakeup_is_the_earliest_future_due_of_a_head(db, queue, clock):
    assert queue.next_wakeup() is None
    append(db, event(1, "A"), event(2, "B"))
    queue.claim("d1", 1, 50.0)
    queue.claim("d1", 1, 20.0)
    assert queue.next_wakeup() == clock.now + 20.0
