"""The store contract: the queue, its change feed, the call journal, the shared rate budget and
the per-user DB (docs/store.md).

The receiver, the dispatcher and the rate limiter use only this interface; `store.open_store`
picks the implementation from the URL. Every method is safe to call from several threads of
one process, and several processes may use one store at once (one receiver and one or more
dispatchers): leases, not memory, decide who holds an event.

Event states: pending (deliverable once `not_before` has passed) -> leased (claimed by an
owner until `lease_until`) -> done | dead. An expired lease counts as pending again.
Per conversation key, only the oldest event that is pending or leased may be handed out.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from .groupcommit import AppendRequest

# An event's state, as both backends store it (SQLite's `state` column, MongoDB's `state` field).
PENDING, LEASED, DONE, DEAD = 0, 1, 2, 3


class StoreError(Exception):
    """The store cannot do what was asked (unreachable, unwritable, corrupt); the message says why."""


class StoreUnavailable(StoreError):
    """The store cannot take writes right now (the receiver answers 503)."""


class StoreGone(StoreUnavailable):
    """The store's file was removed or replaced since it was opened: this process writes to a file
    nobody will read again. Nothing more may be acknowledged; the process must exit so that its
    supervisor starts it again on the file at the configured path."""


@dataclass
class AppendResult:
    new: list[str] = field(default_factory=list)         # webhookEventIds stored by this call
    duplicates: list[str] = field(default_factory=list)  # ids already in the store (redeliveries)


@dataclass
class JournalEntry:
    """What the rate limiter knows about the n-th API call of one event.

    state: "started" (sent or about to be sent, outcome unknown), "done" (response holds the
    result), "failed" (response holds the error). `request` is the HTTP request actually sent
    (endpoint, body, retry key), so that a restarted rate limiter can repeat it exactly.
    """
    event_id: str
    call_no: int
    fingerprint: str
    state: str
    request: dict | None = None
    response: dict | None = None
    updated_at: float = 0.0


class ChangeFeed(abc.ABC):
    """A wake-up source for a dispatcher: readable when events may have been appended.

    The documents stay the source of truth; a wake-up only says "claim again". A feed follows
    from the moment `Store.change_feed` returns: every commit after that which makes an event
    claimable wakes it (an append, the ack or dead letter of a key's head, a release, a re-queue,
    an `expire_leases`); it sends no wake-up of its own at start (the caller claims once anyway).
    Spurious wake-ups are allowed (a backend that may have missed changes, e.g. after restarting
    its stream, wakes once); missed ones are covered by the caller's slow re-scan timer.
    """

    @abc.abstractmethod
    def fileno(self) -> int:
        """A descriptor for selectors: readable when there may be news."""

    @abc.abstractmethod
    def drain(self) -> None:
        """Consume pending wake-ups without blocking."""

    @abc.abstractmethod
    def close(self) -> None: ...



class Queue(abc.ABC):
    """The contract's queue, handing out: claims and leases, acks, nacks, releases."""

    @abc.abstractmethod
    def claim(self, owner: str, limit: int, lease_s: float, max_attempts: int | None = None,
              run: int = 1) -> list[dict]:
        """Lease up to `limit` deliverable events to `owner`, oldest first, one per key.

        An event is deliverable when it is pending (or its lease expired), its not_before has
        passed, and no older event of its key is pending or leased. An event that already had
        `max_attempts` deliveries (its last lease ran out: the process holding it died) is
        dead-lettered instead of handed out, with `rules.spent_error`'s reason.

        With `run` > 1, when fewer deliverable events than `limit` are found, up to `run` - 1
        events following each one of its key are leased too (`limit` in all): the unbroken run
        of pending, due events behind it, returned after it in store order. The caller delivers
        them one after another, each once the one before is answered. A follower's attempt is
        charged when the ack of the event before it makes it its key's head while still leased
        to the same owner (its document's `attempt` already counts that delivery); one given back
        by `release` or `nack`, or left behind by a dead owner, was never charged.

        Returns:
            list[dict]: event documents (protocol.events.make_document) in store order, with
            `attempt` already counting this delivery; [] when `limit` <= 0.
        """

    @abc.abstractmethod
    def ack(self, owner: str, event_ids: list[str]) -> None:
        """Mark events done. Ids not leased to `owner` any more are ignored (lease lost)."""

    def ack_and_claim(self, owner: str, event_ids: list[str], limit: int, lease_s: float,
                      max_attempts: int | None = None, run: int = 1) -> list[dict]:
        """`ack` then `claim` in one call. A backend may do both in one transaction: one write
        instead of two per dispatcher turn, and the next event of an acked key goes out at once.

        Returns:
            list[dict]: what `claim` returns.
        """
        self.ack(owner, event_ids)
        return self.claim(owner, limit, lease_s, max_attempts, run)

    @abc.abstractmethod
    def nack(self, owner: str, event_id: str, error: str, retry: bool, max_attempts: int,
             backoff_s: float, backoff_max_s: float) -> str:
        """Record a failure: retry later or dead-letter (store/rules.py `after_nack`).

        Dead-letters when retry is False or the attempt count reached max_attempts; otherwise
        the event is pending again after protocol.backoff.doubling_delay(backoff_s, attempt,
        backoff_max_s).

        Returns:
            str: the new state, "pending" or "dead"; "lost" (nothing changed) when the event is
            not leased to owner.
        """

    @abc.abstractmethod
    def release(self, owner: str, event_ids: list[str]) -> None:
        """Give leased events back without counting a failure (e.g. on drain): a head's attempt is
        taken back, a follower's (see `claim`) was never charged."""

    @abc.abstractmethod
    def expire_leases(self, owner: str) -> int:
        """End every lease of an owner known to be dead now, as if each had run out: its events
        are deliverable again at once (the delivery counts as an attempt) and the change feeds
        wake. A follower of the owner's runs is taken over as its key's head, never as a follower
        of another run.

        Returns:
            int: how many leases ended.
        """

    @abc.abstractmethod
    def extend_leases(self, owner: str, event_ids: list[str], lease_s: float) -> None:
        """Keep leases of events still being worked on alive (lease_s from now); ids not leased
        to owner are ignored."""

    @abc.abstractmethod
    def next_wakeup(self) -> float | None:
        """Returns: epoch seconds of the earliest future not_before or lease expiry of a key's
        head, or None when nothing is waiting for a time."""


class Retention(abc.ABC):
    """The contract's dead letters and retention: what leaves the queue, and how it goes."""

    @abc.abstractmethod
    def dead_letters(self, limit: int = 100) -> list[dict]:
        """Returns: dead events, oldest first, as {"id", "key", "attempts", "error", "dead_at",
        "event"}; at most `limit`, as SQL's LIMIT: 0 gives none, a negative limit no limit."""

    @abc.abstractmethod
    def retry_dead(self, event_ids: list[str] | None = None) -> int:
        """Re-queue dead letters (all when None) at the end of the queue with a fresh attempt
        count. Any number: a backend commits them in chunks (each chunk whole or not at all).

        Returns:
            int: how many were re-queued (unknown ids and events not dead are skipped).
        """

    @abc.abstractmethod
    def drop_dead(self, event_ids: list[str] | None = None) -> int:
        """Delete dead letters (all when None) and their call-journal entries, in chunks as
        retry_dead.

        Returns:
            int: how many were deleted.
        """

    @abc.abstractmethod
    def purge_done(self, older_than_s: float) -> int:
        """Remove done events finished more than older_than_s ago, and their call-journal entries:
        the only retention there is (nothing else deletes done events).

        Returns:
            int: how many were removed.
        """


class Journal(abc.ABC):
    """The contract's call journal: the rate limiter's record of every API call of an event, which
    makes API effects at most once per (event, n-th call)."""

    @abc.abstractmethod
    def journal_get(self, event_id: str, call_no: int) -> JournalEntry | None:
        """Returns: the entry for the event's call_no-th API call, or None."""

    def journal_put(self, entry: JournalEntry) -> None:
        """Insert or replace (durably) the entry for (event_id, call_no); updated_at 0 means now."""
        self.journal_put_many([entry])

    @abc.abstractmethod
    def journal_put_many(self, entries: list[JournalEntry]) -> None:
        """journal_put for several entries in one durable write (the rate limiter journals every
        call twice: one commit per call capped it near 1,400 calls/s).

        Raises:
            TypeError, ValueError: a request or response that cannot be stored (not JSON;
                MongoDB: an integer beyond 64 bits); nothing is written.
        """

    def journal_put_many_nowait(self, entries: list[JournalEntry]) -> bool:
        """journal_put_many, only if the store can write at once: on a thread that must not wait
        (the rate limiter's event loop). Returns False, having written nothing, when the write
        would wait for another writer; a store that cannot tell always says so (MongoDB).

        Raises:
            as journal_put_many, once the write was started.
        """
        return False

    @abc.abstractmethod
    def journal_unfinished(self) -> list[JournalEntry]:
        """Returns: entries still "started", oldest first (a restarted rate limiter resolves them)."""


class Budget(abc.ABC):
    """The contract's shared rate budget: every rate limiter on the store reserves LINE's call
    time here, so that together they stay under LINE's limits."""

    @abc.abstractmethod
    def budget_lease(self, endpoint: str, seconds: float, now: float,
                     max_ahead_s: float) -> tuple[bool, float]:
        """Reserve the next `seconds` of an endpoint's call budget, atomically across every process
        on this store (ratelimiter/shared_budget.py spends it at the endpoint's rate).

        One record per endpoint holds the time up to which its budget is reserved, so reservations
        never overlap.

        Returns:
            (True, start): [start, start + seconds) (epoch s) is the caller's, start being `now`
            or the end of the last reservation, whichever is later.
            (False, reserved_until): the budget is reserved beyond now + max_ahead_s already:
            nothing was reserved; ask again once reserved_until - max_ahead_s has passed.
        """


class Sends(abc.ABC):
    """The contract's count of the messages sent per quota month and kind, as LINE bills them
    (recipients per request), added to by every rate limiter on the store (ratelimiter/quota.py)."""

    @abc.abstractmethod
    def sends_add(self, month: str, counts: dict[str, int]) -> dict[str, int]:
        """Add `counts` (kind -> messages) to month `month` ("2026-12", Japan time) atomically;
        with no counts, only read.

        Returns:
            the month's totals per kind after the addition (every rate limiter's).
        """


class Users(abc.ABC):
    """The contract's per-user DB: profile cache, follow state and the bot's own data."""

    @abc.abstractmethod
    def user_get(self, user_id: str) -> dict | None:
        """Returns: {"user_id", "profile", "profile_fetched_at", "followed", "followed_at",
        "unfollowed_at", "data"}, or None for a user the store has never heard of."""

    @abc.abstractmethod
    def user_put_profile(self, user_id: str, profile: dict, fetched_at: float) -> None:
        """Cache a user's LINE profile (fetched_at: epoch s).

        Raises:
            TypeError, ValueError: as user_set_data.
        """

    @abc.abstractmethod
    def user_set_data(self, user_id: str, data: dict) -> None:
        """Replace the bot's own small per-user data map, stored as JSON stores it (map keys
        become strings).

        Raises:
            TypeError, ValueError: it cannot be stored (not JSON; MongoDB: an integer beyond
                64 bits); nothing changed.
        """


class Observation(abc.ABC):
    """The contract's observation and control: counts and hot keys for operators, status
    documents processes publish, and operator controls to running processes."""

    @abc.abstractmethod
    def stats(self) -> dict:
        """Cheap at any queue size and retention: operators poll it (`frontdesk status`, every
        /metrics scrape).

        Returns:
            {"pending", "in_flight", "done", "dead", "oldest_pending_s"}: events waiting, leased
            to a dispatcher (a lease past its expiry may count as either until it is claimed
            again), done, dead; the age of the oldest event not done yet, pending or leased.
        """

    @abc.abstractmethod
    def busiest_keys(self, limit: int = 1) -> list[tuple[str, int]]:
        """A hot key shows here (its events go one at a time, so more handlers do not drain it
        faster). Reads every event not done yet: operators' tools call it every few seconds at
        most, never the hot path.

        Returns:
            [(conversation key, events not done)], most first, at most `limit` (as SQL's LIMIT:
            0 gives none, a negative limit no limit).
        """

    @abc.abstractmethod
    def put_status(self, name: str, status: dict) -> None:
        """Publish a process's status document (dispatchers publish theirs every second)."""

    @abc.abstractmethod
    def get_statuses(self) -> dict[str, dict]:
        """Returns: every published status document by name, each with "updated_at" (epoch s,
        this host's clock) added."""

    @abc.abstractmethod
    def delete_status(self, name: str) -> None:
        """Remove a process's status document (it stopped cleanly: nothing left to show)."""

    @abc.abstractmethod
    def prune_statuses(self, older_than_s: float) -> int:
        """Remove status documents not updated for older_than_s (processes that died without a
        word).

        Returns:
            int: how many were removed.
        """

    @abc.abstractmethod
    def set_control(self, name: str, value) -> None:
        """Operator requests to running processes, e.g. ("handlers", 4) from `frontdesk scale`."""

    @abc.abstractmethod
    def get_control(self, name: str):
        """Returns: the control's value as set (a JSON value), or None when it was never set."""


class Waiting(abc.ABC):
    """Which one-to-one chats wait: the rate limiter starts LINE's loading animation for them
    (docs/ratelimiter.md, "Users told to wait")."""

    @abc.abstractmethod
    def waiting_chats(self, received_before_ms: int, limit: int) -> list[tuple[str, int]]:
        """The one-to-one chats (conversation key a user ID) whose oldest event not yet acked,
        pending or leased, was received at or before `received_before_ms` (epoch ms), oldest
        first. One indexed read of each conversation's head, never of the whole queue: the rate
        limiter asks about once a second.

        Returns:
            [(user ID, that event's received_at in epoch ms)], at most `limit`.
        """


class Store(Queue, Retention, Journal, Budget, Sends, Users, Observation, Waiting):
    """The one contract every part of frontdesk uses to reach the store, whichever backend.

    It exists so that the receiver, the dispatcher, the rate limiter and the operator commands
    never know which database holds the queue: SQLite (store/sqlite.py) and MongoDB
    (store/mongo.py) both implement it, each as a facade over the same concerns
    (store/composed.py). It owns every durable fact of a running system: the events and their
    states, the call journal, the rate budget, the month's sends, users, process statuses and operator controls.

    Errors: any method may raise StoreUnavailable when the store cannot serve it now (closed,
    a disk or I/O error, a busy lock past its timeout, no primary), and a SQLite store StoreGone
    when its file was removed or replaced since it was opened (the caller must exit; see
    StoreGone). Opening raises StoreError. The methods below name only what else they raise.
    """
    url: str

    @abc.abstractmethod
    def append(self, destination: str, events: list[dict], received_at_ms: int,
               deadline: float | None = None) -> AppendResult:
        """Store one webhook body's events atomically and durably, deduplicated by webhookEventId.

        Returns only after this call's events are durable (group commit: concurrent callers
        share one commit). follow/unfollow events also update the users table.

        Args:
            deadline: a time.monotonic() value; when it passes before the write has started,
                nothing of this call is stored (so "only a 200 stores anything" holds).

        Returns:
            AppendResult: the ids stored now, and the ids that were already stored.

        Raises:
            StoreUnavailable: the write cannot be made, the deadline passed first, or this one
                request holds what the store cannot encode (the others of its group are stored).
        """

    @abc.abstractmethod
    def append_nowait(self, destination: str, events: list[dict], received_at_ms: int,
                      deadline: float | None, on_done: Callable[["AppendRequest"], None]) -> "AppendRequest":
        """`append` without waiting, for a caller on an event loop.

        Returns:
            AppendRequest: a handle, at once; on_done(handle) runs on the store's writer thread
            once handle.result (an AppendResult) or handle.error (a StoreUnavailable) is set.
            When the deadline passes first, the caller asks abandon_append(handle).

        Raises:
            StoreUnavailable: the store is closed.
        """

    @abc.abstractmethod
    def abandon_append(self, handle: "AppendRequest") -> bool:
        """Give up on an append_nowait.

        Returns:
            bool: True when it will never be stored; False when it is being written (on_done
            still comes, with its outcome).
        """

    def integrity(self) -> dict | None:
        """The last failed integrity check of the store's files.

        Returns:
            {"ok": False, "checked_at", "problems"} until an operator clears it; None when
            there is none (or the backend has no such check).
        """
        return None

    def clear_integrity(self) -> None:
        """Forget the last failed integrity check: an operator has dealt with it."""

    @abc.abstractmethod
    def health(self) -> None:
        """Check that the store can take writes now, without blocking (the receiver asks on its
        event loop): a backend that must ask a server answers from a check made on a thread of
        its own, at most a second or two old.

        Raises:
            StoreUnavailable: with the reason, unless the store can take writes now.
            StoreGone: (SQLite) the file was removed or replaced.
        """

    @abc.abstractmethod
    def change_feed(self) -> ChangeFeed:
        """A new follower wake-up source (one per dispatcher), following from when it returns
        (see ChangeFeed).

        Raises:
            StoreError: it cannot be set up (SQLite: the feed folder; MongoDB: the change stream).
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Finish what is queued, stop the store's threads, close its connections. Idempotent;
        every later call raises StoreUnavailable."""
