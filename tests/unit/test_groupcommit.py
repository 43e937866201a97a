"""The group commit's layers in-process: when a group lingers (Linger), how one group is written
and answered (BatchWriter: taken or abandoned, deadlines, outages, the request at fault written
apart), how groups are gathered and probes scheduled (GroupCommitter with a clock the test moves)."""
from __future__ import annotations

import threading

import pytest

from frontdesk.store.base import StoreGone, StoreUnavailable
from frontdesk.store.groupcommit import (LINGER_BELOW_INTERVAL, MAX_BATCH_REQUESTS, PROBE_INTERVAL_S,
                                         BatchWriter, GroupCommitter, Linger, WriteRequest)
from tests.helpers import wait_until
from tests.unit.clock import Clock


class Commit:
    """A commit function that records each group and answers each request; `refuse` names
    requests whose data it cannot store, `outage` makes the store unable to write."""

    def __init__(self):
        self.groups: list[list[WriteRequest]] = []
        self.refuse: set[int] = set()
        self.outage: Exception | None = None

    def __call__(self, take) -> bool:
        if self.outage is not None:
            raise self.outage
        group = take()
        if any(id(request) in self.refuse for request in group):
            raise ValueError("cannot encode")
        self.groups.append(group)
        for request in group:
            request.result = "stored"
        return bool(group)


def answered(request: WriteRequest) -> bool:
    return request.answered


# --- Linger ----------------------------------------------------------------------------------------

def test_the_first_write_never_lingers():
    linger = Linger(0.005)
    linger.arrived(10.0)
    assert linger.wait_s() == 0.0


def test_writes_coming_faster_than_a_quarter_of_the_linger_make_a_group_linger():
    linger = Linger(0.004)
    for n in range(5):
        linger.arrived(10.0 + n * 0.0005)   # every 0.5 ms: below 1 ms
    assert linger.wait_s() == 0.004


def test_writes_at_a_trickle_do_not_linger():
    linger = Linger(0.004)
    for n in range(5):
        linger.arrived(10.0 + n * 0.1)
    assert linger.wait_s() == 0.0


def test_a_quiet_spell_after_a_burst_ends_the_lingering_gradually():
    linger = Linger(1.0)
    for n in range(10):
        linger.arrived(n * 0.01)
    assert linger.wait_s() == 1.0
    linger.arrived(0.09 + 100.0)   # one long gap weighs INTERVAL_WEIGHT of the average
    assert linger.wait_s() == 0.0


def test_without_a_linger_time_nothing_lingers():
    linger = Linger(0.0)
    for n in range(10):
        linger.arrived(n * 1e-6)
    assert linger.wait_s() == 0.0


def test_the_threshold_is_a_quarter_of_the_linger_time():
    linger = Linger(1.0)
    linger.arrived(0.0)
    linger.arrived(LINGER_BELOW_INTERVAL * 0.99)
    assert linger.wait_s() == 1.0


# --- BatchWriter -------------------------------------------------------------------------------------

def test_a_group_is_written_in_one_commit_and_every_request_answered():
    commit, done = Commit(), []
    writer = BatchWriter("test", commit, Clock())
    batch = [WriteRequest() for _ in range(3)]
    for request in batch:
        request.on_done = done.append
    assert writer.write(batch) is True
    assert commit.groups == [batch] and done == batch
    assert all(answered(r) and r.result == "stored" and r.error is None for r in batch)


def test_a_request_past_its_deadline_when_taken_is_never_written_and_told_so():
    clock, commit = Clock(100.0), Commit()
    late, in_time = WriteRequest(deadline=99.9), WriteRequest(deadline=100.0)
    BatchWriter("test", commit, clock).write([late, in_time])
    assert commit.groups == [[in_time]]
    assert isinstance(late.error, StoreUnavailable) and "deadline passed" in str(late.error)
    assert answered(late) and late.result is None and in_time.error is None


def test_an_abandoned_request_is_never_written():
    commit = Commit()
    writer = BatchWriter("test", commit, Clock())
    request, other = WriteRequest(), WriteRequest()
    assert writer.abandon(request) is True
    writer.write([request, other])
    assert commit.groups == [[other]] and request.error is not None and answered(request)


def test_a_taken_request_cannot_be_abandoned():
    commit = Commit()
    writer = BatchWriter("test", commit, Clock())
    request = WriteRequest()
    writer.write([request])
    assert writer.abandon(request) is False and request.result == "stored"


def test_a_group_of_only_abandoned_requests_commits_nothing_new():
    commit = Commit()
    writer = BatchWriter("test", commit, Clock())
    request = WriteRequest()
    writer.abandon(request)
    assert writer.write([request]) is False and commit.groups == [[]]


def test_an_outage_fails_every_request_with_the_reason_and_is_remembered():
    commit = Commit()
    commit.outage = StoreUnavailable("database or disk is full")
    writer = BatchWriter("fd.db", commit, Clock())
    batch = [WriteRequest(), WriteRequest()]
    assert writer.write(batch) is False
    assert {str(r.error) for r in batch} == {"store fd.db: write failed: database or disk is full"}
    assert writer.last_error == "store fd.db: write failed: database or disk is full"


def test_a_lost_file_fails_the_group_as_store_gone():
    commit = Commit()
    commit.outage = StoreGone("the database file was removed")
    batch = [WriteRequest()]
    BatchWriter("fd.db", commit, Clock()).write(batch)
    assert type(batch[0].error) is StoreGone


def test_a_write_that_succeeds_after_an_outage_clears_the_error():
    commit = Commit()
    writer = BatchWriter("test", commit, Clock())
    commit.outage = StoreUnavailable("I/O error")
    writer.write([WriteRequest()])
    commit.outage = None
    writer.write([WriteRequest()])
    assert writer.last_error is None


def test_the_one_request_the_store_cannot_encode_fails_alone_and_the_rest_are_stored():
    commit = Commit()
    batch = [WriteRequest() for _ in range(10)]
    commit.refuse = {id(batch[6])}
    assert BatchWriter("test", commit, Clock()).write(batch) is True
    assert [r.error is None for r in batch] == [n != 6 for n in range(10)]
    assert "this write cannot be stored: cannot encode" in str(batch[6].error)
    assert sorted(id(r) for group in commit.groups for r in group) == sorted(id(r) for r in batch if r is not batch[6])


def test_two_requests_at_fault_each_fail_alone():
    commit = Commit()
    batch = [WriteRequest() for _ in range(8)]
    commit.refuse = {id(batch[0]), id(batch[7])}
    BatchWriter("test", commit, Clock()).write(batch)
    assert [r.error is not None for r in batch] == [True] + [False] * 6 + [True]


def test_an_outage_while_writing_apart_fails_that_half_only():
    class OutageOnSecondCommit(Commit):
        calls = 0

        def __call__(self, take):
            self.calls += 1
            if self.calls == 2:   # the first half, written apart
                take()
                raise StoreUnavailable("lost connection")
            return super().__call__(take)

    commit = OutageOnSecondCommit()
    batch = [WriteRequest() for _ in range(4)]
    commit.refuse = {id(batch[3])}
    BatchWriter("test", commit, Clock()).write(batch)
    assert ["lost connection" in str(r.error) for r in batch] == [True, True, False, False]
    assert batch[2].result == "stored" and "cannot be stored" in str(batch[3].error)


def test_a_request_refused_alone_is_not_an_outage():
    commit = Commit()
    batch = [WriteRequest(), WriteRequest()]
    commit.refuse = {id(batch[1])}
    writer = BatchWriter("test", commit, Clock())
    writer.write(batch)
    assert writer.last_error is None


def test_a_failed_probe_is_remembered_and_a_passing_one_clears_it():
    writer = BatchWriter("test", Commit(), Clock())

    def full():
        raise StoreUnavailable("database or disk is full")
    writer.probe(full)
    assert "disk is full" in writer.last_error
    writer.probe(lambda: None)
    assert writer.last_error is None


# --- GroupCommitter ------------------------------------------------------------------------------------

def test_a_group_takes_everything_queued_and_a_queued_probe_is_answered_by_it():
    committer = GroupCommitter("test", Commit(), lambda: None, clock=Clock())
    requests = [WriteRequest() for _ in range(3)]
    committer.submit(requests[0], lambda r: None)
    committer._batches.note_failure(StoreUnavailable("full"))   # so that a probe is asked
    committer.ask_probe()
    for request in requests[1:]:
        committer.submit(request, lambda r: None)
    assert committer.next_group() == (requests, False)


def test_a_group_holds_at_most_max_batch_requests():
    committer = GroupCommitter("test", Commit(), lambda: None, clock=Clock())
    requests = [WriteRequest() for _ in range(MAX_BATCH_REQUESTS + 5)]
    for request in requests:
        committer.submit(request, lambda r: None)
    first, _ = committer.next_group()
    second, _ = committer.next_group()
    assert (len(first), len(second)) == (MAX_BATCH_REQUESTS, 5)


def test_stop_ends_the_group_being_gathered_and_fails_what_raced_with_it():
    committer = GroupCommitter("test", Commit(), lambda: None, clock=Clock())
    request = WriteRequest()
    committer.submit(request, lambda r: None)
    committer.stop()   # never started: nothing to join
    assert answered(request) and "closed" in str(request.error)
    with pytest.raises(StoreUnavailable, match="closed"):
        committer.submit(WriteRequest(), lambda r: None)
    with pytest.raises(StoreUnavailable, match="closed"):
        committer.write(WriteRequest())


def test_a_probe_is_asked_at_most_once_per_interval_and_only_while_writes_fail():
    clock = Clock(0.0)
    probes = []
    committer = GroupCommitter("test", Commit(), lambda: None, probe=lambda: probes.append(clock.now), clock=clock)
    committer.ask_probe()
    assert committer._requests.empty()                 # healthy: nothing to find out
    committer._batches.note_failure(StoreUnavailable("full"))
    committer.ask_probe()
    committer.ask_probe()                               # within the interval
    clock.now += PROBE_INTERVAL_S
    committer.ask_probe()
    assert committer._requests.qsize() == 2
    assert committer.next_group() == ([], False) and len(probes) == 1   # run on the writer thread
    assert committer.last_error is None                 # the probe passed


def test_the_writer_thread_commits_notifies_and_calls_back():
    commit, notified, done = Commit(), threading.Event(), threading.Event()
    committer = GroupCommitter("test", commit, notified.set).start()
    try:
        request = WriteRequest()
        committer.submit(request, lambda r: done.set())
        assert done.wait(10) and notified.wait(10) and request.result == "stored"
        assert committer.write(WriteRequest()) == "stored"
        assert committer.alive()
    finally:
        committer.stop()
    assert not committer.alive()


def test_a_write_whose_deadline_passes_before_it_is_taken_is_refused_and_never_written():
    blocked, release = threading.Event(), threading.Event()
    commit = Commit()

    def slow(take):   # the writer is busy with an earlier group while the next request waits
        blocked.set()
        release.wait(10)
        return commit(take)
    committer = GroupCommitter("test", slow, lambda: None).start()
    try:
        committer.submit(WriteRequest(), lambda r: None)
        assert blocked.wait(10)
        late = WriteRequest(deadline=0.0)   # long past by time.monotonic()
        with pytest.raises(StoreUnavailable, match="before its deadline"):
            committer.write(late)
        release.set()
        wait_until(lambda: commit.groups, message="the first group committed")
        assert all(late not in group for group in commit.groups)
    finally:
        release.set()
        committer.stop()
