"""The rate limiter's thread for store writes (and a second one for users' records, userdata.py).

The event loop never waits for the store: a write waits for the store's writer lock, which the
receiver holds through every fsync. `StoreWriter` is one thread that does the writes in order
and settles an asyncio future for each; journal entries queued together go in one transaction.
The writes of one loop turn (the "started" of every call that goes out in it) are handed over
together, at the end of the turn: one wake-up of the thread per turn, not one per call. When the
thread has nothing to do and the store's lock is free that moment, the turn's journal entries are
written on the loop instead (`journal_put_many_nowait`, ~0.1 ms): at 300 events/s the hand-off to
the thread and back held each reply 0.25-1.3 ms at the median and 1.2-4.8 ms at p90 before it
went out, on a busy machine. An outcome that must not wait (journal.py says which) is handed over
at once.

A write may linger: the call journal's "done" of a request LINE drops a repeat of waits up to
OUTCOME_LINGER_S for the next write and goes in its transaction (journal.py says why that is
safe): one transaction and one thread wake-up per call instead of two (docs/benchmarks.md).
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
from typing import Callable

from frontdesk.store import Store
from frontdesk.store.base import JournalEntry

log = logging.getLogger("frontdesk.ratelimiter")

_STOP = object()
OUTCOME_LINGER_S = 0.02


class _Write:
    __slots__ = ("future", "entries", "work")

    def __init__(self, future: asyncio.Future, entries: list[JournalEntry] | None,
                 work: Callable[[Store], object] | None):
        self.future, self.entries, self.work = future, entries, work


class StoreWriter:
    """Store writes off the event loop, in order; each one's outcome settles its future.

    Built, then `start(loop)` starts its thread; its methods are called on that loop, the thread
    only writes. `close()` finishes every write and stops the thread."""

    def __init__(self, store: Store, linger_s: float = OUTCOME_LINGER_S):
        self._store = store
        self._linger_s = linger_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()   # lists of writes, in order
        self._lingering: list[_Write] = []                     # writes waiting for company
        self._linger_timer: asyncio.TimerHandle | None = None
        self._this_turn: list[_Write] = []                     # writes of this loop turn, handed over at its end
        self._handed = 0                                       # lists handed to the thread, not settled yet
        self._thread: threading.Thread | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()

    def journal(self, entries: list[JournalEntry], linger: bool = False) -> asyncio.Future:
        """Write journal entries; the future is done once they are in the store. linger: they may
        wait up to OUTCOME_LINGER_S to go with the next write."""
        write = _Write(self._loop.create_future(), entries, None)
        if linger:
            self._lingering.append(write)
            if self._linger_timer is None:
                self._linger_timer = self._loop.call_later(self._linger_s, self._send)
        else:
            self._at_end_of_turn(write)
        return write.future

    def journal_at_once(self, entries: list[JournalEntry]) -> asyncio.Future:
        """Write journal entries, handed to the thread now (with what waits for the end of the
        turn or lingers): its caller has been answered, and a kill should find them written."""
        write = _Write(self._loop.create_future(), entries, None)
        self._this_turn.append(write)
        self._send()
        return write.future

    def call(self, work: Callable[[Store], object]) -> asyncio.Future:
        """Run work(store) on the writer thread; the future holds its result or exception."""
        write = _Write(self._loop.create_future(), None, work)
        self._at_end_of_turn(write)
        return write.future

    def call_unawaited(self, what: str, work: Callable[[Store], object]) -> None:
        """A write whose outcome nobody waits for: a failure is logged as `event=store_write_failed
        what=<what>`."""
        def written(future: asyncio.Future) -> None:
            if future.exception() is not None:
                log.warning("event=store_write_failed what=%s reason=%r", what, str(future.exception()))
        self.call(work).add_done_callback(written)

    async def close(self) -> None:
        """Finish every write (lingering ones too), then stop the thread."""
        self._send()
        self._queue.put(_STOP)
        await self._loop.run_in_executor(None, self._thread.join)

    def _at_end_of_turn(self, write: _Write) -> None:
        """Queue a write for the end of this loop turn (a callback queued now runs after every
        callback of this turn)."""
        if not self._this_turn:
            self._loop.call_soon(self._send)
        self._this_turn.append(write)

    def _send(self) -> None:
        """Hand the lingering writes and this turn's to the thread (one wake-up for all)."""
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        writes, self._lingering, self._this_turn = self._lingering + self._this_turn, [], []
        if writes and not self._written_now(writes):
            self._handed += 1
            self._queue.put(writes)

    def _written_now(self, writes: list[_Write]) -> bool:
        """Journal entries written on the loop, in order: only while the thread has nothing (a
        write handed to it earlier goes first), and only if the store need not wait."""
        if self._handed or any(w.entries is None for w in writes):
            return False
        try:
            if not self._store.journal_put_many_nowait([entry for w in writes for entry in w.entries]):
                return False
            error = None
        except Exception as exc:   # every waiter must hear of it
            error = exc
        _settle([(w.future, None, error) for w in writes])
        return True

    def _run(self) -> None:
        while True:
            lists = [self._queue.get()]
            while True:
                try:
                    lists.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stopping = lists[-1] is _STOP
            handed = [writes for writes in lists if writes is not _STOP]
            outcomes = self._write([w for writes in handed for w in writes])
            if handed:
                self._loop.call_soon_threadsafe(self._settle_handed, outcomes, len(handed))
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


    def _settle_handed(self, outcomes, handed: int) -> None:
        """On the loop: what the thread wrote is settled, and it has that many fewer to do."""
        self._handed -= handed
        _settle(outcomes)


def _settle(outcomes) -> None:
    for future, result, error in outcomes:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
