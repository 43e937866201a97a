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


def test_writes_arriving_within_the_linger_share_one_commit():
    commit = Recorder()
    committer = GroupCommitter("test", commit, lambda: None, linger_s=1.0)
    try:
        results: list = []
        first = write_in_thread(committer, WriteRequest(), results)
        wait_until(lambda: committer._requests.qsize() == 0, message="the writer took the first request")
        assert committer.write(WriteRequest()) == "stored"   # joins the lingering group
        first.join(timeout=5)
        assert results == ["stored"] and commit.groups == [2]
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
        with pytest.raises(StoreUnavailable, match="deadline"):
            committer.write(WriteRequest(deadline=time.monotonic() + 0.05))
        wait_until(lambda: commit.groups, message="the lingering group committed")
        assert commit.groups == [0]   # taken by nobody: the late request was never written
    finally:
        committer.stop()
