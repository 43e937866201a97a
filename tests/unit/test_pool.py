"""The handler pool (dispatcher/pool.py) with fake handler processes: slots made and retired to
follow the target, a rolling restart's order, operator controls, autoscale, and events spread
evenly over the ready handlers."""
from __future__ import annotations

import logging

from frontdesk.dispatcher.autoscale import Autoscaler, BusyMeter
from frontdesk.dispatcher.control import ControlChange
from frontdesk.dispatcher.pool import Pool
from frontdesk.dispatcher.workers import HandlerProcess
from frontdesk.protocol import rpc
from frontdesk.protocol.children.lifecycle import BACKOFF, CLOSING, DRAINING, READY, STARTING, STOPPED
from frontdesk.protocol.children.loop import EventLoop
from frontdesk.protocol.children.policy import RestartPolicy
from frontdesk.protocol.config import load
from tests.unit.clock import Clock
from tests.unit.fake_children import PipesFactory

log = logging.getLogger("test.pool")


class Owner:
    def handler_ready(self, handler):
        self.pool.adopt(handler)

    def event_answered(self, handler, delivery, error, after): ...

    def events_lost(self, handler, reason, blamed):
        handler.take_in_flight()

    def api_call(self, handler, request): ...

    def handler_read(self, handler): ...


class Pools:
    def __init__(self, target: int = 2, autoscaler: Autoscaler | None = None):
        self.clock = Clock()
        self.settings = load({"kill_grace_s": 2}, environ={})
        self.pipes = PipesFactory()
        self.released = []
        owner = Owner()
        policy = RestartPolicy(self.settings, "handlers", log, self.clock)

        def new_handler(name, wanted):
            return HandlerProcess(name, ["bot"], {}, EventLoop(), self.settings, owner, policy, log,
                                  clock=self.clock, wanted=wanted, pipes=self.pipes)
        self.pool = owner.pool = Pool(new_handler, self.released.extend, target, autoscaler)

    def hello(self, window: int = 4) -> None:
        for pipes in self.pipes.made:
            if pipes.receiver.state is STARTING and pipes.receiver.pipes is pipes:
                pipes.hello(window)


def doc(event_id: str) -> dict:
    return {"o": {"_id": event_id, "key": "K" + event_id, "received_at": 0, "event": {}}}


def test_converge_makes_the_slots_of_the_target_and_starts_each():
    p = Pools(target=3)
    p.pool.converge()
    assert [h.name for h in p.pool.members] == ["handler-1", "handler-2", "handler-3"]
    assert all(h.state is STARTING for h in p.pool.members)


def test_a_lower_target_retires_the_last_slots_which_drain_and_leave_when_they_exit():
    p = Pools(target=3)
    p.pool.converge()
    p.hello()
    third = p.pool.members[2]
    third.deliver(doc("e1"))
    p.pool.set_target(2, "TTOU")
    p.pool.converge()
    assert p.pool.members == p.pool.members[:2] and p.pool.retiring == [third] and third.state is DRAINING
    third.pipes.say(rpc.Response(1, None, None))
    assert third.state is CLOSING
    third.pipes.exit(0)
    assert p.pool.reap() == [third] and p.pool.retiring == [] and third.state is STOPPED


def test_a_slot_waiting_for_its_restart_is_simply_dropped_when_retired():
    p = Pools(target=2)
    p.pool.converge()
    p.hello()
    p.pipes.last("handler-2").exit(1)
    p.pool.reap()
    assert p.pool.members[1].state is BACKOFF
    p.pool.set_target(1, "scale")
    p.pool.converge()
    assert len(p.pool.members) == 1 and p.pool.retiring == []


def test_a_rolling_restart_goes_slot_by_slot_each_new_process_ready_before_the_old_one_drains():
    p = Pools(target=2)
    p.pool.converge()
    p.hello()
    old = list(p.pool.members)
    p.pool.rolling_restart("HUP")
    steps = []
    for _ in range(3):
        p.pool.converge()
        if p.pool.replacing:
            steps.append((p.pool.replacing[0].name, [h.state for h in old]))
        p.hello()
    assert steps == [("handler-1", [READY, READY]), ("handler-2", [CLOSING, READY])]
    assert all(h not in old for h in p.pool.members) and all(h.state is CLOSING for h in old)
    assert p.pool.retiring == old


def test_a_replacement_takes_over_its_slots_restart_count():
    p = Pools(target=1)
    p.pool.converge()
    p.hello()
    p.pool.members[0].restarts = 3
    p.pool.rolling_restart("HUP")
    p.pool.converge()
    p.hello()
    assert p.pool.members[0].restarts == 3 and p.pool.members[0].wanted


def test_the_operators_scale_turns_autoscaling_off_and_sets_the_target():
    p = Pools(target=1, autoscaler=Autoscaler(1, 4, 1.0, 10.0))
    p.pool.apply(ControlChange(handlers=3))
    assert p.pool.target == 3 and p.pool.autoscaler is None
    p.pool.converge()
    p.hello()
    p.pool.apply(ControlChange(rolling_restart=True))
    p.pool.converge()
    assert p.pool.replacing is not None


def test_events_are_spread_each_to_the_handler_with_the_most_free_slots():
    p = Pools(target=3)
    p.pool.converge()
    for pipes, window in zip(p.pipes.made, (4, 2, 1)):
        pipes.hello(window)
    ready = p.pool.ready()
    assert p.pool.deliver([doc(f"e{n}") for n in range(5)], ready) == []
    # free 4,2,1: 3,2,1 -> 2,2,1 -> 1,2,1 (a tie, either) -> 1,1,1 -> 1,0,1 (a tie again)
    assert [len(h.in_flight) for h in ready] == [3, 2, 0]
    assert p.pool.room() == (2, 7)


def test_an_event_no_handler_can_be_given_is_returned_with_the_reason_and_the_rest_go():
    p = Pools(target=1)
    p.pool.converge()
    p.hello()
    poison = {"o": {"_id": "bad", "key": "K", "received_at": 0, "event": {"n": 10**30}}}
    ((refused, reason),) = p.pool.deliver([poison, doc("ok")], p.pool.ready())
    assert refused is poison and "cannot be encoded as msgpack" in str(reason)
    assert [d.event_id for d in p.pool.members[0].in_flight.values()] == ["ok"]


def test_stop_gives_every_event_back_and_no_slot_restarts():
    p = Pools(target=2)
    p.pool.converge()
    p.hello()
    p.pool.members[0].deliver(doc("e1"))
    p.pool.stop("fast stop", kill=True)
    assert [d.event_id for d in p.released] == ["e1"]
    for pipes in p.pipes.made:
        pipes.exit(-9)
    p.pool.reap()
    assert p.pool.stopped


def test_the_busy_meter_gives_the_share_of_time_the_handlers_had_events():
    meter = BusyMeter()
    assert meter.share(10.0, {1: 0.0, 2: 0.0}) == 0.0           # the first call only starts it
    assert meter.share(11.0, {1: 1.0, 2: 0.5}) == 0.75
    assert meter.share(12.0, {3: 0.2}) == 0.2                    # a new process counts from nothing
    assert meter.share(12.0, {3: 0.4}) == 0.0                    # no time passed
