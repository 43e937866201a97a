"""The call journal's rules and the rate limiter's one thread for store writes.

At most once per (event, n-th call): before a call with effects goes out its journal entry says
"started" with the exact HTTP request; after the answer, "done" or "failed". A repeated call is
answered from the journal (ratelimiter/limiter.py decides what a "started" entry allows).

The event loop never writes to the store itself: a write waits for the store's writer lock, which
the receiver holds through every fsync. `StoreWriter` is one thread that does the writes in order
and settles an asyncio future for each; journal entries queued together go in one transaction.

The rate limiter journals every call twice, and only the first write ("started") holds the call
back. The "done" of a request LINE drops a repeat of (a retry key, a reply token) lingers up to
OUTCOME_LINGER_S for the next "started" and goes in its transaction: one transaction and one
thread wake-up per call instead of two (docs/benchmarks.md). That costs no safety: a call leaves
"in flight" (where a repeat finds its answer) only once its outcome is written, and a "done" lost
with the process leaves "started", which is sent again and dropped by LINE: delivered once, as it
was. Other outcomes go at once: a lost "done" of any other call would make its repeat "outcome
unknown", and a lost "failed" reply whose token LINE never used would be re-sent as a reply, not as
a push, once the token is too old.
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
OUTCOME_LINGER_S = 0.02


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
    """Store writes off the event loop, in order; each one's outcome settles its future.
    Its methods are called on the event loop; the thread only writes."""

    def __init__(self, store: Store, loop: asyncio.AbstractEventLoop):
        self._store = store
        self._loop = loop
        self._queue: queue.SimpleQueue = queue.SimpleQueue()   # lists of writes, in order
        self._lingering: list[_Write] = []                     # "done" outcomes waiting for company
        self._linger_timer: asyncio.TimerHandle | None = None
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()

    def journal(self, entries: list[JournalEntry], linger: bool = False) -> asyncio.Future:
        """Write journal entries; the future is done once they are in the store. linger: they may
        wait up to OUTCOME_LINGER_S to go with the next write."""
        write = _Write(self._loop.create_future(), entries, None)
        if linger:
            self._lingering.append(write)
            if self._linger_timer is None:
                self._linger_timer = self._loop.call_later(OUTCOME_LINGER_S, self._send, [])
        else:
            self._send([write])
        return write.future

    def call(self, work: Callable[[Store], object]) -> asyncio.Future:
        """Run work(store) on the writer thread; the future holds its result or exception."""
        write = _Write(self._loop.create_future(), None, work)
        self._send([write])
        return write.future

    async def close(self) -> None:
        """Finish every write (lingering ones too), then stop the thread."""
        self._send([])
        self._queue.put(_STOP)
        await self._loop.run_in_executor(None, self._thread.join)

    def _send(self, writes: list[_Write]) -> None:
        """Hand writes to the thread behind the outcomes that lingered (one wake-up for all)."""
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        writes, self._lingering = self._lingering + writes, []
        if writes:
            self._queue.put(writes)

    def _run(self) -> None:
        while True:
            lists = [self._queue.get()]
            while True:
                try:
                    lists.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stopping = lists[-1] is _STOP
            outcomes = self._write([w for writes in lists if writes is not _STOP for w in writes])
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
