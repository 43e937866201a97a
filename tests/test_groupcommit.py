"""The group committer in-process: requests that share a commit, the linger, the deadline."""
from __future__ import annotations

import threading
import time

import pytest

from frontdesk.store.base import StoreUnavailable
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
    writer, commit = committer(1.0, learned_busy=True)
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


def test_without_linger_a_lone_write_commits_at_once(committer):
    writer, commit = committer(0.0)
    assert [writer.write(WriteRequest()) for _ in range(3)] == ["stored"] * 3
    assert commit.groups == [1, 1, 1]


def test_a_request_past_its_deadline_while_the_writer_lingers_is_refused_and_never_written(committer):
    writer, commit = committer(0.5, learned_busy=True)
    with pytest.raises(StoreUnavailable, match="deadline"):
        writer.write(WriteRequest(deadline=time.monotonic() + 0.05))
    wait_until(lambda: commit.groups, message="the lingering group committed")
    assert commit.groups == [0]   # taken by nobody: the late request was never written


def test_a_submitted_write_calls_back_and_an_abandoned_one_is_never_written(committer):
    writer, commit = committer(0.0)
    done = threading.Event()
    request = WriteRequest()
    writer.submit(request, lambda finished: done.set())
    assert done.wait(5) and request.result == "stored" and request.error is None
    assert writer.abandon(request) is False        # already written: its outcome stands
    blocked = threading.Event()
    slow_commit_started = threading.Event()
    original = commit.__call__

    def slow(take):   # the writer is busy with an earlier group while the next request waits
        slow_commit_started.set()
        blocked.wait(5)
        return original(take)
    writer._commit = slow
    first, late = WriteRequest(), WriteRequest()
    writer.submit(first, lambda finished: None)
    assert slow_commit_started.wait(5)
    writer.submit(late, lambda finished: None)
    assert writer.abandon(late) is True            # not taken yet: given up, never written
    blocked.set()
    wait_until(lambda: late.finished.is_set(), message="the abandoned request answered")
    assert late.error is not None and late.result is None



def _event(event_id: str, text: str = "hi") -> dict:
    return {"type": "message", "timestamp": 1, "webhookEventId": event_id,
            "source": {"type": "user", "userId": "U" + event_id}, "message": {"type": "text", "text": text}}


def test_one_unstorable_write_fails_alone_and_the_rest_of_its_group_is_stored(tmp_path):
    """Issue 14, defect 4, on a real SQLite file: a lone surrogate (SQLite cannot encode it) in one
    of 20 appends that share a commit; that append gets its error, the other 19 are stored."""
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


def test_after_a_failed_write_a_probe_clears_the_error_once_the_store_can_write_again():
    """/healthz's probe in-process: asked while the last write failed, run on the writer thread at
    most once per PROBE_INTERVAL_S, and a success clears last_error with no write needed."""
    from frontdesk.store.groupcommit import PROBE_INTERVAL_S

    disk_full = threading.Event()
    disk_full.set()
    probes = []

    def commit(take):
        take()
        if disk_full.is_set():
            raise StoreUnavailable("database or disk is full")
        return True

    def probe():
        probes.append(time.monotonic())
        if disk_full.is_set():
            raise StoreUnavailable("database or disk is full")

    committer = GroupCommitter("test", commit, lambda: None, probe=probe).start()
    try:
        with pytest.raises(StoreUnavailable):
            committer.write(WriteRequest())
        assert "disk is full" in committer.last_error
        committer.ask_probe()
        committer.ask_probe()   # within the interval: no second probe
        wait_until(lambda: probes, timeout=5)
        assert "disk is full" in committer.last_error and len(probes) == 1
        disk_full.clear()       # the disk has room again
        wait_until(lambda: committer.ask_probe() or committer.last_error is None,
                   timeout=5 + PROBE_INTERVAL_S, interval=0.05, message="the probe cleared the error")
        assert len(probes) == 2
        probes.clear()
        committer.ask_probe()   # healthy: nothing to find out
        committer.write(WriteRequest())
        assert probes == []
    finally:
        committer.stop()
