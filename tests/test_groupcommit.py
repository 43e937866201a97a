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


def test_while_writes_come_often_a_write_waits_for_the_next_to_share_its_commit():
    commit = Recorder()
    committer = GroupCommitter("test", commit, lambda: None, linger_s=1.0)
    try:
        write_burst(committer)
        commit.groups.clear()
        results: list = []
        first = write_in_thread(committer, WriteRequest(), results)
        wait_until(lambda: committer._requests.qsize() == 0, message="the writer took the first request")
        assert committer.write(WriteRequest()) == "stored"   # joins the lingering group
        first.join(timeout=5)
        assert results == ["stored"] and commit.groups == [2]
    finally:
        committer.stop()


def test_after_a_quiet_spell_a_lone_write_commits_without_lingering():
    commit = Recorder()
    committer = GroupCommitter("test", commit, lambda: None, linger_s=10.0)
    try:
        started = time.monotonic()
        assert committer.write(WriteRequest()) == "stored"
        assert time.monotonic() - started < 5.0 and commit.groups == [1]   # not the 10 s linger
    finally:
        committer.stop()


def test_without_linger_a_lone_write_commits_at_once():
    commit = Recorder()
    committer = GroupCommitter("test", commit, lambda: None, linger_s=0.0)
    try:
        assert [committer.write(WriteRequest()) for _ in range(3)] == ["stored"] * 3
        assert commit.groups == [1, 1, 1]
    finally:
        committer.stop()


def test_a_request_past_its_deadline_while_the_writer_lingers_is_refused_and_never_written():
    commit = Recorder()
    committer = GroupCommitter("test", commit, lambda: None, linger_s=0.5)
    try:
        write_burst(committer)
        commit.groups.clear()
        with pytest.raises(StoreUnavailable, match="deadline"):
            committer.write(WriteRequest(deadline=time.monotonic() + 0.05))
        wait_until(lambda: commit.groups, message="the lingering group committed")
        assert commit.groups == [0]   # taken by nobody: the late request was never written
    finally:
        committer.stop()
