"""The `batch` protocol feature (SPEC.md section 7): a handler that declares it gets the run leased
behind a conversation's event in the same frame; acks in order finish it, a nack gives the rest
back uncharged, a failure charges only the event being handled; a handler that declares nothing
gets the same events one at a time. One handler slot with fake pipes, then the whole arbiter with
a real SQLite store (tests/unit/dispatcher_world.py)."""
from __future__ import annotations

import logging
from collections import deque

import pytest

from frontdesk.dispatcher.workers import HandlerProcess
from frontdesk.protocol import rpc
from frontdesk.protocol.children.lifecycle import READY, STOPPING
from frontdesk.protocol.children.loop import EventLoop
from frontdesk.protocol.children.policy import RestartPolicy
from frontdesk.protocol.config import load
from tests.helpers import wait_until
from tests.unit.dispatcher_world import World
from tests.unit.clock import Clock
from tests.unit.fake_children import PipesFactory
from tests.unit.test_handler_process import Owner, doc

log = logging.getLogger("test.batches")


class Runs:
    """The router's side of a batch (workers.RunSource): runs by key."""

    def __init__(self, **runs: list[dict]):
        self.runs = {key: deque(docs) for key, docs in runs.items()}

    def take_run(self, key):
        return self.runs.pop(key, None)

    def keep_run(self, key, run):
        self.runs[key] = run


class Slot:
    def __init__(self, features=("batch",), **settings):
        self.clock = Clock()
        self.settings = load({"event_deadline_s": 10, "kill_grace_s": 2, "max_frame_bytes": 4096,
                              "handler_outbound_max_bytes": 65536, **settings}, environ={})
        self.owner = Owner()
        self.pipes = PipesFactory()
        self.handler = HandlerProcess("handler-1", ["bot"], {}, EventLoop(), self.settings, self.owner,
                                      RestartPolicy(self.settings, "handlers", log, self.clock), log,
                                      clock=self.clock, pipes=self.pipes)
        self.handler.start()
        self.process = self.pipes.last("handler-1")
        self.process.hello(4, features=None if features is None else list(features))

    def answer(self, event_id: str, error=None) -> None:
        (request,) = [r for r in self.process.events() if r.params[0]["o"]["_id"] == event_id]
        self.process.say(rpc.Response(request.msgid, error, None))


def test_the_hello_offers_the_batch_feature():
    slot = Slot()
    assert slot.process.requests("hello")[0].params[0]["features"] == ["batch"]
    assert slot.handler.batches


def test_a_declared_batch_takes_the_run_in_one_frame_and_one_place_of_the_window():
    slot = Slot()
    runs = Runs(U1=[doc("e2"), doc("e3")])
    head = slot.handler.deliver(doc("e1"), runs)
    assert slot.process.batches() == [["e1", "e2", "e3"]] and runs.runs == {}
    assert head.event_id == "e1" and slot.handler.free_slots == 3
    assert [r.msgid for r in slot.process.events()] == [1, 2, 3]


def test_a_handler_without_the_feature_gets_one_event_and_the_run_stays():
    slot = Slot(features=None)
    runs = Runs(U1=[doc("e2")])
    slot.handler.deliver(doc("e1"), runs)
    assert not slot.handler.batches and slot.process.batches() == []
    assert [r.params[0]["o"]["_id"] for r in slot.process.events()] == ["e1"] and list(runs.runs) == ["U1"]


def test_the_next_event_of_a_batch_starts_its_deadline_when_the_one_before_is_acked():
    slot = Slot()
    slot.handler.deliver(doc("e1"), Runs(U1=[doc("e2")]))
    e2 = slot.handler.delivery_for("e2")
    assert e2.deadline == float("inf")
    slot.clock.advance(9)
    slot.answer("e1")
    assert slot.owner.answered == [("e1", None)] and slot.owner.after == [["e2"]]
    assert e2.deadline == slot.clock.now + 10 and slot.handler.free_slots == 3
    slot.handler.check_timers(slot.clock.advance(9.5))
    assert slot.handler.state is READY


def test_a_nack_withdraws_the_rest_of_the_batch_and_their_answers_are_ignored():
    slot = Slot()
    slot.handler.deliver(doc("e1"), Runs(U1=[doc("e2"), doc("e3")]))
    slot.answer("e1", {"message": "no"})
    assert slot.owner.after == [["e2", "e3"]] and slot.handler.in_flight == {}
    slot.process.say(rpc.Response(2, {"message": "skipped"}, None))
    slot.process.say(rpc.Response(3, None, None))
    assert slot.handler.state is READY and slot.owner.answered == [("e1", {"message": "no"})]
    slot.process.say(rpc.Response(3, None, None))      # but only once
    assert "no event in flight" in slot.handler.failure


def test_answering_a_batch_out_of_turn_is_a_protocol_violation():
    slot = Slot()
    slot.handler.deliver(doc("e1"), Runs(U1=[doc("e2"), doc("e3")]))
    slot.answer("e2")
    assert slot.handler.state is STOPPING
    assert slot.handler.failure == "protocol violation: answered event e2 of a batch before the one ahead of it"


def test_a_batch_is_cut_to_max_frame_bytes_and_the_rest_of_the_run_stays():
    slot = Slot()
    big = [doc(f"e{n}") for n in range(2, 6)]
    for item in big:
        item["o"]["event"]["text"] = "x" * 1500
    runs = Runs(U1=big)
    slot.handler.deliver(doc("e1"), runs)
    (batch,) = slot.process.batches()
    assert batch == ["e1", "e2", "e3"]             # 3 × ~1.6 kB fit in 4096 bytes, a fourth would not
    assert [d["o"]["_id"] for d in runs.runs["U1"]] == ["e4", "e5"]


def test_a_run_whose_first_follower_does_not_fit_goes_as_one_event():
    slot = Slot()
    huge = doc("e2")
    huge["o"]["event"]["text"] = "x" * 4000
    runs = Runs(U1=[huge])
    slot.handler.deliver(doc("e1"), runs)
    assert slot.process.batches() == [] and [r.method for r in slot.process.events()] == ["event"]
    assert [d["o"]["_id"] for d in runs.runs["U1"]] == ["e2"]


# --- the whole dispatcher, with a real store -----------------------------------------------------------
@pytest.fixture
def world(tmp_path):
    world = World(tmp_path, handlers=1, claim_run=8).open()
    yield world
    world.close()


def batch_world(world: World, features=("batch",)) -> World:
    world.turn()
    world.ready(16, features=list(features) if features else None)
    return world


def redelivered(world: World, pipes, batches: int) -> None:
    """Turns, woken as the change feed would, until `pipes` has been sent `batches` batches."""
    def turned() -> bool:
        world.feed()
        world.turn()
        return len(pipes.batches()) >= batches
    wait_until(turned, message=f"{batches} batch(es) sent")


def test_a_conversations_run_goes_as_one_batch_and_in_order_acks_finish_it(world):
    batch_world(world)
    a, e, b, c, d = world.append({"U1": ["a", "b", "c", "d"], "U2": ["e"]})
    world.turn()
    pipes = world.pipes.last("handler-1")
    assert pipes.batches() == [[a, b, c, d]] and sorted(world.sent_ids()) == sorted([a, b, c, d, e])
    for event_id in (a, b, c, d, e):
        world.answer(event_id)
    world.turn(2)
    assert world.stats()["done"] == 5 and world.arbiter.router.keys == {}


def test_a_handler_speaking_todays_protocol_gets_the_same_run_one_at_a_time(world):
    batch_world(world, features=None)
    a, b, c = world.append({"U1": ["a", "b", "c"]})
    world.turn()
    assert world.sent_ids() == [a]
    world.answer(a)
    world.turn()
    world.answer(b)
    world.turn()
    assert world.sent_ids() == [a, b, c] and world.pipes.last("handler-1").batches() == []


def test_a_nack_in_a_batch_retries_it_and_gives_the_rest_back_uncharged_behind_it(world):
    batch_world(world)
    a, b, c, d = world.append({"U1": ["a", "b", "c", "d"]})
    world.turn()
    world.answer(a)
    world.answer(b, {"message": "try later"})
    world.answer(c, {"message": "skipped"})           # what the handler says of the rest: ignored
    world.answer(d, {"message": "skipped"})
    world.turn()
    assert world.stats()["done"] == 1 and world.stats()["in_flight"] == 0
    pipes = world.pipes.last("handler-1")
    redelivered(world, pipes, 2)                        # once b's retry_backoff_s (store time) is over
    assert pipes.batches()[-1] == [b, c, d]             # nothing overtook b
    attempts = {r.params[0]["o"]["_id"]: r.params[0]["o"]["attempt"] for r in pipes.events()[-3:]}
    assert attempts == {b: 2, c: 1, d: 1}
    assert world.store.dead_letters() == []


def test_a_handler_dying_in_a_batch_charges_only_the_event_it_was_handling(world):
    batch_world(world)
    a, b, c = world.append({"U1": ["a", "b", "c"]})
    world.turn()
    world.answer(a)
    world.exit("handler-1", 1)
    assert world.arbiter.suspects.ids == set()          # b alone was being handled: charged, no suspects
    world.turn()
    world.ready(16, features=["batch"])
    again = world.pipes.last("handler-1")
    redelivered(world, again, 1)
    assert again.batches() == [[b, c]]
    assert [r.params[0]["o"]["attempt"] for r in again.events()] == [2, 1]
