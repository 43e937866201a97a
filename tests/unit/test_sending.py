"""One Send through its attempts (ratelimiter/sending.py) with the real journal on a temporary
SQLite store and LINE's side scripted: what is journaled, answered, queued again, split, withdrawn;
and the sender pool (senders.py) that feeds it."""
from __future__ import annotations

import asyncio
import logging

from frontdesk.ratelimiter.buckets import Scheduler
from frontdesk.ratelimiter.callers import Callers
from frontdesk.ratelimiter.calls import Call, OwnCall, Send, fingerprint, unneeded_at_stop
from frontdesk.ratelimiter.http import ApiConnectionError
from frontdesk.ratelimiter.journal import CallJournal
from frontdesk.ratelimiter.line_api import HttpResponse, batch_request, build_request, retry_key
from frontdesk.ratelimiter.outcome import Rules
from frontdesk.ratelimiter.profiles import Profiles
from frontdesk.ratelimiter.senders import SenderPool
from frontdesk.ratelimiter.sending import Sending
from frontdesk.ratelimiter.stats import Counters
from tests.unit.limiter_parts import TEXT, ScriptedLine, json_answer, settled, sqlite_store, started_writer

NOW = 1_000_000.0
RULES = Rules(max_retries=2, reply_max_age_s=50.0, content_max=1000)
PUSH_ARGS = {"to": "U1", "messages": TEXT}
TOKEN_REFUSED = json_answer(400, {"message": "Invalid reply token"})


class Layers:
    def __init__(self, store, writer, trace: bool = False):
        self.store, self.writer = store, writer
        self.answers = []
        self.counters = Counters()
        self.callers = Callers(self.answers.append)
        self.scheduler = Scheduler({}, clock=lambda: 0.0)
        self.journal = CallJournal(store, writer, self.counters)
        self.profiles = Profiles(store, writer, 60.0, clock=lambda: NOW)
        self.sending = Sending(RULES, self.scheduler, self.journal, self.callers, self.profiles, self.counters,
                               trace, clock=lambda: NOW)
        self._msgids = iter(range(1, 1000))

    def call(self, method: str, args: dict, event_id: str | None = "ev", context=None) -> Call:
        made = Call(event_id, 1 if event_id else None, method, args,
                    context or {"received_at": (NOW - 2) * 1000, "source": {"userId": "U1"}},
                    fingerprint(method, args) if event_id else None)
        self.callers.wait(next(self._msgids), made)
        if made.key is not None:
            self.journal.in_flight[made.key] = made
        return made

    def send_of(self, method: str, args: dict, **kwargs) -> Send:
        made = self.call(method, args, **kwargs)
        return Send(build_request(method, args, made.retry_key()), [made], method)

    def requeued(self) -> list[Send]:
        sends = []
        while (send := self.scheduler.next_ready(1e9)[0]) is not None:
            sends.append(send)
        return sends


def run(tmp_path, scenario, **kwargs):
    with sqlite_store(tmp_path) as store:
        async def main():
            async with started_writer(store) as writer:
                return await scenario(Layers(store, writer, **kwargs))
        return asyncio.run(main())


def test_a_push_is_journaled_sent_answered_and_journaled_done(tmp_path):
    async def scenario(layers):
        send = layers.send_of("push", PUSH_ARGS)
        line = ScriptedLine(json_answer(200, {"sentMessages": [{"id": "1"}]}))
        await layers.sending.serve(line, send)
        assert [request.path for request, _, _ in line.sent] == ["/v2/bot/message/push"]
        assert layers.answers[0].result == {"sentMessages": [{"id": "1"}], "sent_as": "push"}
        await settled(layers.writer)
        assert layers.store.journal_get("ev", 1).state == "done" and layers.journal.in_flight == {}
        assert layers.counters.calls["push"]["200"] == 1
    run(tmp_path, scenario)


def test_a_429_goes_back_to_its_queue_and_the_retry_succeeds(tmp_path):
    async def scenario(layers):
        send = layers.send_of("push", PUSH_ARGS)
        line = ScriptedLine(json_answer(429), json_answer(200))
        await layers.sending.serve(line, send)
        assert layers.answers == [] and layers.store.journal_get("ev", 1).state == "started"
        (again,) = layers.requeued()
        await layers.sending.serve(line, again)
        assert layers.answers[0].error is None and len(line.sent) == 2
        assert layers.counters.values["429s"] == 1 and layers.counters.values["retries"] == 1
    run(tmp_path, scenario)


def test_a_409_to_a_retry_key_is_the_accepted_requests_answer(tmp_path):
    async def scenario(layers):
        accepted = json_answer(409, {"message": "The retry key is already accepted", "sentMessages": [{"id": "7"}]},
                               {"x-line-accepted-request-id": "req-1"})
        await layers.sending.serve(ScriptedLine(accepted), layers.send_of("push", PUSH_ARGS))
        assert layers.answers[0].result == {"sentMessages": [{"id": "7"}], "request_id": "req-1", "sent_as": "push"}
        assert layers.counters.values["409s"] == 1
    run(tmp_path, scenario)


def test_a_reply_whose_token_line_refused_unused_goes_as_a_push_with_its_retry_key(tmp_path):
    async def scenario(layers):
        send = layers.send_of("reply", {"replyToken": "t", "messages": TEXT})
        await layers.sending.serve(ScriptedLine(TOKEN_REFUSED), send)
        (push,) = layers.requeued()
        assert push is send and push.sent_as == "push" and push.journal and push.attempts == 0
        assert push.request.body == {"to": "U1", "messages": TEXT} and push.request.retry_key == retry_key("ev", 1)
        assert layers.counters.values["replies_as_push"] == 1 and layers.answers == []
    run(tmp_path, scenario)


def test_a_refused_reply_with_nowhere_to_push_is_answered_naming_both(tmp_path):
    async def scenario(layers):
        send = layers.send_of("reply", {"replyToken": "t", "messages": TEXT}, context={"received_at": NOW * 1000})
        await layers.sending.serve(ScriptedLine(TOKEN_REFUSED), send)
        assert layers.answers[0].error["message"] == ("Invalid reply token; reply: the reply token is too old or "
                                                      "used, and the event has no source to push to")
    run(tmp_path, scenario)


def test_a_reply_refused_after_a_dropped_answer_was_delivered_by_that_attempt(tmp_path, caplog):
    async def scenario(layers):
        send = layers.send_of("reply", {"replyToken": "t", "messages": TEXT})
        line = ScriptedLine(ApiConnectionError("no answer from api.line.me: connection lost", sent=True),
                            TOKEN_REFUSED)
        await layers.sending.serve(line, send)
        (again,) = layers.requeued()
        assert again.repeat
        with caplog.at_level(logging.WARNING, logger="frontdesk.ratelimiter"):
            await layers.sending.serve(line, again)
        assert layers.answers[0].result == {"sent_as": "reply", "delivered_by_earlier_attempt": True}
        assert "event=reply_repeat_refused event_id=ev call_no=1 age_s=2.0 action=taken_as_delivered" in caplog.text
        assert layers.counters.values["replies_delivered_before"] == 1
    run(tmp_path, scenario)


def test_a_reply_refused_after_a_dropped_answer_past_its_lifetime_is_outcome_unknown(tmp_path, caplog):
    async def scenario(layers):
        send = layers.send_of("reply", {"replyToken": "t", "messages": TEXT},
                              context={"received_at": (NOW - 70) * 1000, "source": {"userId": "U1"}})
        send.repeat = True
        with caplog.at_level(logging.WARNING, logger="frontdesk.ratelimiter"):
            await layers.sending.serve(ScriptedLine(TOKEN_REFUSED), send)
        assert "outcome unknown" in layers.answers[0].error["message"] and layers.requeued() == []
        assert "action=outcome_unknown" in caplog.text and layers.counters.values["replies_outcome_unknown"] == 1
        await settled(layers.writer)
        assert layers.store.journal_get("ev", 1).response["maybe_sent"] is True
    run(tmp_path, scenario)


def test_a_batch_line_refused_whole_goes_as_one_push_per_member(tmp_path, caplog):
    async def scenario(layers):
        calls = [layers.call("push", {"to": f"U{n}", "messages": TEXT}, event_id=f"ev{n}") for n in range(2)]
        send = Send(batch_request([(c.args, c.key) for c in calls]), calls, "multicast")
        with caplog.at_level(logging.INFO, logger="frontdesk.ratelimiter"):
            await layers.sending.serve(ScriptedLine(json_answer(400, {"message": "bad"})), send)
        pushes = layers.requeued()
        assert [(p.sent_as, p.request.body["to"], p.request.retry_key) for p in pushes] == \
            [("push", "U0", retry_key("ev0", 1)), ("push", "U1", retry_key("ev1", 1))]
        assert "event=batch_refused members=2 reason='bad' action=push_each" in caplog.text
    run(tmp_path, scenario)


def test_a_fetched_profile_is_cached_for_the_next_call(tmp_path):
    async def scenario(layers):
        send = layers.send_of("profile", {"userId": "U1"}, event_id=None)
        await layers.sending.serve(ScriptedLine(json_answer(200, {"userId": "U1", "displayName": "One"})), send)
        assert layers.answers[0].result == {"userId": "U1", "displayName": "One", "cached": False}
        assert layers.profiles.cached("U1") == {"userId": "U1", "displayName": "One"}
    run(tmp_path, scenario)


def test_a_content_download_is_bounded_and_traced_when_asked(tmp_path):
    async def scenario(layers):
        send = layers.send_of("content", {"messageId": "1"})
        line = ScriptedLine(HttpResponse(200, b"\x89PNG", "image/png", {}))
        await layers.sending.serve(line, send)
        (request, max_bytes, trace) = line.sent[0]
        assert max_bytes == RULES.content_max and '"event":"ev"' in trace
        assert layers.answers[0].result == {"content_type": "image/png", "data": b"\x89PNG"}
    run(tmp_path, scenario, trace=True)


def test_a_send_whose_callers_are_all_gone_is_withdrawn_before_it_goes_out(tmp_path):
    async def scenario(layers):
        send = layers.send_of("push", PUSH_ARGS)
        layers.callers.cancel([1])
        line = ScriptedLine()
        await layers.sending.serve(line, send)
        assert line.sent == [] and layers.journal.in_flight == {}
        assert layers.counters.values["calls_withdrawn"] == 1
    run(tmp_path, scenario)


def test_a_send_the_journal_cannot_record_is_answered_unsent(tmp_path, caplog):
    async def scenario(layers):
        send = layers.send_of("push", PUSH_ARGS)
        layers.store.close()
        line = ScriptedLine()
        with caplog.at_level(logging.ERROR, logger="frontdesk.ratelimiter"):
            await layers.sending.serve(line, send)
        error = layers.answers[0].error
        assert line.sent == [] and error["retryable"] is True
        assert error["message"].startswith("call journal unavailable, not sent")
        assert "event=journal_write_failed entries=1" in caplog.text and layers.journal.in_flight == {}
    run(tmp_path, scenario)


def test_a_bug_costs_one_send_not_the_sender(tmp_path, caplog):
    async def scenario(layers):
        class Broken(ScriptedLine):
            async def send(self, request, max_bytes=None, trace=None):
                raise RuntimeError("bug")
        with caplog.at_level(logging.ERROR, logger="frontdesk.ratelimiter"):
            await layers.sending.serve(Broken(), layers.send_of("push", PUSH_ARGS))
        assert layers.answers[0].error["message"] == "rate limiter internal error: RuntimeError('bug')"
        assert "event=send_failed endpoint=push" in caplog.text
    run(tmp_path, scenario)


# --- the pool -----------------------------------------------------------------------------------------------
def test_each_sender_has_its_own_connections_serves_until_the_queue_closes_and_closes_them():
    async def main():
        scheduler, served, connections = Scheduler({}), [], []

        def connect():
            connections.append(ScriptedLine())
            return connections[-1]

        async def serve(connection, item):
            served.append((connection, item))
            await asyncio.sleep(0)
        pool = SenderPool(3, connect, scheduler, serve)
        assert connections == []                       # built: nothing connected, no task
        pool.start()
        for n in range(10):
            scheduler.submit("push", n)
        scheduler.close()
        await asyncio.wait_for(pool.join(), 10)
        assert sorted(item for _, item in served) == list(range(10))
        assert len(connections) == 3 and all(c.closed for c in connections)
        assert {id(c) for c, _ in served} <= {id(c) for c in connections}
    asyncio.run(main())


def test_at_stop_the_rate_limiters_own_reads_are_answered_unsent_and_never_retried(tmp_path):
    """A stop while LINE cannot be reached once waited out six attempts of its quota reads (4-5 s):
    its own reads are dropped from the queues (retries too), one that fails after the stop is not
    retried; a handler's call and an own call that has effects still go."""
    async def scenario(layers):
        heard = []

        def own(method: str, needed_at_stop: bool = False, args: dict | None = None) -> Send:
            call = OwnCall(method, args or {}, lambda error, result: heard.append((method, error)), needed_at_stop)
            return Send(build_request(method, args or {}, None), [call], method)
        retried, queued, failing = own("quota"), own("quota_consumption"), own("webhook_endpoint")
        await layers.sending.serve(ScriptedLine(json_answer(503)), retried)   # back in its queue, to retry
        layers.scheduler.submit(queued.endpoint, queued)
        push, effect = layers.send_of("push", PUSH_ARGS), own("mark_as_read", True, {"markAsReadToken": "t"})
        for send in (push, effect):
            layers.scheduler.submit(send.endpoint, send)
        layers.sending.stop(layers.scheduler.close(drop=unneeded_at_stop))
        await layers.sending.serve(ScriptedLine(json_answer(503)), failing)
        stopping = "not sent: the rate limiter is stopping"
        assert sorted((method, error["message"]) for method, error in heard) == [
            ("quota", stopping), ("quota_consumption", stopping), ("webhook_endpoint", stopping)]
        assert set(layers.requeued()) == {push, effect}
    run(tmp_path, scenario)
