"""A handler slot (dispatcher/workers.py, HandlerProcess) in-process: the handshake, events and
their deadlines, a handler that stops reading, draining, exits and restarts, a suspect run alone —
with fake pipes for its processes, a fake owner and a clock the test moves."""
from __future__ import annotations

import logging
import math
import signal

import pytest

from frontdesk.dispatcher.workers import HandlerProcess
from frontdesk.protocol import rpc
from frontdesk.protocol.children.lifecycle import BACKOFF, CLOSING, DRAINING, READY, STARTING, STOPPED, STOPPING
from frontdesk.protocol.children.loop import EventLoop
from frontdesk.protocol.children.policy import FIRST_RESTART_DELAY_S, RestartPolicy
from frontdesk.protocol.config import load
from tests.unit.clock import Clock
from tests.unit.fake_children import PipesFactory

log = logging.getLogger("test.handler")


class Owner:
    """What the arbiter is told (workers.HandlerOwner), recorded."""

    def __init__(self):
        self.ready, self.answered, self.lost, self.calls, self.reads = [], [], [], [], 0
        self.after = []

    def handler_ready(self, handler):
        self.ready.append(handler)

    def event_answered(self, handler, delivery, error, after):
        self.answered.append((delivery.event_id, error))
        self.after.append([d.event_id for d in after])

    def events_lost(self, handler, reason, blamed):
        self.lost.append((reason, [d.event_id for d in handler.take_in_flight()], blamed))

    def api_call(self, handler, request):
        self.calls.append(request)

    def handler_read(self, handler):
        self.reads += 1


def doc(event_id: str, key: str = "U1") -> dict:
    return {"ts": 1, "op": "i", "ns": "fd.events", "o": {"_id": event_id, "key": key, "received_at": 0,
                                                          "event": {"type": "message"}, "attempt": 1}}


class Slot:
    """One HandlerProcess with everything it talks to faked."""

    def __init__(self, **settings):
        self.clock = Clock()
        self.settings = load({"event_deadline_s": 10, "kill_grace_s": 2, "handler_start_timeout_s": 5,
                              "max_frame_bytes": 4096, "handler_outbound_max_bytes": 8192, **settings}, environ={})
        self.owner = Owner()
        self.pipes = PipesFactory()
        policy = RestartPolicy(self.settings, "handlers", log, self.clock)
        self.handler = HandlerProcess("handler-1", ["bot"], {}, EventLoop(), self.settings, self.owner, policy, log,
                                      clock=self.clock, pipes=self.pipes)

    @property
    def process(self):
        return self.pipes.last("handler-1")

    def ready(self, window: int = 4) -> HandlerProcess:
        self.handler.start()
        self.process.hello(window)
        return self.handler

    def answer(self, request: rpc.Request, error=None) -> None:
        self.process.say(rpc.Response(request.msgid, error, None))


@pytest.fixture
def slot():
    return Slot()


def test_it_is_built_without_a_process_and_start_sends_the_hello(slot):
    assert slot.pipes.made == [] and slot.handler.state is STOPPED
    slot.handler.start()
    (hello,) = slot.process.sent
    assert slot.handler.state is STARTING and hello.method == "hello" and hello.msgid == 0
    assert hello.params[0]["protocol"] == [1] and hello.params[0]["max_frame_bytes"] == 4096


def test_the_handshake_makes_it_ready_with_its_window(slot):
    handler = slot.ready(window=8)
    assert handler.state is READY and handler.max_in_flight == 8 and handler.free_slots == 8
    assert handler.handler_name == "fake" and slot.owner.ready == [handler]


@pytest.mark.parametrize("answer, reason", [
    (rpc.Response(0, {"message": "no supported protocol version"}, None),
     "refused the handshake: no supported protocol version"),
    (rpc.Response(0, None, {"protocol": 2, "max_in_flight": 4}), "protocol violation: handshake names protocol 2"),
    (rpc.Response(0, None, {"protocol": 1, "max_in_flight": 0}),
     "protocol violation: handshake max_in_flight must be an integer >= 1, got 0"),
    (rpc.Request(1, "profile", [None, {}]), "protocol violation: sent request before answering the hello"),
    (rpc.Response(7, None, {}), "protocol violation: sent response before answering the hello"),
])
def test_a_bad_handshake_fails_the_process(slot, answer, reason):
    slot.handler.start()
    slot.process.say(answer)
    assert slot.handler.state is STOPPING and slot.process.signals == [signal.SIGTERM]
    assert slot.handler.failure.startswith(reason) and slot.owner.ready == []


def test_no_handshake_within_the_start_timeout_fails_it(slot):
    slot.handler.start()
    assert slot.handler.next_timer() == slot.clock.now + 5
    slot.handler.check_timers(slot.clock.advance(5))
    assert slot.handler.failure == "no handshake within handler_start_timeout_s=5"


def test_an_event_goes_out_and_its_ack_goes_to_the_owner(slot):
    handler = slot.ready()
    delivery = handler.deliver(doc("e1"))
    (event,) = slot.process.events()
    assert event.params == [doc("e1")] and handler.free_slots == 3 and delivery.deadline == slot.clock.now + 10
    slot.clock.advance(0.004)
    slot.answer(event)
    assert slot.owner.answered == [("e1", None)] and handler.handled == 1 and handler.free_slots == 4
    assert handler.deliveries.handling.counts[2] == 1            # 4 ms: the (0.002, 0.005] bucket


def test_an_answer_to_no_event_in_flight_is_a_violation(slot):
    slot.ready()
    slot.process.say(rpc.Response(99, None, None))
    assert "response to msgid 99, which is no event in flight" in slot.handler.failure
    assert not slot.process.reading


def test_events_late_for_their_deadline_fail_it_blaming_only_them(slot):
    handler = slot.ready()
    handler.deliver(doc("early", "U1"))
    slot.clock.advance(5)
    handler.deliver(doc("later", "U2"))
    slot.clock.advance(5)
    handler.check_timers(slot.clock.now)
    ((reason, lost, blamed),) = slot.owner.lost
    assert reason == "event early got no answer or progress within event_deadline_s=10"
    assert lost == ["early", "later"] and blamed == {1}


def test_progress_moves_the_deadline_and_a_call_out_pauses_it(slot):
    handler = slot.ready()
    delivery = handler.deliver(doc("e1"))
    slot.clock.advance(8)
    slot.process.say(rpc.Notification("progress", ["e1"]))
    assert delivery.deadline == slot.clock.now + 10
    handler.deliveries.call_waiting(delivery)
    assert delivery.deadline == math.inf
    slot.clock.advance(60)
    handler.check_timers(slot.clock.now)     # its deadline passed while paused: nothing is late
    assert slot.owner.lost == [] and handler.next_timer() is None
    handler.deliveries.call_answered(delivery)
    assert delivery.deadline == slot.clock.now + 10


def test_a_handler_that_lets_its_output_pile_up_past_the_bound_is_stuck(slot):
    handler = slot.ready()
    handler.deliver(doc("e1"))
    for n in range(100):
        if handler.state is not READY:
            break
        handler.respond(n, None, {"blob": "x" * 200})
    assert handler.failure.startswith("stuck: stopped reading its stdin with") and "handler_outbound_max_bytes=8192" \
        in handler.failure
    assert slot.process.stdin_closed and slot.owner.lost[0][1] == ["e1"]


def test_a_handler_that_reads_nothing_for_the_event_deadline_is_stuck(slot):
    handler = slot.ready()
    handler.deliver(doc("e1"))
    handler.on_flushed(100, 100)               # a write found its pipe full: it took nothing
    slot.clock.advance(9)
    handler.on_flushed(200, 200)               # still nothing: the clock runs from the first
    queued = slot.process.queued
    handler.check_timers(slot.clock.advance(1))
    assert handler.failure == f"stuck: read nothing of its stdin for event_deadline_s=10 with {queued} bytes waiting"
    assert slot.process.stdin_closed


def test_reading_tells_the_owner_so_held_calls_may_go(slot):
    slot.ready()
    slot.process.queued = 50
    slot.process.take()
    assert slot.owner.reads == 1


def test_api_requests_and_logs_go_where_they_belong(slot, caplog):
    slot.ready()
    slot.process.say(rpc.Request(5, "reply", ["e1", {}]))
    with caplog.at_level(logging.INFO, logger="test.handler"):
        slot.process.say(rpc.Notification("log", [{"level": "warning", "message": "careful"}]))
    assert [r.method for r in slot.owner.calls] == ["reply"]
    assert caplog.records[-1].levelname == "WARNING" and "event=handler_log name=handler-1" in caplog.text \
        and "text=careful" in caplog.text


def test_drain_waits_for_the_acks_then_closes_stdin_and_a_clean_exit_is_not_restarted(slot):
    handler = slot.ready()
    handler.deliver(doc("e1"))
    handler.drain()
    assert handler.state is DRAINING and handler.free_slots == 0 and not slot.process.stdin_closed
    slot.answer(slot.process.events()[0])
    assert handler.state is CLOSING and slot.process.stdin_closed
    slot.process.exit(0)
    assert handler.reap() == 0
    assert handler.state is STOPPED and handler.restarts == 0 and handler.next_timer() is None


def test_a_handler_that_does_not_exit_after_its_stdin_closed_is_failed(slot):
    handler = slot.ready()
    handler.drain()
    handler.check_timers(slot.clock.advance(2))
    assert handler.state is STOPPING and handler.failure == "did not exit within kill_grace_s=2 after stdin closed"
    handler.check_timers(slot.clock.advance(2))
    assert slot.process.signals == [signal.SIGTERM, signal.SIGKILL]


def test_a_process_that_exits_holding_events_has_them_retried_and_the_slot_restarts_at_once(slot):
    handler = slot.ready()
    handler.deliver(doc("e1"))
    first = slot.process
    first.exit(1)
    handler.reap()
    assert slot.owner.lost == [("exited with status 1", ["e1"], None)]
    assert handler.state is BACKOFF and handler.restart_at == slot.clock.now   # died holding: it served
    handler.check_timers(slot.clock.now)
    assert handler.state is STARTING and slot.process is not first and handler.in_flight == {}


def test_a_process_that_dies_young_backs_off_and_the_next_one_starts_fresh(slot):
    handler = slot.ready()
    slot.process.exit(3)
    handler.reap()
    assert handler.restart_at == slot.clock.now + FIRST_RESTART_DELAY_S and handler.restarts == 1
    assert handler.status() == {"name": "handler-1", "pid": None, "state": "waiting_restart", "in_flight": 0,
                                "handled": 0, "restarts": 1}
    handler.check_timers(slot.clock.advance(FIRST_RESTART_DELAY_S))
    slot.process.hello()
    assert handler.state is READY and handler.status()["pid"] == slot.process.pid


def test_stdout_closing_fails_it_with_its_exit_status_when_it_exits(slot):
    handler = slot.ready()
    slot.process.exit(2)
    handler.on_stdout_closed()
    assert handler.failure == "exited with status 2"


def test_stdout_closing_while_it_runs_on(slot):
    handler = slot.ready()
    handler.on_stdout_closed()
    assert handler.failure == "closed its stdout"


def test_a_suspect_waits_for_the_others_then_runs_alone(slot):
    handler = slot.ready()
    handler.deliver(doc("e1", "U1"))
    handler.reserve(doc("suspect", "U2"))
    assert handler.free_slots == 0 and len(slot.process.events()) == 1   # nothing new meanwhile
    slot.answer(slot.process.events()[0])
    assert [e.params[0]["o"]["_id"] for e in slot.process.events()] == ["e1", "suspect"]
    assert handler.free_slots == 0                                        # it runs alone
    slot.answer(slot.process.events()[1])
    assert handler.free_slots == 4


def test_its_status_has_the_counters_readers_turn_into_rates(slot):
    handler = slot.ready(window=2)
    handler.deliver(doc("e1"))
    slot.clock.advance(0.5)
    status = handler.status()
    assert status["state"] == "ready" and status["in_flight"] == 1 and status["max_in_flight"] == 2
    assert status["busy_s"] == 0.5 and status["handled"] == 0 and len(status["handling_counts"]) == 15
