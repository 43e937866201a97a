"""The queue's decisions that both backends make the same way, as plain functions of their inputs:
when a nacked event is retried or dead-lettered, when an event's attempts are spent, how long a
key's run is, which appended events are new, what a follow event changes. store/sqlite_queue.py and store/mongo_queue.py read
and write their documents; the rules live here once (tests/unit/test_store_rules.py).
"""
from __future__ import annotations

from typing import Iterable, Iterator, NamedTuple

from frontdesk.protocol.backoff import doubling_delay

from .base import PENDING, AppendResult

ERROR_MAX_CHARS = 500   # a dead letter's reason is kept this long at most


class NackOutcome(NamedTuple):
    """What a nack does to the event: dead-letter it, or make it pending again after delay_s."""
    dead: bool
    delay_s: float = 0.0


def after_nack(attempt: int, retry: bool, max_attempts: int, backoff_s: float,
               backoff_max_s: float) -> NackOutcome:
    """A nacked event with `attempt` deliveries made is a dead letter when the handler said
    `retry: false` or no attempt is left; otherwise it is retried after the doubling backoff."""
    if not retry or attempt >= max_attempts:
        return NackOutcome(dead=True)
    return NackOutcome(dead=False, delay_s=doubling_delay(backoff_s, attempt, backoff_max_s))


def is_spent(deliveries_made: int, max_attempts: int | None) -> bool:
    """An event whose lease ran out with `deliveries_made` deliveries, none answered, is buried
    instead of handed out again once they reach max_attempts (None: no limit)."""
    return max_attempts is not None and deliveries_made >= max_attempts


def spent_error(max_attempts: int, last_error: str | None) -> str:
    """The dead letter's reason for an event whose every attempt ended without an answer."""
    return (f"max_attempts={max_attempts} deliveries made, none answered; last: "
            f"{last_error or 'its lease ran out (the dispatcher or handler holding it stopped)'}")[:ERROR_MAX_CHARS]


def run_length(followers: Iterable[tuple[int, float]], now: float) -> int:
    """How many of the events following a claimed head (their (state, due), in store order) are
    leased with it: the unbroken run of pending events that are due. One leased by anyone, or
    waiting for its backoff, ends the run, so nothing overtakes it."""
    length = 0
    for state, due in followers:
        if state != PENDING or due > now:
            break
        length += 1
    return length


def follow_change(event: dict) -> tuple[str, str, float] | None:
    """("follow" | "unfollow", userId, event time in epoch s) for a follow-state event, else None."""
    kind = event.get("type")
    user_id = (event.get("source") or {}).get("userId")
    if kind in ("follow", "unfollow") and isinstance(user_id, str) and user_id:
        return kind, user_id, event["timestamp"] / 1000.0
    return None


def new_events(events: list[dict], seen: set, result: AppendResult) -> Iterator[tuple[str, dict]]:
    """(webhookEventId, event) of each event not in `seen` (ids stored already, or earlier in
    this commit), noting each id in `result` as new or a duplicate; `seen` grows with the new."""
    for event in events:
        event_id = event["webhookEventId"]
        if event_id in seen:
            result.duplicates.append(event_id)
            continue
        seen.add(event_id)
        result.new.append(event_id)
        yield event_id, event
