"""The call journal's rules and the rate limiter's one thread for store writes.

At most once per (event, n-th call): before a call with effects goes out its journal entry says
"started" with the exact HTTP request; after the answer, "done" or "failed". A repeated call is
answered from the journal (ratelimiter/limiter.py decides what a "started" entry allows).

The event loop never writes to the store itself: a write waits for the store's writer lock, which
the receiver holds through every fsync. `StoreWriter` is one thread that does the writes in order
and settles an asyncio future for each; journal entries queued together go in one transaction
(the rate limiter journals every call twice).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import queue
import threading
from typing import Callable

from frontdesk.store import Store
from frontdesk.store.base import JournalEntry

log = logging.getLogger("frontdesk.ratelimiter")

_STOP = object()


def fingerprint(method: str, args) -> str:
    """Identifies a call's content, so a journal entry is never used to answer a different call.
    Raises ValueError for args nested too deep for JSON (LINE takes JSON bodies)."""
    try:
        text = json.dumps([method, args], sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          default=lambda value: value.hex() if isinstance(value, bytes) else repr(value))
    except RecursionError:
        raise ValueError(f"{method}: args nest too deeply to be sent as JSON") from None
    return hashlib.sha256(text.encode()).hexdigest()


def journaled(method: str, args: dict) -> bool:
    """Calls with effects are journaled; reads (profile, content, GET) can simply be made again."""
    if method == "call":
        return args.get("method") != "GET"
    return method in ("reply", "push", "multicast", "broadcast", "narrowcast")


class _Write:
    __slots__ = ("future", "entries", "work")

    def __init__(self, future: asyncio.Future, entries: list[JournalEntry] | None,
                 work: Callable[[Store], object] | None):
        self.future, self.entries, self.work = future, entries, work


class StoreWriter:
    """Store writes off the event loop, in order; each one's outcome settles its future."""

    def __init__(self, store: Store, loop: asyncio.AbstractEventLoop):
        self._store = store
        self._loop = loop
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()

    def journal(self, entries: list[JournalEntry]) -> asyncio.Future:
        """Write journal entries; the future is done once they are in the store."""
        future = self._loop.create_future()
        self._queue.put(_Write(future, entries, None))
        return future

    def call(self, work: Callable[[Store], object]) -> asyncio.Future:
        """Run work(store) on the writer thread; the future holds its result or exception."""
        future = self._loop.create_future()
        self._queue.put(_Write(future, None, work))
        return future

    def stop(self) -> None:
        """Finish every queued write, then stop the thread."""
        self._queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stopping = batch[-1] is _STOP
            writes = [w for w in batch if w is not _STOP]
            outcomes = self._write(writes)
            if outcomes:
                self._loop.call_soon_threadsafe(_settle, outcomes)
            if stopping:
                return

    def _write(self, writes: list[_Write]) -> list[tuple[asyncio.Future, object, BaseException | None]]:
        outcomes = []
        journal = [w for w in writes if w.entries is not None]
        if journal:
            error = None
            try:
                self._store.journal_put_many([entry for w in journal for entry in w.entries])
            except Exception as exc:   # every waiter must hear of it
                error = exc
            outcomes += [(w.future, None, error) for w in journal]
        for write in writes:
            if write.work is not None:
                try:
                    outcomes.append((write.future, write.work(self._store), None))
                except Exception as exc:
                    outcomes.append((write.future, None, exc))
        return outcomes


def _settle(outcomes) -> None:
    for future, result, error in outcomes:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
