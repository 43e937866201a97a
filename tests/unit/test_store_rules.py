"""store/rules.py case by case: the decisions both backends make the same way."""
from __future__ import annotations

import pytest

from frontdesk.store.base import DONE, LEASED, PENDING, AppendResult
from frontdesk.store.rules import after_nack, follow_change, is_spent, new_events, run_length, spent_error


def test_a_nack_that_asks_no_retry_dead_letters_at_once_whatever_attempts_are_left():
    assert after_nack(attempt=1, retry=False, max_attempts=10, backoff_s=1.0, backoff_max_s=60.0).dead


def test_a_nack_on_the_last_attempt_dead_letters():
    assert after_nack(attempt=5, retry=True, max_attempts=5, backoff_s=1.0, backoff_max_s=60.0).dead


def test_a_nack_beyond_the_last_attempt_dead_letters_too():
    assert after_nack(attempt=7, retry=True, max_attempts=5, backoff_s=1.0, backoff_max_s=60.0).dead


@pytest.mark.parametrize("attempt, delay", [(1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0)])
def test_a_retried_nack_waits_the_first_delay_doubled_per_attempt(attempt, delay):
    outcome = after_nack(attempt, retry=True, max_attempts=100, backoff_s=2.0, backoff_max_s=1000.0)
    assert not outcome.dead and outcome.delay_s == delay


def test_a_retried_nacks_delay_is_capped():
    assert after_nack(9, retry=True, max_attempts=100, backoff_s=2.0, backoff_max_s=30.0).delay_s == 30.0


def test_a_nack_after_thousands_of_attempts_reaches_the_cap_without_overflowing():
    assert after_nack(5000, retry=True, max_attempts=10_000, backoff_s=0.5, backoff_max_s=300.0).delay_s == 300.0


def test_a_zero_backoff_retries_at_once():
    assert after_nack(3, retry=True, max_attempts=5, backoff_s=0.0, backoff_max_s=0.0) == (False, 0.0)


@pytest.mark.parametrize("made, max_attempts, spent", [
    (0, 3, False), (2, 3, False), (3, 3, True), (4, 3, True), (99, None, False)])
def test_an_event_is_spent_once_its_unanswered_deliveries_reach_max_attempts(made, max_attempts, spent):
    assert is_spent(made, max_attempts) is spent


def test_a_spent_events_reason_names_the_limit_and_the_last_error():
    assert spent_error(3, "TypeError: bad") == "max_attempts=3 deliveries made, none answered; last: TypeError: bad"


def test_a_spent_events_reason_without_an_error_says_its_lease_ran_out():
    assert spent_error(2, None).endswith("its lease ran out (the dispatcher or handler holding it stopped)")


def test_a_spent_events_reason_is_kept_to_500_characters():
    assert len(spent_error(2, "x" * 2000)) == 500


def test_a_run_is_every_pending_due_follower():
    assert run_length([(PENDING, 10.0), (PENDING, 20.0), (PENDING, 0.0)], now=20.0) == 3


def test_a_run_ends_at_a_follower_leased_by_anyone():
    assert run_length([(PENDING, 0.0), (LEASED, 0.0), (PENDING, 0.0)], now=5.0) == 1


def test_a_run_ends_at_a_follower_waiting_for_its_backoff():
    assert run_length([(PENDING, 0.0), (PENDING, 6.0), (PENDING, 0.0)], now=5.0) == 1


def test_a_run_behind_a_head_whose_next_event_is_not_pending_is_empty():
    assert run_length([(DONE, 0.0)], now=5.0) == 0 and run_length([], now=5.0) == 0


def test_a_follow_event_changes_the_users_follow_state_at_its_time():
    event = {"type": "follow", "timestamp": 1_500, "source": {"type": "user", "userId": "U1"}}
    assert follow_change(event) == ("follow", "U1", 1.5)


def test_an_unfollow_event_too():
    event = {"type": "unfollow", "timestamp": 3_000, "source": {"type": "user", "userId": "U2"}}
    assert follow_change(event) == ("unfollow", "U2", 3.0)


@pytest.mark.parametrize("event", [
    {"type": "message", "timestamp": 1, "source": {"type": "user", "userId": "U1"}},
    {"type": "follow", "timestamp": 1, "source": {"type": "group", "groupId": "C1"}},
    {"type": "follow", "timestamp": 1, "source": {"type": "user", "userId": ""}},
    {"type": "follow", "timestamp": 1},
])
def test_other_events_and_follows_without_a_user_change_nothing(event):
    assert follow_change(event) is None


def test_an_append_keeps_each_webhook_event_id_once_and_says_which_were_there():
    result = AppendResult()
    events = [{"webhookEventId": i} for i in ("A", "B", "A", "C")]
    seen = {"B"}
    kept = [event_id for event_id, _ in new_events(events, seen, result)]
    assert kept == ["A", "C"] and seen == {"A", "B", "C"}
    assert result.new == ["A", "C"] and result.duplicates == ["B", "A"]
