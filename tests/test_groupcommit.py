"""The group committer with its real thread and clock: writes that share a commit while they come
often, a lone write that does not wait, and one bad write among a group on a real SQLite file.
Its rules one by one are tests/unit/test_groupcommit.py's."""
from __future__ import annotations

import threading
import time

import pytest

from frontdesk.store.groupcommit import GroupCommitter, WriteRequest
from tests.helpers import wait_until


class Recorder:
    """A commit function that records the size of every group and answers each request."""

    def __init__(self):
        self.groups: list[int] = []

    def __call__(self, take) -> bool:
        requests = take()
        self.groups.append(len(requests))
        for request in requests:
            request.result = "stored"
        return bool(requests)


def write_in_thread(committer: GroupCommitter, request: WriteRequest, results: list) -> threading.Thread:
    thread = threading.Thread(target=lambda: results.append(committer.write(request)))
    thread.start()
    return thread


def write_burst(committer: GroupCommitter, threads: int = 8, each: int = 1) -> None:
    """Many writes at once: the committer learns that writes come often."""
    workers = [threading.Thread(target=lambda: [committer.write(WriteRequest()) for _ in range(each)])
               for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)


@pytest.fixture
def committer():
    """committer(linger_s) -> (GroupCommitter, its Recorder); every one stopped after the test."""
    made = []

    def make(linger_s: float, learned_busy: bool = False):
        commit = Recorder()
        made.append(GroupCommitter("test", commit, lambda: None, linger_s=linger_s).start())
        if learned_busy:   # it has seen writes come often
            write_burst(made[-1])
            commit.groups.clear()
        return made[-1], commit

    yield make
    for each in made:
        each.stop()


def test_while_writes_come_often_a_write_waits_for_the_next_to_share_its_commit(committer):
    writer, commit = committer(0.5, learned_busy=True)
    results: list = []
    first = write_in_thread(writer, WriteRequest(), results)
    wait_until(lambda: writer._requests.qsize() == 0, message="the writer took the first request")
    assert writer.write(WriteRequest()) == "stored"   # joins the lingering group
    first.join(timeout=5)
    assert results == ["stored"] and commit.groups == [2]


def test_after_a_quiet_spell_a_lone_write_commits_without_lingering(committer):
    writer, commit = committer(10.0)
    started = time.monotonic()
    assert writer.write(WriteRequest()) == "stored"
    assert time.monotonic() - started < 5.0 and commit.groups == [1]   # not the 10 s linger


def _event(event_id: str, text: str = "hi") -> dict:
    return {"type": "message", "timestamp": 1, "webhookEventId": event_id,
            "source": {"type": "user", "userId": "U" + event_id}, "message": {"type": "text", "text": text}}


def test_one_unstorable_write_fails_alone_and_the_rest_of_its_group_is_stored(tmp_path):
    """On a real SQLite file: a lone surrogate (SQLite cannot encode it) in one of 20 appends that
    share a commit; that append gets its error, the other 19 are stored."""
    import fcntl
    import os

    from frontdesk.store.sqlite import SQLiteStore
    from frontdesk.store.sqlite_connections import WRITER_LOCK_SUFFIX

    store = SQLiteStore(f"sqlite:///{tmp_path / 'fd.db'}").open()
    finished = []
    try:
        lock = os.open(str(tmp_path / "fd.db") + WRITER_LOCK_SUFFIX, os.O_RDONLY)
        fcntl.flock(lock, fcntl.LOCK_EX)   # hold the writer: the appends queue up and form one group
        blocked = store.append_nowait("Ubot", [_event("first")], 0, None, finished.append)
        handles = [store.append_nowait("Ubot", [_event(f"ok{n:02d}")], 0, None, finished.append)
                   for n in range(10)]
        bad = store.append_nowait("Ubot", [_event("bad", text="\ud800 alone")], 0, None, finished.append)
        handles += [store.append_nowait("Ubot", [_event(f"ok{n:02d}")], 0, None, finished.append)
                    for n in range(10, 19)]
        fcntl.flock(lock, fcntl.LOCK_UN)
        os.close(lock)
        wait_until(lambda: len(finished) == 21, timeout=10, message="every append answered")
        assert blocked.error is None
        assert bad.error is not None and "cannot be stored" in str(bad.error)
        assert [h.error for h in handles] == [None] * 19
        stored = {doc["o"]["_id"] for doc in store.claim("test", 100, 60.0)}
        assert stored == {"first", *(f"ok{n:02d}" for n in range(19))}
        store.health()   # one refused write is no outage
    finally:
        store.close()
