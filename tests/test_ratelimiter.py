"""The rate limiter process, call by call: a real `python -m frontdesk.ratelimiter` subprocess, the sandbox as LINE over
real HTTP, a real SQLite store. Each limit and error path of docs/ratelimiter.md."""
from __future__ import annotations

import contextlib
import socket
import time
import uuid

import pytest
import requests

from frontdesk.ratelimiter.line_api import retry_key
from frontdesk.ratelimiter.calls import fingerprint
from frontdesk.protocol.frames import HEADER
from frontdesk.sandbox.webhooks import message_content, mint_reply_token, user_id
from frontdesk.store import open_store
from frontdesk.store.base import JournalEntry
from tests.helpers import wait_until
from tests.ratelimiter_client import RateLimiterProcess, limiter_env
from tests.sandbox_harness import SECRET, TOKEN, running_sandbox

TEXT = [{"type": "text", "text": "hello"}]


@pytest.fixture
def system(tmp_path):
    """start(sandbox_knobs, limiter_knobs) -> (sandbox, limiter); both stopped at teardown."""
    stack = []

    def start(sandbox_knobs=None, token=TOKEN, **knobs):
        context = running_sandbox(tmp_path, **(sandbox_knobs or {}))
        sandbox = context.__enter__()
        stack.append(lambda: context.__exit__(None, None, None))
        env = limiter_env(sandbox.url, token, f"sqlite:///{tmp_path}/rl.db", **knobs)
        limiter = RateLimiterProcess(env, tmp_path / "ratelimiter.log", cwd=tmp_path)
        stack.append(limiter.kill)
        return sandbox, limiter

    yield start
    for stop in reversed(stack):
        stop()


def now_ms() -> int:
    return int(time.time() * 1000)


def event_id() -> str:
    return uuid.uuid4().hex


def test_push_is_journaled_and_a_repeat_is_answered_from_the_journal(system, tmp_path):
    sandbox, limiter = system(batching="false")
    ev, to = event_id(), user_id(1)
    first = limiter.result(limiter.call("push", {"to": to, "messages": TEXT}, ev, 1))
    again = limiter.result(limiter.call("push", {"to": to, "messages": TEXT}, ev, 1))
    assert first[0] is None and first[1]["sent_as"] == "push" and first[1]["sentMessages"]
    assert again == first
    changed = limiter.result(limiter.call("push", {"to": to, "messages": [{"type": "text", "text": "x"}]}, ev, 1))
    assert "call journal mismatch" in changed[0]["message"] and changed[1] is None
    deliveries = sandbox.deliveries()
    assert [(d["endpoint"], d["to"], d["retry_key"]) for d in deliveries] == [("push", [to], retry_key(ev, 1))]
    store = open_store(f"sqlite:///{tmp_path}/rl.db")
    try:
        # the outcome is written after the answer (it may linger for the next call's "started")
        wait_until(lambda: store.journal_get(ev, 1).state == "done", message="the push's outcome journaled")
        entry = store.journal_get(ev, 1)
        assert entry.request["retry_key"] == retry_key(ev, 1)
        assert entry.request["path"] == "/v2/bot/message/push" and entry.request["body"]["to"] == to
    finally:
        store.close()


def test_token_expired_at_line_becomes_push(system):
    sandbox, limiter = system({"sandbox_reply_token_ttl_s": 1})
    ev, to = event_id(), user_id(5)
    token = mint_reply_token(SECRET, to, ev, issued_ms=now_ms() - 2000)  # LINE says: expired
    context = {"received_at": now_ms(), "source": {"type": "user", "userId": to}}
    error, result = limiter.result(limiter.call("reply", {"replyToken": token, "messages": TEXT}, ev, 1, context))
    assert error is None and result["sent_as"] == "push"
    assert sandbox.stats()["calls"]["reply"] == {"400": 1}
    assert [(d["endpoint"], d["to"]) for d in sandbox.deliveries()] == [("push", [to])]


def _leave_reply_started(tmp_path, ev: str, args: dict) -> None:
    """What a rate limiter killed between sending a reply and journaling the answer leaves behind."""
    store = open_store(f"sqlite:///{tmp_path}/rl.db")
    try:
        store.journal_put(JournalEntry(ev, 1, fingerprint("reply", args), "started",
                                       {"method": "POST", "path": "/v2/bot/message/reply", "body": args,
                                        "retry_key": None, "sent_as": "reply"}))
    finally:
        store.close()


@pytest.mark.parametrize("first_attempt_reached_line", [True, False])
def test_reply_left_started_by_a_killed_limiter_is_delivered_exactly_once(system, tmp_path,
                                                                          first_attempt_reached_line):
    sandbox, limiter = system()
    ev, to = event_id(), user_id(6)
    args = {"replyToken": mint_reply_token(SECRET, to, ev), "messages": TEXT}
    _leave_reply_started(tmp_path, ev, args)
    if first_attempt_reached_line:   # the killed limiter's request got through: the token is used
        answer = requests.post(f"{sandbox.url}/v2/bot/message/reply", json=args, timeout=5,
                               headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 200
    context = {"received_at": now_ms(), "source": {"type": "user", "userId": to}}
    error, result = limiter.result(limiter.call("reply", args, ev, 1, context))
    assert error is None and result["sent_as"] == "reply"
    assert result.get("delivered_by_earlier_attempt", False) is first_attempt_reached_line
    again = limiter.result(limiter.call("reply", args, ev, 1, context))   # from the journal now
    assert again == (None, result)
    assert [(d["endpoint"], d["to"]) for d in sandbox.deliveries()] == [("reply", [to])]


@pytest.mark.parametrize("method", ["push", "reply"])
def test_a_limiter_killed_right_after_answering_delivers_nothing_twice(system, tmp_path, method):
    """A "done" LINE drops the repeat of may linger unwritten (ratelimiter/journal.py): killed in
    that window, the journal still says "started". The event's repeat is then sent again and LINE
    drops it: the same call succeeds again and the user got the message once."""
    sandbox, limiter = system(batching="false")
    events = [(event_id(), user_id(500 + n)) for n in range(10)]
    args = [{"to": to, "messages": TEXT} if method == "push" else
            {"replyToken": mint_reply_token(SECRET, to, ev), "messages": TEXT} for ev, to in events]

    def calls(limiter):
        return [limiter.call(method, call_args, ev, 1, {"received_at": now_ms(), "source": {"type": "user",
                                                                                           "userId": to}})
                for (ev, to), call_args in zip(events, args)]
    first = limiter.results(calls(limiter))
    limiter.kill()
    assert all(error is None and result["sent_as"] == method for error, result in first)
    env = limiter_env(sandbox.url, TOKEN, f"sqlite:///{tmp_path}/rl.db", batching="false")
    with RateLimiterProcess(env, tmp_path / "ratelimiter-2.log", cwd=tmp_path) as restarted:
        again = restarted.results(calls(restarted))
    assert all(error is None and result["sent_as"] == method for error, result in again), again
    assert sorted(d["to"][0] for d in sandbox.deliveries()) == sorted(to for _, to in events)


def test_line_4xx_reaches_the_handler_with_lines_message(system):
    sandbox, limiter = system(batching="false")
    error, _ = limiter.result(limiter.call("push", {"to": "Unot-a-user", "messages": TEXT}, event_id(), 1))
    assert error["status"] == 400 and error["retryable"] is False and error["message"]
    assert "to" in str(error.get("details")) or "to" in error["message"]
    assert sandbox.deliveries() == []


def test_wrong_access_token_gives_401_and_the_token_is_not_logged(system):
    sandbox, limiter = system(token="wrong-token-secret-value", batching="false")
    error, _ = limiter.result(limiter.call("push", {"to": user_id(7), "messages": TEXT}))
    assert error["status"] == 401 and "Authentication failed" in error["message"]
    limiter.close_stdin()
    assert limiter.wait_exit() == 0
    assert "wrong-token-secret-value" not in limiter.log()


def test_a_bad_argument_gets_an_error_naming_it_and_nothing_reaches_line(system):
    """Each argument rule is tested in-process (tests/unit/test_endpoint_table.py, test_router.py)."""
    sandbox, limiter = system()
    error, result = limiter.result(limiter.call("push", {"to": user_id(1), "messages": []}, event_id(), 1))
    assert "push: `messages` must be a list of 1 to 5" in error["message"] and result is None
    assert "push" not in sandbox.stats()["calls"]   # (the rate limiter's own reads of the quota may have gone)


def test_bad_requests_on_the_pipe_are_answered_and_garbage_ends_the_process_cleanly(system):
    sandbox, limiter = system()
    unknown = limiter.request("frobnicate", [])
    no_map = limiter.request("call", ["not a map"])
    bad_no = limiter.request("call", [{"event_id": "e", "call_no": 0, "method": "push"}, {}])
    assert "unknown method frobnicate" in limiter.result(unknown)[0]["message"]
    assert "call params must be" in limiter.result(no_map)[0]["message"]
    assert "`call_no` must be an integer >= 1" in limiter.result(bad_no)[0]["message"]
    limiter.send_raw(HEADER.pack(2**31))  # a length no frame may have
    assert limiter.wait_exit() == 2
    assert "protocol_error" in limiter.log() and "exceeds the maximum" in limiter.log()


def test_profile_is_cached_in_the_store_while_fresh(system, tmp_path):
    sandbox, limiter = system()
    to = user_id(8)
    first = limiter.result(limiter.call("profile", {"userId": to}))[1]
    second = limiter.result(limiter.call("profile", {"userId": to}))[1]
    assert first["displayName"] == f"User-{to[-4:]}" and first["cached"] is False
    assert second == dict(first, cached=True)
    assert sandbox.stats()["calls"]["profile"] == {"200": 1}
    missing = limiter.result(limiter.call("profile", {"userId": "U" + "0" * 31 + "x"}))[0]
    assert missing["status"] == 404
    user = limiter.result(limiter.call("user_get", {"userId": to}))[1]
    assert user["profile"]["userId"] == to


def test_content_download_and_size_limit(system):
    sandbox, limiter = system(content_max_bytes=2000)
    small = next(str(n) for n in range(3000, 7000) if (c := message_content(str(n))) and len(c[1]) < 2000)
    large = next(str(n) for n in range(3000, 7000) if (c := message_content(str(n))) and len(c[1]) > 3000)
    error, result = limiter.result(limiter.call("content", {"messageId": small}))
    assert error is None and (result["content_type"], result["data"]) == message_content(small)
    error, result = limiter.result(limiter.call("content", {"messageId": large}))
    assert "larger than the limit of 2000 bytes" in error["message"] and result is None
    # the connection was dropped mid-body; the next download still works
    assert limiter.result(limiter.call("content", {"messageId": small}))[1]["data"] == message_content(small)[1]


def test_user_data_past_user_data_max_bytes_is_refused_naming_the_limit(system):
    _, limiter = system(user_data_max_bytes=100)
    fits = {"note": "x" * 80}                           # 91 bytes as compact JSON
    assert limiter.result(limiter.call("user_set_data", {"userId": "U1", "data": fits})) == (None, None)
    error, _ = limiter.result(limiter.call("user_set_data", {"userId": "U1", "data": {"note": "x" * 90}}))
    assert "it is 101 bytes as JSON, over user_data_max_bytes=100" in error["message"] and not error["retryable"]
    assert limiter.result(limiter.call("user_get", {"userId": "U1"}))[1]["data"] == fits


def test_generic_call_reaches_any_endpoint(system):
    sandbox, limiter = system()
    error, result = limiter.result(limiter.call("call", {"method": "GET", "path": "/v2/bot/info"}))
    assert error is None and result["status"] == 200 and result["body"]["displayName"]
    error, _ = limiter.result(limiter.call("call", {"method": "GET", "path": "/v2/bot/nothing/here"}))
    assert error["status"] == 404


def test_forced_5xx_is_retried_with_the_same_retry_key_and_delivered_once(system):
    # 30 % faults: some call surely meets one; eight in a row (backoff past 10 s) almost never
    sandbox, limiter = system({"sandbox_fault_rate": 0.3}, batching="false", api_max_retries=12)
    events = [(event_id(), user_id(100 + n)) for n in range(30)]
    ids = [limiter.call("push", {"to": to, "messages": TEXT}, ev, 1) for ev, to in events]
    assert all(error is None for error, _ in limiter.results(ids, timeout=60))
    assert sandbox.stats()["calls"]["push"].get("500", 0) > 0
    deliveries = sandbox.deliveries()
    assert sorted((d["to"][0], d["retry_key"]) for d in deliveries) == \
        sorted((to, retry_key(ev, 1)) for ev, to in events)
    assert limiter.wait_stats(lambda s: s.get("retries", 0) > 0)


def test_dropped_connection_after_delivery_push_resent_409_reply_resent_refused(system):
    sandbox, limiter = system({"sandbox_drop_rate": 0.3}, batching="false", api_max_retries=12)
    pushes = [(event_id(), user_id(200 + n)) for n in range(20)]
    ids = [limiter.call("push", {"to": to, "messages": TEXT}, ev, 1) for ev, to in pushes]
    results = limiter.results(ids, timeout=60)
    assert all(error is None for error, _ in results)
    assert sorted(d["to"][0] for d in sandbox.deliveries()) == sorted(to for _, to in pushes)
    assert sandbox.stats()["calls"]["push"].get("409", 0) > 0  # re-sent after a drop: LINE dropped the repeat
    # The handler gets the accepted request's sentMessages even when its answer was lost: LINE's 409
    # repeats them, and the rate limiter passes them on with the accepted request's id.
    sent_ids = {d["to"][0]: d["sent_message_ids"] for d in sandbox.deliveries()}
    assert all([m["id"] for m in result["sentMessages"]] == sent_ids[to]
               for (_, to), (_, result) in zip(pushes, results))
    repeats = [result for _, result in results if "request_id" in result]
    assert repeats and all(result["sentMessages"][0]["quoteToken"] for result in repeats)
    replies = [(event_id(), user_id(300 + n)) for n in range(20)]
    ids = [limiter.call("reply", {"replyToken": mint_reply_token(SECRET, to, ev), "messages": TEXT}, ev, 1,
                        {"received_at": now_ms(), "source": {"userId": to}}) for ev, to in replies]
    answers = limiter.results(ids, timeout=60)
    assert all(error is None and result["sent_as"] == "reply" for error, result in answers)
    # re-sent after a drop: LINE refused the used token, so the first attempt had delivered it
    assert any(result.get("delivered_by_earlier_attempt") for _, result in answers)
    assert "push" not in {d["endpoint"] for d in sandbox.deliveries()[20:]}   # never turned into a push
    reply_deliveries = [d for d in sandbox.deliveries() if d["endpoint"] == "reply"]
    assert len(reply_deliveries) == len({d["to"][0] for d in reply_deliveries}) == 20  # each once, none twice


@pytest.mark.parametrize("failure,reply_max_age_s,sent_as", [
    ("5xx", 50, "reply"), ("5xx", 1, "reply"), ("unreachable", 50, "reply"), ("unreachable", 1, "push")])
def test_a_reply_that_failed_retryably_is_sent_again_on_the_events_next_attempt(system, tmp_path, failure,
                                                                                reply_max_age_s, sent_as):
    """LINE answered 5xx every time, or could not be reached (api_max_retries used up): the journal
    keeps "failed, retryable", which is no final outcome. The event's next attempt (or `frontdesk
    dead-letters retry`) repeats the call; it goes out again, not answered from the journal. A
    token older than reply_max_age_s makes it a push only when no attempt reached LINE: after a
    5xx LINE may have used the token, so the token is tried (here LINE had done nothing: delivered)."""
    ev, to = event_id(), user_id(7)
    args = {"replyToken": mint_reply_token(SECRET, to, ev), "messages": TEXT}
    context = {"received_at": now_ms() - 2000, "source": {"type": "user", "userId": to}}
    with contextlib.ExitStack() as stack:
        if failure == "5xx":
            broken = stack.enter_context(running_sandbox(tmp_path, sandbox_fault_rate=1))
            url = broken.url
        else:   # a port held but not listening: connections are refused, the request never leaves
            holder = stack.enter_context(socket.socket())
            holder.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{holder.getsockname()[1]}"
        env = limiter_env(url, TOKEN, f"sqlite:///{tmp_path}/rl.db", api_max_retries=1)
        limiter = stack.enter_context(RateLimiterProcess(env, tmp_path / "ratelimiter-1.log", cwd=tmp_path))
        error, _ = limiter.result(limiter.call("reply", args, ev, 1, context))
        assert error["status"] == (500 if failure == "5xx" else 0) and error["retryable"] is True
        if failure == "5xx":
            assert broken.deliveries() == [] and broken.stats()["calls"]["reply"] == {"500": 2}
        # A clean stop writes the failure to the journal (killed the moment it answered, it may
        # leave only "started": maybe sent, so the token is tried; the next tests cover that).
        limiter.close_stdin()
        assert limiter.wait_exit(60) == 0
    # LINE works now; the same store (call journal); the token is "too old" for reply_max_age_s=1
    sandbox, limiter = system(reply_max_age_s=reply_max_age_s)
    error, result = limiter.result(limiter.call("reply", args, ev, 1, context))
    assert error is None and result["sent_as"] == sent_as
    assert [(d["endpoint"], d["to"]) for d in sandbox.deliveries()] == [(sent_as, [to])]
    assert limiter.result(limiter.call("reply", args, ev, 1, context)) == (None, result)   # final now


@pytest.mark.parametrize("reply_max_age_s", [50, 1])
def test_a_reply_sent_before_its_connection_dropped_is_never_pushed_on_the_events_next_attempt(
        system, tmp_path, reply_max_age_s):
    """The sandbox delivers the reply, then drops the connection (every time; no retries left):
    the call fails retryably and the handler's event comes again. Its repeat finds the token used.
    Within the token's lifetime (reply_max_age_s) that refusal means the first attempt delivered
    it; past it the outcome is unknown. Either way it never goes out a second time as a push."""
    ev, to = event_id(), user_id(9)
    args = {"replyToken": mint_reply_token(SECRET, to, ev), "messages": TEXT}
    context = {"received_at": now_ms() - 2000, "source": {"type": "user", "userId": to}}
    with running_sandbox(tmp_path, sandbox_drop_rate=1) as dropping:
        env = limiter_env(dropping.url, TOKEN, f"sqlite:///{tmp_path}/rl.db", api_max_retries=0)
        with RateLimiterProcess(env, tmp_path / "ratelimiter-1.log", cwd=tmp_path) as limiter:
            error, _ = limiter.result(limiter.call("reply", args, ev, 1, context))
        assert [(d["endpoint"], d["to"]) for d in dropping.deliveries()] == [("reply", [to])]
    assert error["status"] == 0 and error["retryable"] is True
    assert "LINE may have acted on it (a repeat is safe: a reply token works once)" in error["message"]
    assert "not sent again" not in error["message"]
    # LINE (a fresh sandbox, told that the token was used) and the same call journal, as on the
    # event's next attempt
    sandbox, limiter = system(reply_max_age_s=reply_max_age_s)
    assert requests.post(f"{sandbox.url}/v2/bot/message/reply", json=args, timeout=5,
                         headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    error, result = limiter.result(limiter.call("reply", args, ev, 1, context))
    if reply_max_age_s == 50:
        assert error is None and result == {"sent_as": "reply", "delivered_by_earlier_attempt": True}
    else:
        assert result is None and error["retryable"] is False and "outcome unknown" in error["message"]
    assert [d["endpoint"] for d in sandbox.deliveries()] == ["reply"]    # the one that used the token
    assert limiter.result(limiter.call("reply", args, ev, 1, context)) == (error, result)   # final now


def test_429_pauses_the_endpoint_and_retries(system):
    # The limiter believes push allows 1000/s; "LINE" allows 5/s: the 429s are LINE's, and retried.
    sandbox, limiter = system({"sandbox_rate_limits": "push=5/s"}, batching="false",
                              rate_limits="push=1000/s", api_max_retries=20)
    events = [(event_id(), user_id(400 + n)) for n in range(15)]
    ids = [limiter.call("push", {"to": to, "messages": TEXT}, ev, 1) for ev, to in events]
    assert all(error is None for error, _ in limiter.results(ids, timeout=30))
    assert sandbox.stats()["http_429"] > 0
    assert sorted(d["to"][0] for d in sandbox.deliveries()) == sorted(to for _, to in events)
    assert limiter.wait_stats(lambda s: s.get("429s", 0) > 0 and s.get("retries", 0) >= s["429s"])


def test_stdin_eof_finishes_queued_calls_then_exits_0(system):
    sandbox, limiter = system(batching="false", rate_limits="push=50/s")
    ids = [limiter.call("push", {"to": user_id(600 + n), "messages": TEXT}, event_id(), 1) for n in range(40)]
    limiter.close_stdin()
    assert limiter.wait_exit(timeout=10) == 0
    assert all(error is None for error, _ in limiter.results(ids, timeout=1))
    assert len(sandbox.deliveries()) == 40
    assert limiter.stats and limiter.stats[-1]["calls"]["push"] == {"200": 40}


def test_at_stop_its_own_reads_of_an_unreachable_line_are_dropped_not_retried(tmp_path):
    """The quota and webhook reads it makes at start, against a LINE it cannot reach: a stop soon
    after once waited out their six attempts each (4-5 s); now they are answered unsent at once
    (that a handler's call still goes: tests/unit/test_sending.py)."""
    env = limiter_env("http://127.0.0.1:9", TOKEN, f"sqlite:///{tmp_path}/rl.db")   # nothing listens there
    limiter = RateLimiterProcess(env, tmp_path / "ratelimiter.log", cwd=tmp_path)
    try:
        wait_until(lambda: "event=api_connection_error" in limiter.log(), timeout=30, message="a read failed")
        limiter.close_stdin()
        assert limiter.wait_exit(timeout=30) == 0
        log = limiter.log()
        assert "webhook_check_failed problem='cannot read the webhook endpoint: not sent: the rate limiter is stopping'" in log
        assert "attempt=6" not in log
    finally:
        limiter.kill()
