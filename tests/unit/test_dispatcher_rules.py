"""The dispatcher's smaller rules, case by case: the suspects rule (dispatcher/suspects.py), what an
API call becomes (dispatcher/calls.py), operator controls (dispatcher/control.py), the store's
moments (dispatcher/pacer.py) and the dead predecessor's leases (dispatcher/reclaim.py)."""
from __future__ import annotations

import os
import time
from types import SimpleNamespace

import pytest

from frontdesk.dispatcher.calls import CallRefused, call_params
from frontdesk.dispatcher.control import ControlChange, Controls
from frontdesk.dispatcher.deliveries import Delivery, held_delivery
from frontdesk.dispatcher.pacer import StorePacer
from frontdesk.dispatcher.reclaim import process_alive, reclaim_from_dead_predecessors
from frontdesk.dispatcher.router import Router
from frontdesk.dispatcher.suspects import Suspects
from frontdesk.protocol import rpc
from frontdesk.protocol.config import load
from frontdesk.store import open_store
from tests.unit.clock import Clock


def delivery(msgid: int, event_id: str | None = None) -> Delivery:
    event_id = event_id or f"e{msgid}"
    doc = {"o": {"_id": event_id, "key": "K" + event_id, "received_at": 1700000000000,
                 "event": {"source": {"type": "user", "userId": "U1"}, "replyToken": "tok"}}}
    return Delivery(msgid, doc, event_id, "K" + event_id, 0.0, 5.0)


@pytest.fixture
def store(tmp_path):
    s = open_store(f"sqlite:///{tmp_path / 'fd.db'}")
    yield s
    s.close()


# --- the suspects rule -----------------------------------------------------------------------------
def test_the_one_event_a_failed_handler_held_is_charged():
    suspects = Suspects()
    charged, back = suspects.sort_lost([delivery(1)], None)
    assert [d.msgid for d in charged] == [1] and back == [] and suspects.ids == set()


def test_several_events_and_nothing_to_blame_charge_none_and_each_becomes_a_suspect():
    suspects = Suspects()
    charged, back = suspects.sort_lost([delivery(1), delivery(2)], None)
    assert charged == [] and [d.msgid for d in back] == [1, 2] and suspects.ids == {"e1", "e2"}


def test_events_late_for_their_deadline_are_charged_and_the_others_given_back():
    suspects = Suspects()
    charged, back = suspects.sort_lost([delivery(1), delivery(2), delivery(3)], {2})
    assert [d.msgid for d in charged] == [2] and [d.msgid for d in back] == [1, 3] and suspects.ids == set()


def test_claimed_suspects_are_held_and_the_rest_go_on():
    suspects = Suspects()
    suspects.sort_lost([delivery(1), delivery(2)], None)
    docs = [delivery(1).doc, delivery(9).doc, delivery(2).doc]
    assert [d["o"]["_id"] for d in suspects.hold(docs)] == ["e9"]
    assert [d.event_id for d in suspects.held] == ["e1", "e2"]


def test_a_held_suspect_reserves_the_least_busy_handler_without_one():
    suspects = Suspects()
    suspects.held.extend([held_delivery(delivery(1).doc), held_delivery(delivery(2).doc),
                          held_delivery(delivery(3).doc)])

    class Handler:
        def __init__(self, in_flight):
            self.in_flight = dict.fromkeys(range(in_flight))
            self.deliveries = SimpleNamespace(reserved=None, solo=False)

        def reserve(self, doc):
            self.deliveries.reserved = doc["o"]["_id"]
    busy, idle = Handler(3), Handler(1)
    suspects.place([busy, idle])
    assert (idle.deliveries.reserved, busy.deliveries.reserved) == ("e1", "e2")
    assert [d.event_id for d in suspects.held] == ["e3"]        # no handler free for it yet


def test_a_suspect_that_ran_or_died_is_cleared():
    suspects = Suspects()
    suspects.sort_lost([delivery(1), delivery(2)], None)
    suspects.cleared("e1")
    assert suspects.ids == {"e2"} and [d.event_id for d in suspects.take_held()] == []


# --- an API call on its way -------------------------------------------------------------------------
def test_a_call_for_an_event_is_numbered_and_carries_the_events_context():
    held = delivery(4)
    params, made_for = call_params(rpc.Request(9, "reply", ["e4", {"messages": []}]), {"e4": held}.get, 3)
    assert made_for is held and held.calls == 1
    assert params == [{"event_id": "e4", "call_no": 1, "method": "reply",
                       "context": {"received_at": 1700000000000, "source": {"type": "user", "userId": "U1"},
                                   "reply_token": "tok"}}, {"messages": []}]


def test_a_call_for_no_event_has_no_number_and_no_context():
    params, made_for = call_params(rpc.Request(9, "profile", [None, {"userId": "U1"}]), {}.get, 3)
    assert made_for is None and params[0] == {"event_id": None, "call_no": None, "method": "profile", "context": {}}


def test_with_api_trace_a_call_says_who_had_the_event_since_when():
    params, _ = call_params(rpc.Request(9, "reply", ["e4", {}]), {"e4": delivery(4)}.get, 3,
                            lambda d: {"handler": "handler-2", "handed_at": 123})
    assert params[0]["context"]["handler"] == "handler-2" and params[0]["context"]["handed_at"] == 123


@pytest.mark.parametrize("params, error", [
    ([{"messages": []}], "reply: params must be [event id or nil, args map]"),
    (["e4", ["not", "a", "map"]], "reply: params must be [event id or nil, args map]"),
    (["other", {}], "reply: event 'other' is not in flight on this handler"),
])
def test_a_call_that_cannot_go_is_refused_naming_why(params, error):
    with pytest.raises(CallRefused, match=error.replace("[", r"\[").replace("]", r"\]")):
        call_params(rpc.Request(9, "reply", params), {"e4": delivery(4)}.get, 3)


def test_the_call_past_max_calls_per_event_is_refused_and_not_counted():
    held = delivery(4)
    for _ in range(2):
        call_params(rpc.Request(9, "reply", ["e4", {}]), {"e4": held}.get, 2)
    with pytest.raises(CallRefused, match="already made max_calls_per_event=2 API calls; this one was not made"):
        call_params(rpc.Request(9, "reply", ["e4", {}]), {"e4": held}.get, 2)
    assert held.calls == 2


# --- operator controls ---------------------------------------------------------------------------
def test_only_changes_of_a_control_after_the_start_count(store):
    store.set_control("handlers", 4)
    controls = Controls(store, "handlers_rolling_restart")
    controls.open()
    assert controls.changes() == ControlChange()
    store.set_control("handlers", 6)
    store.set_control("handlers_rolling_restart", "x1")
    assert controls.changes() == ControlChange(rolling_restart=True, handlers=6)
    assert controls.changes() == ControlChange()


@pytest.mark.parametrize("value", [-1, "three", True, 2.5])
def test_a_handler_count_that_is_no_count_is_ignored_and_logged(store, value, caplog):
    controls = Controls(store, "handlers_rolling_restart")
    controls.open()
    store.set_control("handlers", value)
    assert controls.changes() == ControlChange()
    assert "event=control_ignored name=handlers" in caplog.text


# --- the store's moments ----------------------------------------------------------------------------
def pacer(store, clock) -> StorePacer:
    settings = load({"store_turn_ms": 2, "feed_rescan_s": 5, "lease_s": 30}, environ={})
    return StorePacer(store, Router(store, settings, "me"), settings, clock=clock)


def test_a_store_turn_goes_at_once_when_its_pace_allows(store):
    clock = Clock()
    p = pacer(store, clock)
    assert p.turn_due(clock.now, False, lambda: (0, 0))
    p.turn_started(clock.now)
    assert p.turn_at == clock.now + 0.002


def test_before_its_pace_a_turn_goes_only_when_half_the_window_is_free_and_events_may_wait(store):
    clock = Clock()
    p = pacer(store, clock)
    p.turn_started(clock.now)
    p.router.more = False
    assert not p.turn_due(clock.now, False, lambda: (8, 8))            # nothing to claim
    p.router.more = True
    assert not p.turn_due(clock.now, False, lambda: (4, 8))            # half free is not more than half
    assert p.turn_due(clock.now, False, lambda: (5, 8))
    p.router.more = False
    assert p.turn_due(clock.now, True, lambda: (5, 8))                 # suspects wait for a handler


def test_the_rescan_wakes_the_router_and_lease_extension_comes_every_third_of_lease_s(store):
    clock = Clock()
    p = pacer(store, clock)
    p.router.more = False
    extended = []
    p.check_timers(clock.advance(5), lambda: extended.append(1) or [])
    assert p.router.more and p.rescan_at == clock.now + 5 and extended == []
    p.check_timers(clock.advance(5), lambda: extended.append(1) or [])
    assert extended == [1] and p.extend_at == clock.now + 10


def test_the_next_timer_is_the_earliest_moment_and_the_turn_only_when_it_has_work(store):
    clock = Clock()
    p = pacer(store, clock)
    p.turn_started(clock.now)
    p.router.more = False
    assert p.next_timer(False) == p.rescan_at
    assert p.next_timer(True) == p.turn_at


def test_a_wakeup_is_set_for_the_stores_next_retry(store):
    clock = Clock()
    p = pacer(store, clock)
    now = int(time.time() * 1000)
    store.append("Udest", [{"type": "message", "timestamp": now, "webhookEventId": "e1",
                            "source": {"type": "user", "userId": "U1"}}], now)
    store.claim("me", 1, 30)
    store.nack("me", "e1", "later", True, 5, 3.0, 3.0)
    p.schedule_wakeup()
    assert clock.now + 2.5 < p.wakeup_at <= clock.now + 3.1


# --- a dead predecessor's leases ---------------------------------------------------------------------
NEVER_A_PID = 2 ** 22 + 12345   # above Linux's largest pid_max: no process has it


def test_process_alive_knows_the_living_from_the_gone():
    assert process_alive(os.getpid()) and not process_alive(NEVER_A_PID)


def test_the_leases_of_a_dead_dispatcher_of_this_host_end_at_start_and_a_living_ones_stay(store, caplog):
    now = int(time.time() * 1000)
    store.append("Udest", [{"type": "message", "timestamp": now, "webhookEventId": f"e{n}",
                            "source": {"type": "user", "userId": f"U{n}"}} for n in range(2)], now)
    dead_pid = NEVER_A_PID
    store.put_status(f"dispatcher:h:{dead_pid}", {"pid": dead_pid, "host": "h", "owner": "dead-owner"})
    store.put_status(f"dispatcher:h:{os.getpid()}", {"pid": os.getppid(), "host": "h", "owner": "live-owner"})
    store.claim("dead-owner", 1, 120)
    store.claim("live-owner", 1, 120)
    reclaim_from_dead_predecessors(store, "h", os.getpid())
    assert [d["o"]["_id"] for d in store.claim("successor", 10, 60)] == ["e0"]   # the living one's stays leased
    assert f"event=predecessor_leases_expired pid={dead_pid}" in caplog.text
