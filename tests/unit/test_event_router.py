"""The router's order rules (dispatcher/router.py) against a real SQLite store in a temporary
folder: one event per key out at a time, a key's run handed on in order from memory, nothing of a
key overtaking an event given back, acks written in one call."""
from __future__ import annotations

import time

import pytest

from frontdesk.dispatcher.deliveries import held_delivery
from frontdesk.dispatcher.router import Router
from frontdesk.protocol.config import load
from frontdesk.store import open_store


class Queue:
    def __init__(self, tmp_path, **settings):
        url = f"sqlite:///{tmp_path / 'fd.db'}"
        self.settings = load({"store": url, "claim_run": 1, "retry_backoff_s": 30, "retry_backoff_max_s": 30,
                              **settings}, environ={})
        self.store = open_store(url)
        self.router = Router(self.store, self.settings, "me")
        self._seq = 0

    def append(self, texts_by_key: dict[str, int]) -> list[str]:
        rows = []
        for index in range(max(texts_by_key.values())):
            for key, count in texts_by_key.items():
                if index < count:
                    self._seq += 1
                    rows.append((f"ev{self._seq:03d}", key))
        now = int(time.time() * 1000)
        self.store.append("Udest", [{"type": "message", "timestamp": now, "webhookEventId": event_id,
                                     "source": {"type": "user", "userId": key}} for event_id, key in rows], now)
        self.router.wake()
        return [event_id for event_id, _ in rows]

    def claim(self, free: int = 100) -> list[str]:
        return [doc["o"]["_id"] for doc in self.router.claim(free)]


@pytest.fixture
def queue(tmp_path):
    q = Queue(tmp_path)
    yield q
    q.store.close()


def ids(docs) -> list[str]:
    return [doc["o"]["_id"] for doc in docs]


def test_a_claim_takes_the_oldest_event_of_each_key_only(queue):
    a1, b1, a2 = queue.append({"Ua": 2, "Ub": 1})
    assert queue.claim() == [a1, b1]
    assert queue.router.keys == {"Ua": a1, "Ub": b1}


def test_a_claim_takes_no_more_than_the_free_slots_and_nothing_when_there_are_none(queue):
    queue.append({f"U{n}": 1 for n in range(5)})
    assert len(queue.claim(free=3)) == 3
    assert queue.claim(free=0) == []


def test_the_keys_next_event_is_claimable_only_after_the_ack_is_written(queue):
    a1, a2 = queue.append({"Ua": 2})
    assert queue.claim() == [a1]
    assert queue.claim() == []
    queue.router.ack(a1, "Ua")
    assert queue.router.pending_acks == 1
    assert queue.claim() == [a2]                 # the ack went with this claim
    assert queue.router.pending_acks == 0 and queue.store.stats()["done"] == 1


def test_acks_queued_in_a_turn_go_in_one_flush(queue):
    events = queue.append({f"U{n}": 1 for n in range(3)})
    queue.claim()
    for n, event_id in enumerate(events):
        queue.router.ack(event_id, f"U{n}")
    queue.router.flush()
    assert queue.store.stats()["done"] == 3 and queue.router.pending_acks == 0


def test_a_run_is_leased_with_its_head_and_handed_on_in_order_as_each_is_acked(tmp_path):
    queue = Queue(tmp_path, claim_run=4)
    try:
        a1, a2, a3 = queue.append({"Ua": 3})
        assert queue.claim() == [a1]
        assert ids(queue.router.runs["Ua"]) == [a2, a3]
        queue.router.ack(a1, "Ua")
        assert ids(queue.router.take_ready(10)) == [a2]      # from memory, no store turn
        assert queue.router.keys["Ua"] == a2
        queue.router.ack(a2, "Ua")
        assert ids(queue.router.take_ready(10)) == [a3] and "Ua" not in queue.router.runs
    finally:
        queue.store.close()


def test_a_nack_gives_the_rest_of_the_keys_run_back_first(tmp_path):
    queue = Queue(tmp_path, claim_run=4)
    try:
        a1, a2, a3 = queue.append({"Ua": 3})
        queue.claim()
        assert queue.router.nack(a1, "Ua", "handler nack: later", True) == "pending"
        assert "Ua" not in queue.router.runs and queue.router.keys == {}
        assert queue.store.stats()["in_flight"] == 0      # a2 and a3 are not leased any more
        assert queue.claim() == []                          # a1 waits out its backoff; nothing overtakes it
    finally:
        queue.store.close()


def test_release_gives_events_back_untouched_with_their_runs(tmp_path):
    queue = Queue(tmp_path, claim_run=4)
    try:
        a1, b1, a2 = queue.append({"Ua": 2, "Ub": 1})
        docs = queue.router.claim(10)
        queue.router.release([held_delivery(doc) for doc in docs if doc["o"]["key"] == "Ua"])
        assert queue.store.stats()["in_flight"] == 1 and queue.router.keys == {"Ub": b1}
        queue.router.wake()                                 # (the change feed's word)
        (again,) = queue.router.claim(10)
        assert again["o"]["_id"] == a1 and again["o"]["attempt"] == 1   # claimable at once, uncharged
    finally:
        queue.store.close()


def test_release_runs_gives_back_every_follower_not_handed_out(tmp_path):
    queue = Queue(tmp_path, claim_run=4)
    try:
        a1, b1, a2, b2 = queue.append({"Ua": 2, "Ub": 2})
        queue.claim()
        queue.router.ack(a1, "Ua")                         # a2 is ready in memory now
        queue.router.release_runs()
        assert queue.router.ready == type(queue.router.ready)() and queue.router.runs == {}
        queue.router.flush()
        assert queue.store.stats()["in_flight"] == 1       # b1 alone: still out
    finally:
        queue.store.close()


def test_extend_keeps_the_leases_of_the_events_held_and_every_follower(tmp_path):
    queue = Queue(tmp_path, claim_run=4, lease_s=60)
    try:
        a1, a2 = queue.append({"Ua": 2})
        queue.claim()
        queue.router.extend([a1])
        assert queue.store.stats()["in_flight"] == 2
    finally:
        queue.store.close()
