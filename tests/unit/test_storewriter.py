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


def recorded_transactions(store) -> tuple[list[list[str]], threading.Event]:
    """The event ids of each journal transaction the store is given, and an Event set at the first."""
    transactions: list[list[str]] = []
    handed = threading.Event()
    put_many = store.journal_put_many

    def recording(entries):
        transactions.append([e.event_id for e in entries])
        handed.set()
        put_many(entries)
    store.journal_put_many = recording
    return transactions, handed


def test_the_writes_of_one_loop_turn_reach_the_thread_together_at_its_end(tmp_path):
    """Calls started in one turn share one hand-off and one transaction: the thread is handed
    nothing while the turn goes on (it is given the time to take the first write, were it handed
    over), and then both entries at once."""
    with sqlite_store(tmp_path) as store:
        transactions, handed = recorded_transactions(store)

        async def main():
            async with started_writer(store) as writer:
                first = writer.journal([entry("a", "started")])
                assert not handed.wait(0.2)   # still this turn: not handed to the thread yet
                second = writer.journal([entry("b", "started")])
                await asyncio.gather(first, second)
        asyncio.run(main())
        assert transactions == [["a", "b"]]


def test_an_outcome_written_at_once_reaches_the_thread_within_the_turn_with_what_waited(tmp_path):
    """An outcome whose caller was already answered does not wait for the end of the turn: a
    rate limiter killed right after the answer should find it written."""
    with sqlite_store(tmp_path) as store:
        transactions, handed = recorded_transactions(store)

        async def main():
            async with started_writer(store) as writer:
                started = writer.journal([entry("a", "started")])
                outcome = writer.journal_at_once([entry("b", "failed")])
                assert handed.wait(30)   # the same turn still: handed over already
                await asyncio.gather(started, outcome)
        asyncio.run(main())
        assert transactions == [["a", "b"]]
