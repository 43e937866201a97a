"""The rate limiter's store writer (ratelimiter/storewriter.py): built without a thread, writes in
order off the loop, a lingering outcome goes with the next write, every failure reaches its
waiter. A real SQLite store in a temporary file."""
from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from frontdesk.ratelimiter.storewriter import StoreWriter
from frontdesk.store import StoreError
from frontdesk.store.base import JournalEntry
from tests.unit.limiter_parts import settled, sqlite_store, started_writer


def entry(event_id: str, state: str = "done") -> JournalEntry:
    return JournalEntry(event_id, 1, "fp", state, {"path": "/v2/bot/message/push"}, {"result": {}})


def test_building_a_writer_starts_no_thread(tmp_path):
    with sqlite_store(tmp_path) as store:
        before = threading.active_count()
        StoreWriter(store)
        assert threading.active_count() == before


def test_a_lingering_outcome_waits_for_the_next_write_and_goes_with_it(tmp_path):
    with sqlite_store(tmp_path) as store:
        async def main():
            async with started_writer(store, linger_s=60) as writer:
                lingering = writer.journal([entry("a")], linger=True)
                await settled(writer)            # any write takes the lingering ones along
                assert lingering.done() and store.journal_get("a", 1).state == "done"
        asyncio.run(main())


def test_closing_writes_what_lingers(tmp_path):
    with sqlite_store(tmp_path) as store:
        async def main():
            async with started_writer(store, linger_s=60) as writer:
                writer.journal([entry("a")], linger=True)
        asyncio.run(main())
        assert store.journal_get("a", 1).state == "done"


def test_work_returns_its_result_and_a_failure_reaches_every_waiter(tmp_path):
    with sqlite_store(tmp_path) as store:
        async def main():
            async with started_writer(store) as writer:
                assert await writer.call(lambda s: s.journal_get("none", 1)) is None
                with pytest.raises(ZeroDivisionError):
                    await writer.call(lambda s: 1 / 0)
                store.close()
                first, second = writer.journal([entry("a")]), writer.journal([entry("b")])
                for future in (first, second):
                    with pytest.raises(StoreError):
                        await future
        asyncio.run(main())


def test_a_write_nobody_waits_for_logs_its_failure(tmp_path, caplog):
    with sqlite_store(tmp_path) as store:
        async def main():
            async with started_writer(store) as writer:
                writer.call_unawaited("profile_cache_write", lambda s: 1 / 0)
                await settled(writer)
        with caplog.at_level(logging.WARNING, logger="frontdesk.ratelimiter"):
            asyncio.run(main())
    assert "event=store_write_failed what=profile_cache_write reason='division by zero'" in caplog.text


def recorded_transactions(store) -> tuple[list[tuple[str, list[str]]], threading.Event]:
    """Each journal transaction the store is given, as (where, event ids): "thread" (it may wait)
    or "loop" (written at once); and an Event set at the first."""
    transactions: list[tuple[str, list[str]]] = []
    written = threading.Event()
    put_many, put_many_nowait = store.journal_put_many, store.journal_put_many_nowait

    def on_thread(entries):
        put_many(entries)
        transactions.append(("thread", [e.event_id for e in entries]))
        written.set()

    def on_loop(entries):
        if not put_many_nowait(entries):
            return False
        transactions.append(("loop", [e.event_id for e in entries]))
        written.set()
        return True
    store.journal_put_many, store.journal_put_many_nowait = on_thread, on_loop
    return transactions, written


def test_the_writes_of_one_loop_turn_are_written_together_at_its_end(tmp_path):
    """Calls started in one turn share one transaction: nothing is written while the turn goes on
    (the thread is given the time to take the first write, were it handed over), then both
    entries at once, on the loop: the thread has nothing to do and the store's lock is free."""
    with sqlite_store(tmp_path) as store:
        transactions, written = recorded_transactions(store)

        async def main():
            async with started_writer(store) as writer:
                first = writer.journal([entry("a", "started")])
                assert not written.wait(0.2)   # still this turn: not written yet
                second = writer.journal([entry("b", "started")])
                await asyncio.gather(first, second)
        asyncio.run(main())
        assert transactions == [("loop", ["a", "b"])]


def test_an_outcome_written_at_once_is_written_within_the_turn_with_what_waited(tmp_path):
    """An outcome whose caller was already answered does not wait for the end of the turn: a
    rate limiter killed right after the answer should find it written."""
    with sqlite_store(tmp_path) as store:
        transactions, written = recorded_transactions(store)

        async def main():
            async with started_writer(store) as writer:
                started = writer.journal([entry("a", "started")])
                outcome = writer.journal_at_once([entry("b", "failed")])
                assert written.is_set()   # the same turn still: written already
                await asyncio.gather(started, outcome)
        asyncio.run(main())
        assert transactions == [("loop", ["a", "b"])]


def test_while_another_writer_holds_the_store_the_turns_entries_go_to_the_thread(tmp_path):
    """The loop never waits for the store: with the writer lock taken (the receiver's fsync,
    another process's transaction) the entries go to the thread, which writes them once it frees."""
    with sqlite_store(tmp_path) as store, sqlite_store(tmp_path) as other:
        transactions, written = recorded_transactions(store)
        holding, release = threading.Event(), threading.Event()

        def hold(conn):
            holding.set()
            release.wait(30)
        holder = threading.Thread(target=lambda: other._journal._db.transaction(hold))
        holder.start()
        assert holding.wait(30)

        async def main():
            async with started_writer(store) as writer:
                started = writer.journal([entry("a", "started")])
                await asyncio.sleep(0)     # the turn ends: the entries are handed to the thread
                assert not written.is_set() and store.journal_get("a", 1) is None
                release.set()
                await started
        asyncio.run(main())
        holder.join()
        assert transactions == [("thread", ["a"])]


def test_a_journal_entry_never_overtakes_a_write_the_thread_has(tmp_path):
    """In order: while the thread has work handed to it, the next turn's entries go after it."""
    with sqlite_store(tmp_path) as store:
        transactions, written = recorded_transactions(store)
        gate = threading.Event()

        async def main():
            async with started_writer(store) as writer:
                slow = writer.call(lambda s: gate.wait(30))
                await asyncio.sleep(0)     # handed to the thread, which now waits at the gate
                started = writer.journal([entry("a", "started")])
                await asyncio.sleep(0)
                assert not written.is_set()
                gate.set()
                await asyncio.gather(slow, started)
        asyncio.run(main())
        assert transactions == [("thread", ["a"])]
