"""The dispatcher's side of the queue: claims from the store, acks back in batches, leases kept.

The store hands out at most one event per conversation key (the oldest) and leases it to this
dispatcher, so per-key order and "never two events of one key in flight" hold across any number
of dispatchers; the router double-checks the latter for its own deliveries. Acks are collected
during one loop turn and written in one store call. A failed store call is retried on a timer,
never lost: acks stay queued, claims simply happen later.

When a claim finds fewer keys ready than there is room for, the store also leases a run of each
key's following events (claim_run, Store.claim). The router keeps them and hands a key's next one
out as soon as the one before it is answered, without waiting for a store turn: with few busy
conversations each store transaction then carries many events instead of one per key. A nack,
a release or a drain gives the rest of the key's run back first, so nothing overtakes an event.
"""
from __future__ import annotations

import logging
import time
from collections import deque

from frontdesk.store import StoreError

log = logging.getLogger("frontdesk.dispatcher")

STORE_RETRY_S = 1.0
MAX_CLAIM = 1000


class Router:
    """The store's side of one dispatcher's routing: the keys it holds (one event each), the runs
    leased behind them, the acks of the turn, and a retry timer when the store fails. What it says
    to the store; StorePacer (dispatcher/pacer.py) decides when."""

    def __init__(self, store, settings, owner: str):
        self.store = store
        self.settings = settings
        self.owner = owner
        self.more = True                 # the store may hold claimable events for us
        self.keys: dict[str, str] = {}   # key -> event id, for every event we hold out
        self.runs: dict[str, deque[dict]] = {}   # key -> its leased followers, in order
        self.ready: deque[dict] = deque()   # followers whose predecessor was answered: deliver now
        self._acks: list[str] = []
        self._retry_at: float | None = None
        self._store_error: str | None = None

    # --- claiming ---------------------------------------------------------------------------
    def claim(self, free: int) -> list[dict]:
        """Up to `free` events, oldest first, one per key, none of a key we already hold; the
        queued acks go in the same store call (their keys' next events can come back at once).
        The runs leased behind them are kept for `ack` to hand on (they take no handler's room
        until then, and a key has one event out at a time, so a new conversation is not kept
        waiting behind them)."""
        limit = min(free, MAX_CLAIM)
        if not (self.more or self._acks) or limit <= 0 or self._retry_at is not None:
            return []
        acks, self._acks = self._acks, []
        try:
            docs = self.store.ack_and_claim(self.owner, acks, limit, self.settings.lease_s,
                                            self.settings.max_attempts, self.settings.claim_run)
        except StoreError as exc:
            self._acks[:0] = acks
            self._store_failed("claim", exc)
            return []
        if len(docs) < limit:
            self.more = False
        fresh, clashing, runs = [], [], {}
        for doc in docs:   # in store order: a key's head before its followers
            key, event_id = doc["o"]["key"], doc["o"]["_id"]
            if key in runs:
                runs[key].append(doc)
            elif key in self.keys:
                clashing.append(event_id)
            else:
                self.keys[key] = event_id
                runs[key] = deque()
                fresh.append(doc)
        self.runs.update((key, run) for key, run in runs.items() if run)
        if clashing:   # the store broke its contract: hand them back rather than break order
            log.error("event=claim_returned_busy_keys count=%d ids=%s", len(clashing), clashing[:5])
            self._call("release", self.store.release, self.owner, clashing)
        return fresh

    def take_ready(self, free: int) -> list[dict]:
        """Up to `free` followers whose turn has come, to be delivered now."""
        return [self.ready.popleft() for _ in range(min(free, len(self.ready)))]

    def wake(self) -> None:
        """Something may have become claimable (feed wake-up, timer, our own ack)."""
        self.more = True

    # --- answers ------------------------------------------------------------------------------
    def take_run(self, key: str) -> deque | None:
        """The run leased behind `key`'s event, removed: it goes to the handler in one batch with
        that event (what does not fit comes back through `keep_run`)."""
        return self.runs.pop(key, None)

    def keep_run(self, key: str, run: deque) -> None:
        self.runs[key] = run

    def ack(self, event_id: str, key: str, handed: str | None = None) -> None:
        """`handed`: the key's next event, already with the handler in the same batch (it becomes
        the key's event out; the run left behind, if any, waits for its ack)."""
        self._forget(event_id, key)
        self._acks.append(event_id)
        if handed is not None:
            self.keys[key] = handed
            return
        run = self.runs.get(key)
        if run is None:
            self.more = True   # the key's next event, if any, is the store's to give
        elif self.keys.get(key) is None:   # its next event is ours already: hand it on at once
            doc = run.popleft()
            if not run:
                del self.runs[key]
            self.keys[key] = doc["o"]["_id"]
            self.ready.append(doc)

    def nack(self, event_id: str, key: str, error: str, retry: bool) -> str | bool:
        """Record a failure; returns the store's new state ("pending", "dead", "lost"), or False
        when the store could not be reached (the lease then runs out and the event comes back).
        The key's run is given back first: nothing of the key may overtake a retried event."""
        self._forget(event_id, key)
        self.flush()   # keep the store's view in step: earlier acks first
        self._give_back(self._take_runs([key]))
        state = self._call("nack", self.store.nack, self.owner, event_id, error[:500], retry,
                           self.settings.max_attempts, self.settings.retry_backoff_s,
                           self.settings.retry_backoff_max_s)
        log.info("event=event_nacked event_id=%s retry=%s state=%s", event_id, retry, state)
        self.more = True
        return state

    def release(self, deliveries) -> None:
        """Give events back untouched (drain, fast stop), with the runs behind them: claimable
        again at once, attempt not counted."""
        ids = []
        for delivery in deliveries:
            self._forget(delivery.event_id, delivery.key)
            ids.append(delivery.event_id)
        self.flush()
        self._give_back(ids + self._take_runs([delivery.key for delivery in deliveries]))

    def release_runs(self) -> None:
        """Give back every follower not handed out yet (drain, fast stop)."""
        for doc in self.ready:
            self._forget(doc["o"]["_id"], doc["o"]["key"])
        ids = [doc["o"]["_id"] for doc in self.ready]
        self.ready.clear()
        self.flush()
        self._give_back(ids + self._take_runs(list(self.runs)))

    def _take_runs(self, keys) -> list[str]:
        return [doc["o"]["_id"] for key in keys for doc in self.runs.pop(key, ())]

    def _give_back(self, ids: list[str]) -> None:
        if ids:
            self._call("release", self.store.release, self.owner, ids)
            log.info("event=events_released count=%d", len(ids))

    def _forget(self, event_id: str, key: str) -> None:
        if self.keys.get(key) == event_id:
            del self.keys[key]

    def flush(self) -> None:
        """Write the queued acks in one store call."""
        if not self._acks or self._retry_at is not None:
            return
        acks, self._acks = self._acks, []
        if self._call("ack", self.store.ack, self.owner, acks) is False:
            self._acks[:0] = acks

    def extend(self, event_ids: list[str]) -> None:
        """Keep the leases of the given events and of every follower held alive."""
        event_ids = event_ids + [doc["o"]["_id"] for doc in self.ready]
        event_ids += [doc["o"]["_id"] for run in self.runs.values() for doc in run]
        if event_ids:
            self._call("extend_leases", self.store.extend_leases, self.owner, event_ids,
                       self.settings.lease_s)

    def _call(self, what: str, function, *args):
        """One store call; on failure log it, schedule a retry turn, and return False."""
        try:
            result = function(*args)
        except StoreError as exc:
            self._store_failed(what, exc)
            return False
        if self._store_error is not None:
            log.info("event=store_recovered op=%s", what)
            self._store_error = None
        return result

    def _store_failed(self, what: str, exc: Exception) -> None:
        if self._store_error != str(exc):
            log.error("event=store_call_failed op=%s error=%r retry_in_s=%g", what, str(exc), STORE_RETRY_S)
        self._store_error = str(exc)
        self._retry_at = time.monotonic() + STORE_RETRY_S

    # --- timers ---------------------------------------------------------------------------------
    def next_timer(self) -> float | None:
        return self._retry_at

    def check_timers(self, now: float) -> None:
        if self._retry_at is not None and now >= self._retry_at:
            self._retry_at = None
            self.more = True
            self.flush()

    @property
    def pending_acks(self) -> int:
        return len(self._acks)

    @property
    def store_error(self) -> str | None:
        return self._store_error
