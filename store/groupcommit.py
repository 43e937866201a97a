"""Group commit: one writer thread per process commits every queued append in one transaction.

Callers (the receiver's request threads) block until their own events are durable; many
requests share one fsync / one majority write. A request whose deadline passed before the
writer picked it up is answered StoreUnavailable and not written, so a webhook that would be
answered too late gets a fast 503 instead and stores nothing. Used by both backends.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable

from .base import AppendResult, StoreUnavailable

log = logging.getLogger("frontdesk.store.groupcommit")

MAX_BATCH_REQUESTS = 1000   # requests committed in one transaction at most
_STOP = object()


class AppendRequest:
    __slots__ = ("destination", "events", "received_at_ms", "deadline", "result", "error", "finished")

    def __init__(self, destination: str, events: list[dict], received_at_ms: int, deadline: float | None):
        self.destination = destination
        self.events = events
        self.received_at_ms = received_at_ms
        self.deadline = deadline
        self.result: AppendResult | None = None   # set by the commit function
        self.error: Exception | None = None
        self.finished = threading.Event()


def follow_change(event: dict) -> tuple[str, str, float] | None:
    """("follow" | "unfollow", userId, event time in epoch s) for a follow-state event, else None."""
    kind = event.get("type")
    user_id = (event.get("source") or {}).get("userId")
    if kind in ("follow", "unfollow") and isinstance(user_id, str) and user_id:
        return kind, user_id, event["timestamp"] / 1000.0
    return None


class GroupCommitter:
    """The writer thread. `commit(requests)` writes them all in one transaction, sets each
    request's result, and returns whether anything new was stored (then `notify()` runs)."""

    def __init__(self, name: str, commit: Callable[[list[AppendRequest]], bool],
                 notify: Callable[[], None], on_failure: Callable[[], None] = lambda: None):
        self.name = name
        self._commit = commit
        self._notify = notify
        self._on_failure = on_failure
        self._requests: queue.Queue = queue.Queue()
        self.last_error: str | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def append(self, destination: str, events: list[dict], received_at_ms: int,
               deadline: float | None) -> AppendResult:
        if self._stopped:
            raise StoreUnavailable(f"store {self.name} is closed")
        request = AppendRequest(destination, events, received_at_ms, deadline)
        self._requests.put(request)
        request.finished.wait()
        if request.error is not None:
            raise request.error
        return request.result

    def _run(self) -> None:
        while True:
            first = self._requests.get()
            if first is _STOP:
                return
            batch, stopping = [first], False
            while len(batch) < MAX_BATCH_REQUESTS:
                try:
                    item = self._requests.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            self._write(batch)
            if stopping:
                return

    def _write(self, batch: list[AppendRequest]) -> None:
        now = time.monotonic()
        live = []
        for request in batch:
            if request.deadline is not None and now > request.deadline:
                request.error = StoreUnavailable(
                    f"store {self.name}: the append deadline passed before the write started")
                request.finished.set()
            else:
                live.append(request)
        if not live:
            return
        stored = False
        try:
            stored = self._commit(live)
            self.last_error = None
        except Exception as exc:  # every caller must be answered, whatever went wrong
            self._on_failure()
            reason = f"store {self.name}: write failed: {exc}"
            if self.last_error != reason:
                log.error("store_write_failed store=%s error=%s", self.name, exc)
            self.last_error = reason
            for request in live:
                request.result, request.error = None, StoreUnavailable(reason)
        for request in live:
            request.finished.set()
        if stored:
            self._notify()

    def stop(self) -> None:
        """Finish what is queued, stop the thread, fail appends that raced with stopping."""
        if self._stopped:
            return
        self._stopped = True
        self._requests.put(_STOP)
        self._thread.join()
        while not self._requests.empty():
            request = self._requests.get_nowait()
            if request is not _STOP:
                request.error = StoreUnavailable(f"store {self.name} is closed")
                request.finished.set()
