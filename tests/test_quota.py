"""The month's messages live, through real processes: a rate limiter (`python -m
frontdesk.ratelimiter`) against the sandbox as LINE, a real SQLite store. Counting as LINE bills
(recipients per request, a group's members), LINE's figures and the webhook read on a timer, the
warning and the budget at their thresholds, each reply_expiry choice (docs/ratelimiter.md, "The
month's messages")."""
from __future__ import annotations

import time
import uuid

import pytest
import requests

from frontdesk.sandbox.webhooks import mint_reply_token, user_id
from frontdesk.sandbox.world import World
from tests.ratelimiter_client import RateLimiterProcess, limiter_env
from tests.sandbox_harness import AUTH, SECRET, TOKEN, running_sandbox

TEXT = [{"type": "text", "text": "hello"}]
GROUP = "C" + "2" * 32
PUBLIC_URL = "https://bot.example.com/callback"


@pytest.fixture
def sandbox(tmp_path):
    with running_sandbox(tmp_path, sandbox_reply_token_ttl_s=60) as running:
        yield running


def start_limiter(tmp_path, sandbox, name="rl", **knobs) -> RateLimiterProcess:
    env = limiter_env(sandbox.url, TOKEN, f"sqlite:///{tmp_path}/store.db", **knobs)
    return RateLimiterProcess(env, tmp_path / f"{name}.log", cwd=tmp_path)


def now_ms() -> int:
    return int(time.time() * 1000)


def consumption(sandbox) -> int:
    return requests.get(f"{sandbox.url}/v2/bot/message/quota/consumption", headers=AUTH, timeout=5).json()["totalUsage"]


def set_channel(sandbox, **settings) -> None:
    requests.put(f"{sandbox.url}/sandbox/channel", json=settings, timeout=5).raise_for_status()


def reply_call(limiter, to: str, age_s: float, token_age_s: float | None = None, **call) -> tuple:
    """A reply to `to` for an event received `age_s` ago, whose token LINE issued `token_age_s` ago."""
    ev = uuid.uuid4().hex
    token = mint_reply_token(SECRET, to, ev, issued_ms=now_ms() - int(1000 * (token_age_s or age_s)))
    context = {"received_at": now_ms() - int(1000 * age_s), "source": {"type": "user", "userId": to}}
    return limiter.result(limiter.call("reply", {"replyToken": token, "messages": TEXT}, ev, 1, context))


def quota(limiter, predicate, timeout: float = 20.0) -> dict:
    return limiter.wait_stats(lambda s: "quota" in s and predicate(s["quota"]), timeout)["quota"]


def test_a_mixed_runs_month_count_is_the_sandboxs_consumption_and_a_restart_keeps_it(tmp_path, sandbox):
    members = len(World().members(GROUP))
    with start_limiter(tmp_path, sandbox, batching="false") as limiter:
        calls = [limiter.call("push", {"to": user_id(n), "messages": TEXT * 2}, uuid.uuid4().hex, 1) for n in range(3)]
        calls.append(limiter.call("push", {"to": GROUP, "messages": TEXT}, uuid.uuid4().hex, 1))
        calls.append(limiter.call("push", {"to": GROUP, "messages": TEXT * 3}, uuid.uuid4().hex, 1))
        calls.append(limiter.call("multicast", {"to": [user_id(n) for n in range(10, 17)], "messages": TEXT},
                                  uuid.uuid4().hex, 1))
        assert all(error is None for error, _ in limiter.results(calls))
        assert all(reply_call(limiter, user_id(n), age_s=1)[0] is None for n in range(4))
        billed = 3 + 2 * members + 7
        assert consumption(sandbox) == billed
        month = quota(limiter, lambda q: q["counted"] == billed and q["line"]["used"] is not None)
        assert month["sent"] == {"reply": 4, "push": 3 + 2 * members, "multicast": 7, "narrowcast": 0, "broadcast": 0}
        limiter.close_stdin()
        assert limiter.wait_exit() == 0
        assert "event=member_count_failed" not in limiter.log()
    with start_limiter(tmp_path, sandbox, name="rl2") as restarted:   # the store kept the month's count
        month = quota(restarted, lambda q: q["counted"] == billed)
        assert month["sent"]["reply"] == 4 and month["line"]["used"] == billed


def test_the_warning_and_the_budget_act_at_their_thresholds(tmp_path, sandbox):
    knobs = dict(batching="false", push_budget=10, quota_warning_share=0.5, reply_expiry="push-within-budget")
    with start_limiter(tmp_path, sandbox, **knobs) as limiter:
        assert limiter.result(limiter.call("multicast", {"to": [user_id(n) for n in range(4)], "messages": TEXT},
                                           uuid.uuid4().hex, 1))[0] is None
        under = quota(limiter, lambda q: q["counted"] == 4)
        assert (under["warning"], under["remaining"], under["budget"]) == (False, 6, 10)
        error, result = reply_call(limiter, user_id(20), age_s=120)    # 4 of 10 used: under half, a push
        assert error is None and result["sent_as"] == "push"
        at = quota(limiter, lambda q: q["counted"] == 5)
        assert (at["warning"], at["warning_limit"], at["remaining"]) == (True, "push_budget", 5)
        error, result = reply_call(limiter, user_id(21), age_s=120)    # 5 of 10: dead-lettered, not pushed
        assert result is None and error["retryable"] is False and "push_budget" in error["message"]
        assert quota(limiter, lambda q: q["reply_expired"] == {"push": 1, "dead_letter": 1})["counted"] == 5
        log = limiter.log()
    assert consumption(sandbox) == 5
    assert [d["to"] for d in sandbox.deliveries() if d["endpoint"] == "push"] == [[user_id(20)]]
    assert log.count("event=quota_warning") == 1 and "limit='push_budget' limit_messages=10" in log
    assert "event=reply_expired action=push" in log and "event=reply_expired action=dead_letter" in log


def test_lines_target_limit_counts_against_what_is_left(tmp_path, sandbox):
    set_channel(sandbox, quota=100, sent_by_manager=95)    # LINE's figure has the Manager's sends
    with start_limiter(tmp_path, sandbox, quota_warning_share=0.9) as limiter:
        month = quota(limiter, lambda q: q["line"]["used"] == 95)
        assert (month["line"]["quota"], month["remaining"], month["warning"], month["warning_limit"]) == \
            (100, 5, True, "LINE's quota")
        assert "event=quota_warning" in limiter.log()


@pytest.mark.parametrize("policy, refused_by_line, outcome", [
    ("push", False, "push"), ("push", True, "push"),
    ("dead-letter", False, "dead_letter"), ("dead-letter", True, "dead_letter"),
    ("push-within-budget", False, "push"),
])
def test_each_reply_expiry_choice_with_an_expired_token(tmp_path, sandbox, policy, refused_by_line, outcome):
    with start_limiter(tmp_path, sandbox, reply_expiry=policy, reply_max_age_s=50) as limiter:
        if refused_by_line:   # young by frontdesk's clock, but LINE says the token expired
            error, result = reply_call(limiter, user_id(30), age_s=1, token_age_s=120)
        else:                 # older than reply_max_age_s: decided before anything is sent
            error, result = reply_call(limiter, user_id(30), age_s=120)
        month = quota(limiter, lambda q: sum(q["reply_expired"].values()) == 1)
        log = limiter.log()
    assert month["reply_expired"][outcome] == 1
    pushes = [d["to"] for d in sandbox.deliveries() if d["endpoint"] == "push"]
    if outcome == "push":
        assert error is None and result["sent_as"] == "push" and pushes == [[user_id(30)]]
    else:
        assert result is None and error["retryable"] is False and "reply_expiry=dead-letter" in error["message"]
        assert pushes == []
    assert f"event=reply_expired action={outcome}" in log


def test_the_webhook_endpoint_is_checked_on_the_timer(tmp_path, sandbox):
    set_channel(sandbox, webhook_endpoint="https://old-tunnel.example.com/callback", webhook_active=True)
    with start_limiter(tmp_path, sandbox, public_url=PUBLIC_URL, quota_poll_s=1) as limiter:
        wrong = quota(limiter, lambda q: q["webhook"] is not None)["webhook"]
        assert not wrong["ok"] and "old-tunnel.example.com" in wrong["problem"] and PUBLIC_URL in wrong["problem"]
        set_channel(sandbox, webhook_endpoint=PUBLIC_URL, webhook_active=False)
        off = quota(limiter, lambda q: "Use webhook" in (q["webhook"]["problem"] or ""))["webhook"]
        assert off["active"] is False
        set_channel(sandbox, webhook_active=True)
        assert quota(limiter, lambda q: q["webhook"]["ok"])["webhook"]["endpoint"] == PUBLIC_URL
        log = limiter.log()
    assert log.count("event=webhook_check_failed") == 2 and "event=webhook_check_ok" in log
