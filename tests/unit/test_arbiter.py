"""The arbiter's decisions in-process (dispatcher/arbiter.py), with fake children, a real SQLite
store and a clock the test moves: where events go, what a handler's death costs its events, the
suspects each run alone, API calls on their way, and every signal in each state."""
from __future__ import annotations

import logging
import signal

import pytest

from frontdesk.dispatcher.arbiter import DRAINING, STOPPED, STOPPING, Arbiter
from frontdesk.protocol import rpc
from frontdesk.protocol.children.lifecycle import BACKOFF, CLOSING, DRAINING as CHILD_DRAINING, READY, STARTING
from frontdesk.protocol.children.loop import HANDLED_SIGNALS, handler_name
from tests.unit.dispatcher_world import World


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path).open()
    try:
        yield w
    finally:
        w.close()


def running(world: World, window: int = 4) -> World:
    world.turn()
    world.ready(window)
    return world


def test_every_handled_signal_has_its_method():
    assert all(callable(getattr(Arbiter, handler_name(signum), None)) for signum in HANDLED_SIGNALS)


# --- the pool ---------------------------------------------------------------------------------------
def test_the_first_turn_starts_the_pool_and_the_rate_limiter_is_already_up(world):
    assert world.ratelimiter.receiver.state is READY
    world.turn()
    assert [h.name for h in world.arbiter.pool.members] == ["handler-1", "handler-2"]
    assert all(h.state is STARTING for h in world.arbiter.pool.members)
    assert all(p.requests("hello") for p in world.pipes.made if p.name.startswith("handler-"))


def test_events_go_to_the_handler_with_the_most_free_slots_one_per_key(world):
    running(world)
    ids = world.append({"U1": ["a", "b"], "U2": ["c"], "U3": ["d"], "U4": ["e"]})
    world.turn()
    assert sorted(world.sent_ids()) == ids[:4]      # U1's second (appended last) waits its turn
    assert len(world.sent_ids("handler-1")) == len(world.sent_ids("handler-2")) == 2


def test_an_ack_is_written_and_the_keys_next_event_follows(world):
    running(world)
    first, _, second = world.append({"U1": ["a", "b"], "U2": ["c"]})   # (U1 a, U2 c, U1 b)
    world.turn()
    world.answer(first)
    world.turn(2)
    assert second in world.sent_ids()
    assert world.stats()["done"] == 1


def test_a_nack_retries_and_a_nack_without_retry_makes_a_dead_letter(world):
    running(world)
    retried, dead = world.append({"U1": ["a"], "U2": ["b"]})
    world.turn()
    world.answer(retried, {"message": "try later"})
    world.answer(dead, {"message": "poison", "retry": False})
    world.turn()
    (letter,) = world.store.dead_letters()
    assert letter["id"] == dead and letter["error"] == "handler nack: poison"
    assert world.stats()["pending"] == 1


def test_an_event_msgpack_cannot_carry_becomes_a_dead_letter_and_the_rest_flow_on(world):
    running(world)
    world.store.append("Udest", [{"type": "message", "timestamp": 10**30, "webhookEventId": "poison",
                                  "source": {"type": "user", "userId": "Up"}}], 1)
    ok = world.append({"U1": ["a"]})
    world.turn()
    assert world.sent_ids() == ok
    assert "cannot be encoded as msgpack" in world.store.dead_letters()[0]["error"]


def test_the_lease_owner_is_published_before_the_first_claim(world):
    world.append({"U1": ["a"]})
    world.turn()
    doc = world.store.get_statuses()[world.arbiter.publisher.name]
    assert doc["state"] == "running" and doc["owner"] == world.arbiter.owner and doc["handlers_target"] == 2
    assert doc["handlers"] == [] and world.sent_ids() == []
    world.clock.advance(1)
    world.ready()
    world.clock.advance(1)
    world.turn()
    doc = world.store.get_statuses()[world.arbiter.publisher.name]
    assert [h["state"] for h in doc["handlers"]] == ["ready", "ready"] and doc["in_flight"] == 1


# --- a handler's death -------------------------------------------------------------------------------
def test_a_handler_dying_with_one_event_charges_it_and_restarts_at_once(world):
    running(world)
    (event,) = world.append({"U1": ["a"]})
    world.turn()
    pipes, _ = world.holder(event)
    world.exit(pipes.name, 1)
    handler = next(h for h in world.arbiter.pool.members if h.name == pipes.name)
    assert handler.state is BACKOFF and handler.restart_at == world.clock.now   # it died holding: it served
    assert world.store.dead_letters() == [] and world.stats()["pending"] == 1
    world.turn()
    assert handler.state is STARTING and world.pipes.last(pipes.name) is not pipes


def test_a_handler_dying_with_several_events_charges_none_and_each_runs_alone_later(world, caplog):
    world = running(world, window=4)
    ids = world.append({f"U{n}": ["x"] for n in range(4)})
    world.turn()
    pipes, _ = world.holder(ids[0])
    lost = [i for i in ids if i in world.sent_ids(pipes.name)]
    assert len(lost) == 2
    with caplog.at_level(logging.INFO, logger="frontdesk.dispatcher"):
        world.exit(pipes.name, 1)
    assert "event=events_isolated" in caplog.text
    assert world.arbiter.suspects.ids == set(lost)
    world.turn()
    world.ready()
    world.feed()
    world.turn(3)
    # each suspect goes to a handler once it has answered what it holds, and runs there alone
    ran_alone = []
    for _ in range(10):
        for handler in world.arbiter.pool.members:
            for delivery in list(handler.in_flight.values()):
                if delivery.event_id in lost:
                    ran_alone.append((delivery.event_id, len(handler.in_flight)))
                world.answer(delivery.event_id)
        world.turn()
    assert sorted(ran_alone) == sorted((suspect, 1) for suspect in lost)
    assert world.arbiter.suspects.ids == set() and world.stats()["done"] == 4


def test_a_failure_late_for_the_deadline_charges_only_the_late_events(tmp_path):
    world = World(tmp_path, max_attempts=1).open()   # a charged event becomes a dead letter at once
    try:
        running(world, window=4)
        (early,) = world.append({"U1": ["a"]})
        world.turn()
        holder, _ = world.holder(early)
        world.clock.advance(5)
        later = world.append({f"V{n}": ["b"] for n in range(4)})
        world.turn()
        beside = [i for i in later if i in world.sent_ids(holder.name)]
        assert beside
        world.clock.advance(5)
        world.turn()
        assert holder.signals == [signal.SIGTERM]
        assert [d["id"] for d in world.store.dead_letters()] == [early]
        assert "got no answer or progress within event_deadline_s=10" in world.store.dead_letters()[0]["error"]
        assert world.stats()["dead"] == 1 and world.arbiter.suspects.ids == set()   # the others: given back
    finally:
        world.close()


# --- API calls -----------------------------------------------------------------------------------------
def call(world: World, event_id, method: str = "reply", args: dict | None = None, msgid: int = 50):
    pipes, _ = world.holder(event_id) if event_id else (world.pipes.last("handler-1"), None)
    pipes.say(rpc.Request(msgid, method, [event_id, args or {"messages": []}]))
    return pipes


def responses(pipes) -> list[rpc.Response]:
    return [m for m in pipes.sent if isinstance(m, rpc.Response)]


def test_a_call_is_numbered_per_event_and_carries_the_events_context(world):
    running(world)
    (event,) = world.append({"U1": ["a"]})
    world.turn()
    call(world, event, msgid=7)
    call(world, event, msgid=8)
    first, second = world.ratelimiter.requests("call")
    assert [first.params[0]["call_no"], second.params[0]["call_no"]] == [1, 2]
    assert first.params[0]["event_id"] == event and first.params[0]["context"]["reply_token"] == "r" + event
    world.ratelimiter.say(rpc.Response(first.msgid, None, {"sent": True}))
    pipes, _ = world.holder(event)
    assert [(r.msgid, r.result) for r in responses(pipes)] == [(7, {"sent": True})]


@pytest.mark.parametrize("method, event, args, error", [
    ("launch_rocket", "held", {}, "unknown method launch_rocket"),
    ("reply", "not-ours", {}, "reply: event 'not-ours' is not in flight on this handler"),
    ("reply", "held", "not a map", "reply: params must be [event id or nil, args map]"),
])
def test_a_call_that_cannot_be_relayed_is_answered_with_the_reason(world, method, event, args, error):
    running(world)
    (held,) = world.append({"U1": ["a"]})
    world.turn()
    pipes, _ = world.holder(held)
    pipes.say(rpc.Request(9, method, [held if event == "held" else event, args]))
    (response,) = responses(pipes)
    assert response.error["message"] == error and world.ratelimiter.requests("call") == []


def test_calls_past_max_calls_per_event_are_refused_naming_the_cap(tmp_path):
    world = World(tmp_path, max_calls_per_event=1).open()
    try:
        running(world)
        (event,) = world.append({"U1": ["a"]})
        world.turn()
        pipes = call(world, event, msgid=1)
        call(world, event, msgid=2)
        assert len(world.ratelimiter.requests("call")) == 1
        assert "already made max_calls_per_event=1 API calls" in responses(pipes)[0].error["message"]
    finally:
        world.close()


def test_a_gone_handlers_calls_are_cancelled_at_the_rate_limiter_and_their_answers_dropped(world):
    running(world)
    (event,) = world.append({"U1": ["a"]})
    world.turn()
    pipes = call(world, event)
    (request,) = world.ratelimiter.requests("call")
    world.exit(pipes.name, 1)
    (cancel,) = [m for m in world.ratelimiter.sent if isinstance(m, rpc.Notification)]
    assert cancel.method == "cancel" and cancel.params == [[request.msgid]]
    world.ratelimiter.say(rpc.Response(request.msgid, None, {}))
    assert responses(pipes) == [] and world.arbiter.apilink.pending == {}


def test_a_rate_limiter_that_dies_is_restarted_and_gets_every_unanswered_call_again(world):
    running(world)
    (event,) = world.append({"U1": ["a"]})
    world.turn()
    call(world, event)
    first = world.ratelimiter
    world.exit("ratelimiter", 1)
    child = world.arbiter.apilink.child
    assert child.state is BACKOFF
    world.clock.advance(1)
    world.turn()
    assert world.ratelimiter is not first
    assert [r.params for r in world.ratelimiter.requests("call")] == [r.params for r in first.requests("call")]


# --- signals in each state -------------------------------------------------------------------------
def test_ttin_adds_a_handler_and_ttou_drains_the_last_one_whose_events_finish(world):
    running(world)
    world.arbiter.handle_ttin()
    world.turn()
    assert [h.name for h in world.arbiter.pool.members] == ["handler-1", "handler-2", "handler-3"]
    world.ready()
    ids = world.append({f"U{n}": ["a"] for n in range(6)})
    world.turn()
    on_third = [i for i in ids if i in world.sent_ids("handler-3")]
    world.arbiter.handle_ttou()
    world.turn()
    third = world.arbiter.pool.retiring[0]
    assert third.name == "handler-3" and third.state is CHILD_DRAINING and len(world.arbiter.pool.members) == 2
    for event in on_third:
        world.answer(event)
    assert third.state is CLOSING
    world.exit("handler-3", 0)
    assert world.arbiter.pool.retiring == [] and world.stats()["done"] == len(on_third)


def test_ttin_ttou_and_hup_do_nothing_once_draining(world):
    running(world)
    world.arbiter.handle_term()
    for handle in (world.arbiter.handle_ttin, world.arbiter.handle_ttou, world.arbiter.handle_hup):
        handle()
    assert world.arbiter.pool.target == 2 and world.arbiter.pool.replacing is None


def test_hup_replaces_each_handler_in_turn_the_new_one_ready_before_the_old_one_drains(world):
    running(world)
    old = list(world.arbiter.pool.members)
    world.arbiter.handle_hup()
    world.turn()
    assert world.arbiter.pool.replacing[0] is old[0]          # one at a time, in slot order
    new_first = world.arbiter.pool.replacing[1]
    assert old[0].state is READY                               # the old one serves on meanwhile
    world.ready()
    assert world.arbiter.pool.members[0] is new_first and old[0].state is CLOSING
    world.turn()
    assert world.arbiter.pool.replacing[0] is old[1]
    world.ready()
    assert world.arbiter.pool.members[1].state is READY and old[1].state is CLOSING


def test_a_replacement_that_fails_aborts_the_roll_and_keeps_the_old_processes(world, caplog):
    running(world)
    old = list(world.arbiter.pool.members)
    world.arbiter.handle_hup()
    world.turn()
    world.exit("handler-1", 1)   # the replacement (the newest handler-1 process) dies before its hello
    assert "event=rolling_restart_aborted name=handler-1" in caplog.text
    world.turn(3)
    assert world.arbiter.pool.members == old and all(h.state is READY for h in old)
    assert world.arbiter.pool.replacing is None


def test_term_drains_in_flight_events_then_stops_every_child(world):
    running(world)
    ids = world.append({"U1": ["a"], "U2": ["b"], "U3": ["c"]})
    world.turn()
    world.arbiter.handle_term()
    assert world.arbiter.state is DRAINING
    more = world.append({"U9": ["late"]})
    world.turn()
    assert more[0] not in world.sent_ids()                     # no claims while draining
    for event in ids:
        world.answer(event)
    world.arbiter.handle_term()                               # a second TERM: nothing more
    assert world.arbiter.state is DRAINING
    for name in ("handler-1", "handler-2"):
        assert world.pipes.last(name).stdin_closed
        world.exit(name, 0)
    world.turn()
    assert world.ratelimiter.stdin_closed                     # the rate limiter last
    world.exit("ratelimiter", 0)
    world.turn()
    assert world.arbiter.state is STOPPED and world.stats()["done"] == 3


def test_events_still_running_after_the_drain_grace_are_given_back_and_their_handlers_stopped(world):
    running(world)
    (event,) = world.append({"U1": ["hang"]})
    world.turn()
    holder, _ = world.holder(event)
    world.arbiter.handle_term()
    world.clock.advance(5)
    world.turn()
    assert holder.signals == [signal.SIGTERM]
    assert world.stats() == {"pending": 1, "in_flight": 0, "done": 0, "dead": 0}


@pytest.mark.parametrize("first", ["quit", "int twice"])
def test_quit_gives_every_event_back_and_kills_every_child(world, first):
    running(world)
    world.append({"U1": ["a"], "U2": ["b"]})
    world.turn()
    if first == "quit":
        world.arbiter.handle_quit()
    else:
        world.arbiter.handle_int()
        assert world.arbiter.state is DRAINING
        world.arbiter.handle_int()
    assert world.arbiter.state is STOPPING
    assert world.stats()["in_flight"] == 0
    for pipes in world.pipes.made:
        assert signal.SIGKILL in pipes.signals
    for name in ("handler-1", "handler-2", "ratelimiter"):
        world.exit(name, -9)
    world.turn()
    assert world.arbiter.state is STOPPED


def test_a_handler_that_dies_while_draining_is_not_restarted(world):
    running(world)
    world.arbiter.handle_term()
    world.exit("handler-1", 1)
    world.turn()
    assert world.arbiter.pool.members[0].stopped and len(world.pipes.of("handler-1")) == 1
    assert world.arbiter.state is DRAINING


# --- control and autoscale -------------------------------------------------------------------------------
def test_frontdesk_scale_sets_the_target_at_the_next_status_turn(world):
    running(world)
    world.store.set_control("handlers", 3)
    world.clock.advance(1)
    world.turn()
    assert world.arbiter.pool.target == 3 and len(world.arbiter.pool.members) == 3


def test_autoscale_grows_a_busy_pool_with_a_backlog_and_shrinks_an_idle_one(tmp_path):
    world = World(tmp_path, handlers="auto", handlers_min=1, handlers_max=4, autoscale_backlog_s=1,
                  autoscale_idle_s=3).open()
    try:
        running(world, window=1)
        assert world.arbiter.pool.target == 1
        world.append({f"U{n}": ["a"] for n in range(5)}, age_s=10)
        world.turn()
        world.clock.advance(1)
        world.turn()                                   # the first measurement only sets the start
        world.clock.advance(1)
        world.turn()
        assert world.arbiter.pool.target == 2           # grows by half the pool, at least one
        for event in world.sent_ids():
            world.answer(event)
        world.ready()
        for _ in range(10):                              # quiet: every event answered at once
            for event in world.sent_ids():
                try:
                    world.answer(event)
                except AssertionError:
                    pass
            world.clock.advance(1)
            world.turn()
        assert world.arbiter.pool.target == 1
    finally:
        world.close()


# --- a pool that cannot start ---------------------------------------------------------------------------
def refuse_handshakes(world: World) -> None:
    for pipes in world.pipes.made:
        if pipes.name.startswith("handler-") and pipes.returncode is None and not pipes.signals:
            pipes.say(rpc.Response(0, {"message": "no supported protocol version"}, None))


def test_handlers_that_refuse_the_handshake_mark_the_pool_degraded_and_events_wait_in_the_store(tmp_path):
    world = World(tmp_path, restart_intensity=2).open()
    try:
        world.append({"U1": ["a"], "U2": ["b"]})
        for _ in range(4):                                   # each refuses, exits, is started again
            world.turn()
            refuse_handshakes(world)
            for name in ("handler-1", "handler-2"):
                if world.pipes.last(name).signals:
                    world.exit(name, 1)
            world.clock.advance(1)
        world.turn()
        doc = world.store.get_statuses()[world.arbiter.publisher.name]
        assert "refused the handshake: no supported protocol version" in doc["degraded"]
        assert "restart_intensity=2" in doc["degraded"]
        assert world.stats() == {"pending": 2, "in_flight": 0, "done": 0, "dead": 0} and world.sent_ids() == []
    finally:
        world.close()


def test_a_crash_looping_pool_recovers_once_its_handlers_start_and_the_mark_clears_after_a_quiet_period(tmp_path):
    world = World(tmp_path, restart_intensity=1, restart_period_s=4).open()
    try:
        ids = world.append({"U1": ["a"], "U2": ["b"]})
        world.turn()
        for name in ("handler-1", "handler-2"):              # both die before their hello
            world.exit(name, 1)
        assert world.arbiter.policy.degraded is not None
        world.clock.advance(1)
        world.turn()
        world.ready()                                        # "the fix is deployed": they start
        for event in ids:
            world.answer(event)
        world.turn()
        assert world.stats()["done"] == 2
        world.clock.advance(5)
        world.turn()
        assert world.arbiter.policy.degraded is None
    finally:
        world.close()
