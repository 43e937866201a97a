"""The SQLite store's other concerns, each on its own on a temporary file with a clock the test
moves: dead letters and retention, the call journal, the rate budget, users, observation and
control, the integrity report, and the appends' dedupe and follow state."""
from __future__ import annotations

import sqlite3

import pytest

from frontdesk.store.base import JournalEntry
from frontdesk.store.sqlite_budget import SQLiteBudget
from frontdesk.store.sqlite_connections import WRITER_LOCK_SUFFIX, WriterLock
from frontdesk.store.sqlite_integrity import SQLiteIntegrity
from frontdesk.store.sqlite_journal import SQLiteJournal
from frontdesk.store.sqlite_observation import SQLiteObservation
from frontdesk.store.sqlite_queue import SQLiteQueue
from frontdesk.store.sqlite_retention import PURGE_CHUNK, SQLiteRetention
from frontdesk.store.sqlite_users import SQLiteUsers
from tests.unit.clock import Clock
from tests.unit.store_parts import EPOCH, Wakeups, append, event, open_connections


@pytest.fixture
def db(tmp_path):
    connections = open_connections(str(tmp_path / "c.db"))
    yield connections
    connections.close()


@pytest.fixture
def clock():
    return Clock(EPOCH)


def dead(db, queue, *event_ids: str) -> None:
    """Claim everything and nack these ids for good."""
    queue.claim("d1", 100, 60.0)
    for event_id in event_ids:
        assert queue.nack("d1", event_id, f"bad {event_id}", False, 5, 0.0, 0.0) == "dead"


# --- retention ------------------------------------------------------------------------------------

def test_dead_letters_are_listed_oldest_first_with_their_error_and_time(db, clock):
    queue = SQLiteQueue(db, "c", Wakeups(), clock)
    append(db, event(1, "A"), event(2, "B"))
    dead(db, queue, "ev002", "ev001")
    letters = SQLiteRetention(db, Wakeups(), clock).dead_letters()
    assert [(d["id"], d["attempts"], d["error"], d["dead_at"]) for d in letters] == [
        ("ev001", 1, "bad ev001", clock.now), ("ev002", 1, "bad ev002", clock.now)]
    assert letters[0]["event"] == event(1, "A") and letters[0]["key"] == "A"


def test_a_requeued_dead_letter_goes_to_the_end_of_the_queue_fresh_and_wakes_followers(db, clock):
    queue, wakeups = SQLiteQueue(db, "c", Wakeups(), clock), Wakeups()
    retention = SQLiteRetention(db, wakeups, clock)
    append(db, event(1, "A"), event(2, "B"))
    dead(db, queue, "ev001")
    assert retention.retry_dead() == 1 and wakeups.count == 1
    rows = db.read("SELECT id, state, head, attempt, error FROM events ORDER BY seq")
    assert rows == [("ev002", 1, 1, 1, None), ("ev001", 0, 1, 0, None)]


def test_a_requeued_dead_letter_behind_a_busy_key_does_not_head_it(db, clock):
    queue = SQLiteQueue(db, "c", Wakeups(), clock)
    append(db, event(1, "A"))
    dead(db, queue, "ev001")
    append(db, event(2, "A"))
    SQLiteRetention(db, Wakeups(), clock).retry_dead(["ev001"])
    assert db.read("SELECT id, head FROM events ORDER BY seq") == [("ev002", 1), ("ev001", 0)]


def test_retry_and_drop_of_no_ids_or_unknown_ids_do_nothing(db, clock):
    retention = SQLiteRetention(db, Wakeups(), clock)
    assert retention.retry_dead([]) == 0 and retention.drop_dead([]) == 0
    assert retention.retry_dead(["nope"]) == 0 and retention.drop_dead(["nope"]) == 0


def test_dropping_a_dead_letter_removes_its_call_journal(db, clock):
    queue = SQLiteQueue(db, "c", Wakeups(), clock)
    append(db, event(1))
    dead(db, queue, "ev001")
    SQLiteJournal(db, clock).journal_put(JournalEntry("ev001", 1, "fp", "done", {}, {}))
    assert SQLiteRetention(db, Wakeups(), clock).drop_dead(None) == 1
    assert db.read("SELECT count(*) FROM journal") == [(0,)]


def test_purge_removes_done_events_older_than_the_cutoff_with_their_journal(db, clock):
    queue = SQLiteQueue(db, "c", Wakeups(), clock)
    append(db, event(1, "A"), event(2, "B"))
    queue.claim("d1", 10, 60.0)
    queue.ack("d1", ["ev001"])
    clock.advance(100.0)
    queue.ack("d1", ["ev002"])
    SQLiteJournal(db, clock).journal_put(JournalEntry("ev001", 1, "fp", "done", {}, {}))
    retention = SQLiteRetention(db, Wakeups(), clock)
    assert retention.purge_done(101.0) == 0
    assert retention.purge_done(50.0) == 1
    assert db.read("SELECT id FROM events") == [("ev002",)] and db.read("SELECT count(*) FROM journal") == [(0,)]


def test_purge_goes_chunk_by_chunk_until_a_chunk_is_short(db, clock):
    queue = SQLiteQueue(db, "c", Wakeups(), clock)
    append(db, *(event(n, f"U{n}") for n in range(PURGE_CHUNK + 3)))
    queue.ack("d1", [d["o"]["_id"] for d in queue.claim("d1", PURGE_CHUNK + 3, 60.0)])
    clock.advance(10.0)
    assert SQLiteRetention(db, Wakeups(), clock).purge_done(1.0) == PURGE_CHUNK + 3


# --- the call journal -------------------------------------------------------------------------------

def test_a_journal_entry_reads_back_as_written(db, clock):
    journal = SQLiteJournal(db, clock)
    entry = JournalEntry("ev1", 2, "fp", "failed", {"endpoint": "push", "body": {"to": "U"}}, {"status": 400}, 5.0)
    journal.journal_put(entry)
    assert journal.journal_get("ev1", 2) == entry and journal.journal_get("ev1", 3) is None


def test_a_journal_entry_without_a_time_is_stamped_now(db, clock):
    journal = SQLiteJournal(db, clock)
    journal.journal_put(JournalEntry("ev1", 1, "fp", "started"))
    assert journal.journal_get("ev1", 1).updated_at == clock.now


def test_a_journal_write_that_must_not_wait_is_refused_while_any_writer_holds_the_store(db, clock):
    """One of ours (the writer lock) or a foreign one (an operator's sqlite3 shell: SQLite's own
    lock): False at once, nothing written; then, the store free, written."""
    journal = SQLiteJournal(db, clock)
    entry = JournalEntry("ev1", 1, "fp", "started", updated_at=5.0)
    another_process = WriterLock(db.path + WRITER_LOCK_SUFFIX)
    with another_process:
        assert journal.journal_put_many_nowait([entry]) is False
    another_process.close()
    foreign = sqlite3.connect(db.path, isolation_level=None)
    foreign.execute("BEGIN IMMEDIATE")
    assert journal.journal_put_many_nowait([entry]) is False and journal.journal_get("ev1", 1) is None
    foreign.execute("COMMIT")
    foreign.close()
    assert journal.journal_put_many_nowait([entry]) is True and journal.journal_get("ev1", 1) == entry
    journal.journal_put(JournalEntry("ev2", 1, "fp", "started"))     # the busy timeout is back: it waits as before
    assert db.bookkeeping.execute("PRAGMA busy_timeout").fetchone()[0] == 10_000


def test_unfinished_entries_are_the_started_ones_oldest_first(db, clock):
    journal = SQLiteJournal(db, clock)
    journal.journal_put_many([JournalEntry("b", 1, "fp", "started", updated_at=20.0),
                              JournalEntry("a", 1, "fp", "started", updated_at=10.0),
                              JournalEntry("c", 1, "fp", "done", updated_at=5.0)])
    assert [e.event_id for e in journal.journal_unfinished()] == ["a", "b"]


def test_a_journal_entry_that_is_not_json_is_refused_and_nothing_is_written(db, clock):
    journal = SQLiteJournal(db, clock)
    with pytest.raises(TypeError):
        journal.journal_put_many([JournalEntry("a", 1, "fp", "started"),
                                  JournalEntry("b", 1, "fp", "started", request={"raw": b"x"})])
    assert journal.journal_get("a", 1) is None


# --- the rate budget ------------------------------------------------------------------------------------

def test_a_budget_lease_starts_now_then_where_the_last_one_ended(db):
    budget = SQLiteBudget(db)
    assert budget.budget_lease("reply", 0.5, 100.0, 1.0) == (True, 100.0)
    assert budget.budget_lease("reply", 0.5, 100.1, 1.0) == (True, 100.5)
    assert budget.budget_lease("push", 0.5, 100.1, 1.0) == (True, 100.1)


def test_a_budget_lease_beyond_max_ahead_reserves_nothing(db):
    budget = SQLiteBudget(db)
    budget.budget_lease("reply", 2.0, 100.0, 1.0)
    assert budget.budget_lease("reply", 0.5, 100.0, 1.0) == (False, 102.0)
    assert budget.budget_lease("reply", 0.5, 101.0, 1.0) == (True, 102.0)


def test_an_idle_endpoints_next_lease_starts_at_its_callers_now(db):
    budget = SQLiteBudget(db)
    budget.budget_lease("reply", 0.5, 100.0, 1.0)
    assert budget.budget_lease("reply", 0.5, 200.0, 1.0) == (True, 200.0)


# --- users ------------------------------------------------------------------------------------------------

def test_a_user_the_store_never_heard_of_is_none(db):
    assert SQLiteUsers(db).user_get("U0") is None


def test_profile_and_data_are_kept_apart(db):
    users = SQLiteUsers(db)
    users.user_put_profile("U1", {"displayName": "Ann"}, 12.5)
    users.user_set_data("U1", {1: "one"})
    assert users.user_get("U1") == {"user_id": "U1", "profile": {"displayName": "Ann"}, "profile_fetched_at": 12.5,
                                    "followed": None, "followed_at": None, "unfollowed_at": None,
                                    "data": {"1": "one"}}


def test_follow_state_changes_only_for_a_newer_event(db):
    append(db, event(1, "Uf", kind="follow", timestamp=2_000))
    append(db, event(2, "Uf", kind="unfollow", timestamp=1_000))   # older: delivered late
    user = SQLiteUsers(db).user_get("Uf")
    assert (user["followed"], user["followed_at"], user["unfollowed_at"]) == (True, 2.0, None)
    append(db, event(3, "Uf", kind="unfollow", timestamp=3_000))
    assert SQLiteUsers(db).user_get("Uf")["followed"] is False


def test_data_that_is_not_json_is_refused(db):
    with pytest.raises(TypeError):
        SQLiteUsers(db).user_set_data("U1", {"raw": b"x"})


# --- appends -------------------------------------------------------------------------------------------------

def test_an_append_stores_new_events_once_and_names_the_duplicates(db):
    assert append(db, event(1), event(2)) == ["ev001", "ev002"]
    assert append(db, event(2), event(3), event(3)) == ["ev003"]
    assert db.read("SELECT count(*) FROM events") == [(3,)]


def test_an_appended_event_heads_its_key_only_when_the_key_is_idle(db):
    append(db, event(1, "A"), event(2, "A"), event(3, "B"))
    assert db.read("SELECT id, head FROM events ORDER BY seq") == [("ev001", 1), ("ev002", 0), ("ev003", 1)]


# --- observation and control -----------------------------------------------------------------------------------

def test_stats_count_each_state_and_the_oldest_event_not_done(db, clock):
    queue = SQLiteQueue(db, "c", Wakeups(), clock)
    append(db, event(1, "A"), event(2, "B"), event(3, "C"), received_at_ms=int((clock.now - 7.5) * 1000))
    queue.claim("d1", 2, 60.0)
    queue.ack("d1", ["ev001"])
    assert SQLiteObservation(db, clock).stats() == {"pending": 1, "in_flight": 1, "done": 1, "dead": 0,
                                                    "oldest_pending_s": 7.5}


def test_stats_of_an_empty_store(db, clock):
    assert SQLiteObservation(db, clock).stats() == {"pending": 0, "in_flight": 0, "done": 0, "dead": 0,
                                                    "oldest_pending_s": 0.0}


def test_busiest_keys_count_events_not_done_most_first_then_by_key(db, clock):
    append(db, event(1, "B"), event(2, "B"), event(3, "A"), event(4, "A"), event(5, "C"))
    observation = SQLiteObservation(db, clock)
    assert observation.busiest_keys(2) == [("A", 2), ("B", 2)]
    assert observation.busiest_keys(0) == [] and len(observation.busiest_keys(-1)) == 3


def test_statuses_are_stamped_by_the_clock_and_pruned_by_age(db, clock):
    observation = SQLiteObservation(db, clock)
    observation.put_status("old", {"state": "running"})
    clock.advance(30.0)
    observation.put_status("new", {"state": "running"})
    assert observation.get_statuses()["new"] == {"state": "running", "updated_at": clock.now}
    assert observation.prune_statuses(10.0) == 1 and list(observation.get_statuses()) == ["new"]
    observation.delete_status("new")
    assert observation.get_statuses() == {}


def test_a_control_reads_back_as_set_and_none_before(db, clock):
    observation = SQLiteObservation(db, clock)
    assert observation.get_control("handlers") is None
    observation.set_control("handlers", 4)
    assert observation.get_control("handlers") == 4


# --- the integrity report ----------------------------------------------------------------------------------------

def test_an_integrity_problem_is_reported_until_cleared(db, clock):
    integrity = SQLiteIntegrity(db, SQLiteObservation(db, clock), clock)
    assert integrity.report() is None
    integrity.check("the WAL is damaged at frame 3", quick_check=False)
    assert integrity.report() == {"ok": False, "checked_at": clock.now, "problems": ["the WAL is damaged at frame 3"]}
    integrity.clear()
    assert integrity.report() is None


def test_a_sound_file_passes_quick_check_and_reports_nothing(db, clock):
    integrity = SQLiteIntegrity(db, SQLiteObservation(db, clock), clock)
    integrity.check(None, quick_check=True)
    assert integrity.report() is None
