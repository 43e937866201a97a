"""The call journal's at-most-once rules (ratelimiter/journal.py CallJournal) against a real SQLite
store in a temporary file, each case on its own: what a repeated call gets, what is written before
and after a Send, what a restart sends again."""
from __future__ import annotations

import asyncio
import logging

import pytest

from frontdesk.protocol.rpc import api_error
from frontdesk.ratelimiter.calls import RECOVERED, Call, Send, fingerprint
from frontdesk.ratelimiter.journal import CallJournal, Seen
from frontdesk.ratelimiter.line_api import HttpRequest, build_request, retry_key
from frontdesk.ratelimiter.stats import Counters
from frontdesk.store import StoreError
from frontdesk.store.base import JournalEntry
from tests.unit.limiter_parts import TEXT, settled, sqlite_store, started_writer

PUSH_ARGS = {"to": "U1", "messages": TEXT}
REPLY_ARGS = {"replyToken": "token", "messages": TEXT}
MENU_ARGS = {"method": "POST", "path": "/v2/bot/richmenu", "body": {"size": 1}}


def call(method: str = "push", args: dict = PUSH_ARGS, event_id: str = "ev", call_no: int = 1) -> Call:
    return Call(event_id, call_no, method, args, {}, fingerprint(method, args))


def entry(state: str, made: Call, request: dict | None, response: dict | None = None) -> JournalEntry:
    return JournalEntry(made.event_id, made.call_no, made.fingerprint, state, request, response)


def push_request(made: Call, sent_as: str = "push") -> dict:
    request = build_request(made.method, made.args, retry_key(*made.key)).to_journal()
    return dict(request, sent_as=sent_as)


def run(tmp_path, scenario):
    """scenario(journal, store, writer, counters) on an event loop, with a real store and writer."""
    with sqlite_store(tmp_path) as store:
        async def main():
            async with started_writer(store) as writer:
                counters = Counters()
                return await scenario(CallJournal(store, writer, counters, clock=lambda: 1000.0), store, writer,
                                      counters)
        return asyncio.run(main())


# --- a call about to be made -----------------------------------------------------------------------------
def test_a_call_never_seen_is_made_and_is_in_flight_until_its_outcome_is_written(tmp_path):
    async def scenario(journal, store, writer, counters):
        first = call()
        assert journal.look_up(first).seen is Seen.NEW and journal.in_flight == {("ev", 1): first}
        again = call()
        verdict = journal.look_up(again)
        assert verdict.seen is Seen.JOINED and verdict.current is first
        first.answer = (None, {"sentMessages": []})
        assert journal.look_up(call()).answer == (None, {"sentMessages": []})
    run(tmp_path, scenario)


def test_another_call_under_the_same_number_is_a_mismatch(tmp_path):
    async def scenario(journal, store, writer, counters):
        journal.look_up(call())
        verdict = journal.look_up(call(args={"to": "U2", "messages": TEXT}))
        assert verdict.seen is Seen.ANSWERED and "call journal mismatch: call 1 of event ev" in verdict.answer[0]["message"]
        store.journal_put(entry("done", call(event_id="other"), push_request(call(event_id="other"))))
        mismatch = journal.look_up(call(args={"to": "U3", "messages": TEXT}, event_id="other"))
        assert "call journal mismatch" in mismatch.answer[0]["message"]
        assert counters.values["journal_mismatches"] == 2
    run(tmp_path, scenario)


def test_a_done_call_is_answered_from_the_journal(tmp_path):
    async def scenario(journal, store, writer, counters):
        made = call()
        store.journal_put(entry("done", made, push_request(made), {"result": {"sent_as": "push"}}))
        assert journal.look_up(call()).answer == (None, {"sent_as": "push"})
        assert counters.values["journal_answers"] == 1 and journal.in_flight == {}
    run(tmp_path, scenario)


def test_a_final_refusal_is_answered_from_the_journal_and_not_made_again(tmp_path):
    async def scenario(journal, store, writer, counters):
        made = call()
        refusal = api_error("The request body has 1 error(s)", 400)
        store.journal_put(entry("failed", made, push_request(made), {"error": refusal, "maybe_sent": False}))
        assert journal.look_up(call()).answer == (refusal, None)
    run(tmp_path, scenario)


@pytest.mark.parametrize("response, repeat", [
    ({"error": api_error("no answer", 0, retryable=True), "maybe_sent": False}, False),
    ({"error": api_error("no answer", 0, retryable=True), "maybe_sent": True}, True),
    ({"error": api_error("LINE API answered HTTP 500", 500, retryable=True)}, True),   # written before maybe_sent
    ({"error": api_error("rate limited", 429, retryable=True)}, False),
])
def test_a_retryable_failure_without_a_retry_key_is_made_again_knowing_whether_line_may_have_acted(
        tmp_path, response, repeat):
    async def scenario(journal, store, writer, counters):
        made = call("reply", REPLY_ARGS)
        store.journal_put(entry("failed", made, dict(build_request("reply", REPLY_ARGS, None).to_journal(),
                                                     sent_as="reply"), response))
        again = call("reply", REPLY_ARGS)
        assert journal.look_up(again).seen is Seen.NEW and again.repeat is repeat
        assert journal.in_flight[("ev", 1)] is again and counters.values["retried_from_journal"] == 1
    run(tmp_path, scenario)


@pytest.mark.parametrize("state", ["started", "failed"])
def test_a_request_with_a_retry_key_left_started_or_failed_retryably_is_sent_again_as_it_was(tmp_path, state):
    async def scenario(journal, store, writer, counters):
        made = call()
        response = {"error": api_error("no answer", 0, retryable=True)} if state == "failed" else None
        store.journal_put(entry(state, made, push_request(made), response))
        verdict = journal.look_up(call())
        assert verdict.seen is Seen.RESEND
        send = verdict.send
        assert send.request == HttpRequest.from_journal(push_request(made)) and send.sent_as == "push"
        assert send.repeat and not send.journal           # no new "started": it is one already
        assert journal.in_flight[("ev", 1)] is send.calls[0] and counters.values["resent_from_journal"] == 1
    run(tmp_path, scenario)


def test_a_reply_left_started_is_sent_again_its_token_works_once(tmp_path):
    async def scenario(journal, store, writer, counters):
        made = call("reply", REPLY_ARGS)
        store.journal_put(entry("started", made, dict(build_request("reply", REPLY_ARGS, None).to_journal(),
                                                      sent_as="reply")))
        verdict = journal.look_up(call("reply", REPLY_ARGS))
        assert verdict.seen is Seen.RESEND and verdict.send.sent_as == "reply" and verdict.send.repeat
    run(tmp_path, scenario)


def test_another_call_left_started_is_outcome_unknown_and_so_it_stays(tmp_path):
    async def scenario(journal, store, writer, counters):
        made = call("call", MENU_ARGS)
        request = dict(build_request("call", MENU_ARGS, None).to_journal(), sent_as="call")
        store.journal_put(entry("started", made, request))
        verdict = journal.look_up(call("call", MENU_ARGS))
        error = verdict.answer[0]
        assert verdict.seen is Seen.ANSWERED and error["retryable"] is False
        assert error["message"].startswith("outcome unknown: call 1 of event ev (call) was sent by a rate limiter")
        await settled(writer)
        assert store.journal_get("ev", 1).state == "failed"          # the next repeat reads it at once
        assert journal.look_up(call("call", MENU_ARGS)).answer == (error, None)
        assert journal.in_flight == {}
    run(tmp_path, scenario)


def test_a_batch_member_is_answered_by_the_batchs_request_and_outcome(tmp_path):
    async def scenario(journal, store, writer, counters):
        first, member = call(event_id="a"), call(event_id="b")
        batch = dict(HttpRequest("POST", "/v2/bot/message/multicast", {"to": ["U1", "U1"]},
                                 retry_key="batch-key").to_journal(), sent_as="multicast")
        store.journal_put(entry("done", first, batch, {"result": {"sent_as": "multicast"}}))
        store.journal_put(entry("started", member, {"batch_of": ["a", 1], "retry_key": "batch-key",
                                                    "sent_as": "multicast"}))
        assert journal.look_up(call(event_id="b")).answer == (None, {"sent_as": "multicast"})
    run(tmp_path, scenario)


def test_a_batch_member_whose_request_is_lost_is_outcome_unknown(tmp_path):
    async def scenario(journal, store, writer, counters):
        member = call(event_id="b")
        store.journal_put(entry("started", member, {"batch_of": ["gone", 1], "retry_key": "k", "sent_as": "multicast"}))
        assert "outcome unknown" in journal.look_up(call(event_id="b")).answer[0]["message"]
    run(tmp_path, scenario)


def test_a_call_forgotten_leaves_flight(tmp_path):
    async def scenario(journal, store, writer, counters):
        made = call()
        journal.look_up(made)
        journal.forget(made)
        journal.forget(Call(None, None, "push", PUSH_ARGS, {}, None))   # no key: nothing to forget
        assert journal.in_flight == {}
    run(tmp_path, scenario)


# --- a Send's entries --------------------------------------------------------------------------------------
def test_started_records_the_exact_request_once_and_a_batch_body_once(tmp_path):
    async def scenario(journal, store, writer, counters):
        members = [call(event_id="a"), call(event_id="b"), Call(None, None, "push", PUSH_ARGS, {}, None)]
        send = Send(HttpRequest("POST", "/v2/bot/message/multicast", {"to": ["U1"]}, retry_key="k"), members,
                    "multicast")
        await journal.started(send)
        first, second = store.journal_get("a", 1), store.journal_get("b", 1)
        assert first.state == "started" and first.request["path"] == "/v2/bot/message/multicast"
        assert first.request["sent_as"] == "multicast" and first.request["retry_key"] == "k"
        assert second.request == {"batch_of": ["a", 1], "retry_key": "k", "sent_as": "multicast"}
        assert not send.journal
        store.journal_put(entry("done", members[0], first.request))
        await journal.started(send)                 # not again: an attempt after a retry
        assert store.journal_get("a", 1).state == "done"
    run(tmp_path, scenario)


def test_reads_are_not_journaled(tmp_path):
    async def scenario(journal, store, writer, counters):
        profile = Call("ev", 1, "profile", {"userId": "U1"}, {}, None)
        send = Send(build_request("profile", profile.args, None), [profile], "profile")
        await journal.started(send)
        journal.finished(send)
        await settled(writer)
        assert store.journal_get("ev", 1) is None
    run(tmp_path, scenario)


def test_the_outcome_is_written_and_only_then_the_call_leaves_flight(tmp_path):
    async def scenario(journal, store, writer, counters):
        done, failed = call(event_id="a"), call("call", MENU_ARGS, event_id="b")
        for made in (done, failed):
            journal.look_up(made)
        done.answer = (None, {"sent_as": "push"})
        failed.answer = (api_error("no answer", 0, retryable=True), None)
        pushed = Send(build_request("push", PUSH_ARGS, "k"), [done], "push")
        menu = Send(build_request("call", MENU_ARGS, None), [failed], "call")
        menu.repeat = True
        journal.finished(pushed)
        journal.finished(menu)
        assert set(journal.in_flight) == {("a", 1), ("b", 1)}     # a repeat still finds their answers
        await settled(writer)     # the push's "done" lingered for company: this write takes it along
        assert journal.in_flight == {}
        assert store.journal_get("a", 1).state == "done" and store.journal_get("a", 1).response == {
            "result": {"sent_as": "push"}}
        assert store.journal_get("b", 1).response == {"error": failed.answer[0], "maybe_sent": True}
    run(tmp_path, scenario)


def test_started_raises_when_the_store_cannot_write(tmp_path):
    with sqlite_store(tmp_path) as store:
        async def main():
            async with started_writer(store) as writer:
                journal = CallJournal(store, writer, Counters())
                store.close()
                with pytest.raises(StoreError):
                    await journal.started(Send(build_request("push", PUSH_ARGS, "k"), [call()], "push"))
        asyncio.run(main())


# --- after a restart -----------------------------------------------------------------------------------------
def test_a_restart_sends_again_each_started_request_with_a_retry_key_once(tmp_path, caplog):
    async def scenario(journal, store, writer, counters):
        pushed, first, member, menu = call(event_id="p"), call(event_id="a"), call(event_id="b"), \
            call("call", MENU_ARGS, event_id="m")
        store.journal_put(entry("started", pushed, push_request(pushed)))
        batch = dict(HttpRequest("POST", "/v2/bot/message/multicast", {"to": ["U1"]}, retry_key="bk").to_journal(),
                     sent_as="multicast")
        store.journal_put(entry("started", first, batch))
        store.journal_put(entry("started", member, {"batch_of": ["a", 1], "retry_key": "bk", "sent_as": "multicast"}))
        store.journal_put(entry("started", menu, dict(build_request("call", MENU_ARGS, None).to_journal(),
                                                      sent_as="call")))
        orphan = call(event_id="o")
        store.journal_put(entry("started", orphan, {"batch_of": ["gone", 1], "retry_key": "ok", "sent_as": "multicast"}))
        with caplog.at_level(logging.INFO, logger="frontdesk.ratelimiter"):
            sends = journal.recovered()
        by_key = {send.request.retry_key: send for send in sends}
        assert set(by_key) == {retry_key("p", 1), "bk"}              # the menu has no key; the orphan no request
        assert [c.key for c in by_key["bk"].calls] == [("a", 1), ("b", 1)] and by_key["bk"].sent_as == "multicast"
        assert all(not send.journal and c.method == RECOVERED for send in sends for c in send.calls)
        assert set(journal.in_flight) == {("p", 1), ("a", 1), ("b", 1)}
        assert "event=journal_recovery_skipped retry_key=ok" in caplog.text
        assert "event=journal_recovery resending=3 entries=4" in caplog.text
    run(tmp_path, scenario)
