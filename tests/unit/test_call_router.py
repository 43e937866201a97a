"""Where each call goes (ratelimiter/router.py CallRouter) with the rate limiter's real layers on a
temporary SQLite store, and who hears the answer (callers.py): a store method, the profile cache,
a repeat, a bad argument, a reply too old for its token, a push to batch."""
from __future__ import annotations

import asyncio

import pytest

from frontdesk.protocol.frames import EncodeError
from frontdesk.protocol.rpc import Response
from frontdesk.ratelimiter.batcher import Batcher
from frontdesk.ratelimiter.buckets import Scheduler
from frontdesk.ratelimiter.callers import CANCELLED, Callers
from frontdesk.ratelimiter.calls import Call, fingerprint
from frontdesk.ratelimiter.journal import CallJournal
from frontdesk.ratelimiter.line_api import retry_key
from frontdesk.ratelimiter.profiles import Profiles
from frontdesk.ratelimiter.router import CallRouter
from frontdesk.ratelimiter.stats import Counters
from frontdesk.ratelimiter.userdata import UserData
from frontdesk.store.base import JournalEntry
from tests.unit.limiter_parts import TEXT, settled, sqlite_store, started_writer

NOW = 1_000_000.0
GROUP = "C" + "1" * 32


class NoTimer:
    """A batch's timer that never fires (the test closes the batches)."""

    def cancel(self) -> None:
        pass


class Layers:
    """A router over real layers; `answers` what the dispatcher would read, `queued` what would be sent."""

    def __init__(self, store, writer, batching: bool = False):
        self.store, self.writer = store, writer
        self.answers: list[Response] = []
        self.counters = Counters()
        self.callers = Callers(self.answers.append)
        self.scheduler = Scheduler({}, clock=lambda: 0.0)
        self.journal = CallJournal(store, writer, self.counters)
        self.batched: list[list] = []
        self.batcher = Batcher(0.02, self.batched.append, clock=lambda: 0.0, call_at=lambda *args: NoTimer()) \
            if batching else None
        self.router = CallRouter(50.0, self.scheduler, self.journal, self.callers,
                                 Profiles(store, writer, 60.0, clock=lambda: NOW), UserData(writer, max_bytes=64 * 1024),
                                 self.batcher, self.counters, clock=lambda: NOW)
        self._msgids = iter(range(1, 1000))

    def call(self, method: str, args: dict, event_id: str | None = "ev", call_no: int = 1, context=None) -> Call:
        made = Call(event_id, call_no if event_id else None, method, args, context or {"received_at": NOW * 1000},
                    fingerprint(method, args) if event_id else None)
        self.callers.wait(next(self._msgids), made)
        self.router.route(made)
        return made

    def queued(self) -> list:
        sends = []
        while (send := self.scheduler.next_ready(1e9)[0]) is not None:
            sends.append(send)
        return sends


def run(tmp_path, scenario, batching: bool = False):
    with sqlite_store(tmp_path) as store:
        async def main():
            async with started_writer(store) as writer:
                return await scenario(Layers(store, writer, batching))
        return asyncio.run(main())


def test_a_store_method_is_checked_by_its_entry_and_answered_from_the_store(tmp_path):
    async def scenario(layers):
        layers.call("user_set_data", {"userId": "U1", "data": 3})
        layers.call("user_set_data", {"userId": "U1", "data": {"visits": 1}})
        layers.call("user_get", {"userId": "U1"})   # in call order: it reads the write before it
        await settled(layers.writer)
        refused, stored, got = layers.answers
        assert refused.error["message"] == "user_set_data: `data` must be a map"
        assert stored.error is None and got.result["data"] == {"visits": 1}
        assert layers.queued() == []
    run(tmp_path, scenario)


def test_a_profile_in_the_cache_is_answered_without_a_request(tmp_path):
    async def scenario(layers):
        layers.store.user_put_profile("U1", {"userId": "U1", "displayName": "One"}, NOW - 10)
        layers.call("profile", {"userId": "U1"}, event_id=None)
        layers.call("profile", {"userId": "U2"}, event_id=None)
        (answer,) = layers.answers
        assert answer.result == {"userId": "U1", "displayName": "One", "cached": True}
        assert [s.request.path for s in layers.queued()] == ["/v2/bot/profile/U2"]
        assert layers.counters.values["profile_cache_hits"] == 1
    run(tmp_path, scenario)


def test_a_repeat_of_a_call_in_flight_joins_it_and_both_hear_its_one_answer(tmp_path):
    async def scenario(layers):
        first = layers.call("push", {"to": "U1", "messages": TEXT})
        layers.call("push", {"to": "U1", "messages": TEXT})
        (send,) = layers.queued()
        assert send.calls == [first] and first.msgids == [1, 2]
        layers.callers.answer(first, None, {"sent_as": "push"})
        assert [(a.msgid, a.result) for a in layers.answers] == [(1, {"sent_as": "push"}), (2, {"sent_as": "push"})]
    run(tmp_path, scenario)


def test_a_call_the_journal_has_done_is_answered_from_it(tmp_path):
    async def scenario(layers):
        args = {"to": "U1", "messages": TEXT}
        layers.store.journal_put(JournalEntry("ev", 1, fingerprint("push", args), "done", {"path": "/x"},
                                              {"result": {"sent_as": "push"}}))
        layers.call("push", args)
        assert layers.answers[0].result == {"sent_as": "push"} and layers.queued() == []
    run(tmp_path, scenario)


def test_a_request_left_started_goes_again_as_it_was(tmp_path):
    async def scenario(layers):
        args = {"to": "U1", "messages": TEXT}
        request = {"method": "POST", "path": "/v2/bot/message/push", "body": args, "retry_key": "k",
                   "sent_as": "push"}
        layers.store.journal_put(JournalEntry("ev", 1, fingerprint("push", args), "started", request))
        layers.call("push", args)
        (send,) = layers.queued()
        assert send.request.retry_key == "k" and send.repeat and layers.answers == []
    run(tmp_path, scenario)


@pytest.mark.parametrize("method, args, expected", [
    ("push", {"to": "U1", "messages": []}, "push: `messages` must be a list of 1 to 5"),
    ("reply", {"messages": TEXT}, "reply: `replyToken` must be a non-empty string"),
    ("profile", {"userId": "a/b"}, "profile: `userId` is not a valid id"),
    ("call", {"method": "PATCH", "path": "/v2/bot/info"}, "call: `method` must be one of"),
])
def test_a_bad_argument_is_answered_naming_it_and_the_call_leaves_flight(tmp_path, method, args, expected):
    async def scenario(layers):
        layers.call(method, args)
        (answer,) = layers.answers
        assert expected in answer.error["message"] and answer.error["retryable"] is False
        assert layers.journal.in_flight == {} and layers.queued() == []
    run(tmp_path, scenario)


def test_a_reply_whose_token_is_too_old_goes_as_a_push_to_the_group_at_once(tmp_path):
    async def scenario(layers):
        context = {"received_at": (NOW - 60) * 1000, "source": {"type": "group", "groupId": GROUP, "userId": "U1"}}
        layers.call("reply", {"replyToken": "t", "messages": TEXT, "notificationDisabled": True}, context=context)
        (send,) = layers.queued()
        assert send.sent_as == "push" and send.request.endpoint == "push"
        assert send.request.body == {"to": GROUP, "messages": TEXT, "notificationDisabled": True}
        assert send.request.retry_key == retry_key("ev", 1) and layers.counters.values["replies_as_push"] == 1
    run(tmp_path, scenario)


def test_a_reply_too_old_with_no_source_to_push_to_is_refused(tmp_path):
    async def scenario(layers):
        layers.call("reply", {"replyToken": "t", "messages": TEXT}, context={"received_at": (NOW - 60) * 1000})
        assert "no source to push to" in layers.answers[0].error["message"] and layers.queued() == []
    run(tmp_path, scenario)


def test_a_fresh_reply_goes_as_a_reply_without_a_retry_key(tmp_path):
    async def scenario(layers):
        layers.call("reply", {"replyToken": "t", "messages": TEXT})
        (send,) = layers.queued()
        assert (send.sent_as, send.request.retry_key, send.repeat) == ("reply", None, False)
    run(tmp_path, scenario)


def test_a_call_for_no_event_is_neither_journaled_nor_keyed(tmp_path):
    async def scenario(layers):
        layers.call("push", {"to": "U1", "messages": TEXT}, event_id=None)
        (send,) = layers.queued()
        assert send.request.retry_key is None and layers.journal.in_flight == {}
        await layers.journal.started(send)
        await settled(layers.writer)
        assert layers.store.journal_unfinished() == []
    run(tmp_path, scenario, batching=True)


def test_pushes_of_an_event_to_users_are_batched_and_others_are_not(tmp_path):
    async def scenario(layers):
        batched = layers.call("push", {"to": "U1", "messages": TEXT})
        layers.call("push", {"to": GROUP, "messages": TEXT}, event_id="ev2")
        assert layers.batcher.open_members() == 1
        layers.batcher.close()
        assert layers.batched == [[batched]]
        assert [s.request.body["to"] for s in layers.queued()] == [GROUP]
    run(tmp_path, scenario, batching=True)


def test_a_store_that_cannot_be_read_is_a_retryable_error(tmp_path):
    async def scenario(layers):
        layers.store.close()
        layers.call("user_get", {"userId": "U1"})
        await settled(layers.writer)
        error = layers.answers[0].error
        assert error["message"].startswith("store unavailable") and error["retryable"] is True
    run(tmp_path, scenario)


# --- who hears the answer ----------------------------------------------------------------------------------
def test_each_msgid_is_answered_once_and_a_cancelled_one_at_once():
    written: list[Response] = []
    callers = Callers(written.append)
    call = Call("ev", 1, "push", {}, {}, None)
    callers.wait(1, call)
    callers.wait(2, call)
    assert callers.cancel([1, 99, "x"]) == 1 and not call.cancelled       # msgid 2 still waits
    assert (written[0].msgid, written[0].error["message"]) == (1, CANCELLED)
    callers.answer(call, None, {"ok": True})
    assert [(r.msgid, r.result) for r in written[1:]] == [(2, {"ok": True})] and len(callers) == 0
    assert callers.cancel([2]) == 0 and call.answer == (None, {"ok": True})


def test_a_call_nobody_waits_for_any_more_is_cancelled_until_someone_joins_it():
    callers = Callers(lambda response: None)
    current, repeat = Call("ev", 1, "push", {}, {}, None), Call("ev", 1, "push", {}, {}, None)
    callers.wait(1, current)
    callers.cancel([1])
    assert current.cancelled
    callers.wait(2, repeat)
    callers.join(current, repeat)
    assert not current.cancelled and current.msgids == [2]


def test_an_answer_msgpack_cannot_carry_is_replaced_by_an_error_naming_it():
    written: list[Response] = []

    def write(response: Response) -> None:
        if response.result is not None:
            raise EncodeError("holds an integer beyond 64 bits")
        written.append(response)
    callers = Callers(write)
    call = Call(None, None, "call", {}, {}, None)
    callers.wait(7, call)
    callers.answer(call, None, {"body": 2 ** 70})
    assert written[0].error["message"] == "the answer holds an integer beyond 64 bits"
