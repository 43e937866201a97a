"""How both backends are put together: a `Store` made of one object per concern of the contract.

Each backend builds the same concerns, one module each, named alike so that a reader finds "the
journal" in the same place for both:

| concern (store/base.py) | SQLite | MongoDB |
| --- | --- | --- |
| appends (the group commit's commit function) | sqlite_appends.py | mongo_appends.py |
| `Queue`: claims, runs, leases, acks, nacks | sqlite_queue.py | mongo_queue.py |
| `Retention`: dead letters, purge | sqlite_retention.py | mongo_retention.py |
| `Journal`: the call journal | sqlite_journal.py | mongo_journal.py |
| `Budget`: the shared rate budget | sqlite_budget.py | mongo_budget.py |
| `Sends`: the month's messages sent per kind | sqlite_sends.py | mongo_sends.py |
| `Users`: the per-user DB | sqlite_users.py | mongo_users.py |
| `Observation`: counts, statuses, controls | sqlite_observation.py | mongo_observation.py |
| `Waiting`: one-to-one chats waiting in the queue | sqlite_waiting.py | mongo_waiting.py |
| connections and their errors | sqlite_connections.py | mongo_connections.py |
| schema | sqlite_schema.py | mongo_schema.py |
| change feed | sqlite_feed.py | mongo_feed.py |

`ComposedStore` hands each contract method to its concern; a backend's facade (store/sqlite.py,
store/mongo.py) only builds the concerns, opens them in order, and adds what is its own (health,
the change feed, closing). Each concern is tested on its own (tests/unit/).
"""
from __future__ import annotations

from typing import Callable, Generic, Protocol, TypeVar

from .base import (AppendResult, Budget, Journal, JournalEntry, Observation, Queue, Retention, Sends, Store,
                   StoreUnavailable, Users, Waiting)
from .groupcommit import AppendRequest, GroupCommitter


class Connections(Protocol):
    """What the facade needs of a backend's connections: whether the store was closed."""
    closed: bool


C = TypeVar("C", bound=Connections)


class ComposedStore(Store, Generic[C]):
    """A Store whose every method is one of its concerns'; appends go to the group commit.

    Subclasses build the concerns in their constructor (nothing opened) and open them in
    `open()`; `health()` is shared, with `_check_backend()` for what only the backend knows."""

    def __init__(self, name: str, db: C, writer: GroupCommitter, queue: Queue,
                 retention: Retention, journal: Journal, budget: Budget, users: Users,
                 observation: Observation, sends: Sends, waiting: Waiting):
        self._name = name   # as messages show the store (a path, a URL without its password)
        self._db = db
        self._writer = writer
        self._queue = queue
        self._retention = retention
        self._journal = journal
        self._budget = budget
        self._users = users
        self._observation = observation
        self._waiting = waiting
        self._sends = sends

    # --- queue: writing ------------------------------------------------------------------
    def append(self, destination: str, events: list[dict], received_at_ms: int,
               deadline: float | None = None) -> AppendResult:
        return self._writer.append(destination, events, received_at_ms, deadline)

    def append_nowait(self, destination: str, events: list[dict], received_at_ms: int,
                      deadline: float | None, on_done: Callable[[AppendRequest], None]) -> AppendRequest:
        request = AppendRequest(destination, events, received_at_ms, deadline)
        self._writer.submit(request, on_done)
        return request

    def abandon_append(self, handle: AppendRequest) -> bool:
        return self._writer.abandon(handle)

    def health(self) -> None:
        """Never blocks. While the last write failed, asks the writer for a probe write (at most
        once a second), so a fault that cleared stops being reported within a second or two."""
        self._writer.ask_probe()
        if self._db.closed:
            raise StoreUnavailable(f"store {self._name} is closed")
        if not self._writer.alive():
            raise StoreUnavailable(f"store {self._name}: the writer thread has stopped")
        self._check_backend()
        if self._writer.last_error:
            raise StoreUnavailable(self._writer.last_error)

    def _check_backend(self) -> None:
        """Raise StoreUnavailable (or StoreGone) for what only the backend knows."""

    # --- queue: handing out --------------------------------------------------------------
    def claim(self, owner: str, limit: int, lease_s: float, max_attempts: int | None = None,
              run: int = 1) -> list[dict]:
        return self._queue.claim(owner, limit, lease_s, max_attempts, run)

    def ack(self, owner: str, event_ids: list[str]) -> None:
        self._queue.ack(owner, event_ids)

    def ack_and_claim(self, owner: str, event_ids: list[str], limit: int, lease_s: float,
                      max_attempts: int | None = None, run: int = 1) -> list[dict]:
        return self._queue.ack_and_claim(owner, event_ids, limit, lease_s, max_attempts, run)

    def nack(self, owner: str, event_id: str, error: str, retry: bool, max_attempts: int,
             backoff_s: float, backoff_max_s: float) -> str:
        return self._queue.nack(owner, event_id, error, retry, max_attempts, backoff_s, backoff_max_s)

    def release(self, owner: str, event_ids: list[str]) -> None:
        self._queue.release(owner, event_ids)

    def expire_leases(self, owner: str) -> int:
        return self._queue.expire_leases(owner)

    def extend_leases(self, owner: str, event_ids: list[str], lease_s: float) -> None:
        self._queue.extend_leases(owner, event_ids, lease_s)

    def next_wakeup(self) -> float | None:
        return self._queue.next_wakeup()

    # --- dead letters and retention -------------------------------------------------------
    def dead_letters(self, limit: int = 100) -> list[dict]:
        return self._retention.dead_letters(limit)

    def retry_dead(self, event_ids: list[str] | None = None) -> int:
        return self._retention.retry_dead(event_ids)

    def drop_dead(self, event_ids: list[str] | None = None) -> int:
        return self._retention.drop_dead(event_ids)

    def purge_done(self, older_than_s: float) -> int:
        return self._retention.purge_done(older_than_s)

    # --- call journal ----------------------------------------------------------------------
    def journal_get(self, event_id: str, call_no: int) -> JournalEntry | None:
        return self._journal.journal_get(event_id, call_no)

    def journal_put_many(self, entries: list[JournalEntry]) -> None:
        self._journal.journal_put_many(entries)

    def journal_put_many_nowait(self, entries: list[JournalEntry]) -> bool:
        return self._journal.journal_put_many_nowait(entries)

    def journal_unfinished(self) -> list[JournalEntry]:
        return self._journal.journal_unfinished()

    # --- shared rate budget ------------------------------------------------------------------
    def budget_lease(self, endpoint: str, seconds: float, now: float,
                     max_ahead_s: float) -> tuple[bool, float]:
        return self._budget.budget_lease(endpoint, seconds, now, max_ahead_s)

    # --- the month's sends ----------------------------------------------------------------------
    def sends_add(self, month: str, counts: dict[str, int]) -> dict[str, int]:
        return self._sends.sends_add(month, counts)

    # --- users -------------------------------------------------------------------------------
    def user_get(self, user_id: str) -> dict | None:
        return self._users.user_get(user_id)

    def user_put_profile(self, user_id: str, profile: dict, fetched_at: float) -> None:
        self._users.user_put_profile(user_id, profile, fetched_at)

    def user_set_data(self, user_id: str, data: dict) -> None:
        self._users.user_set_data(user_id, data)

    # --- observation and control -------------------------------------------------------------
    def stats(self) -> dict:
        return self._observation.stats()

    def busiest_keys(self, limit: int = 1) -> list[tuple[str, int]]:
        return self._observation.busiest_keys(limit)

    def waiting_chats(self, received_before_ms: int, limit: int) -> list[tuple[str, int]]:
        return self._waiting.waiting_chats(received_before_ms, limit)

    def put_status(self, name: str, status: dict) -> None:
        self._observation.put_status(name, status)

    def get_statuses(self) -> dict[str, dict]:
        return self._observation.get_statuses()

    def delete_status(self, name: str) -> None:
        self._observation.delete_status(name)

    def prune_statuses(self, older_than_s: float) -> int:
        return self._observation.prune_statuses(older_than_s)

    def set_control(self, name: str, value) -> None:
        self._observation.set_control(name, value)

    def get_control(self, name: str):
        return self._observation.get_control(name)
