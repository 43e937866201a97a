"""The rate limiter under load: pacing at 3x overload, push->multicast batching, kill -9 mid-burst.

Real `python -m frontdesk.ratelimiter` subprocesses, the sandbox over real HTTP with its own 429 buckets, a real
SQLite journal. Counts are asserted strictly (no 429, nothing lost, nothing twice); rates loosely.
"""
from __future__ import annotations

import time
import uuid
from collections import Counter

import pytest

from frontdesk.sandbox.webhooks import user_id
from frontdesk.store import open_store
from tests.helpers import wait_until
from tests.ratelimiter_client import RateLimiterProcess, limiter_env
from tests.sandbox_harness import TOKEN, running_sandbox

TEXT = [{"type": "text", "text": "hello everyone"}]


def start_limiter(tmp_path, sandbox, **knobs) -> RateLimiterProcess:
    env = limiter_env(sandbox.url, TOKEN, f"sqlite:///{tmp_path}/rl.db", **knobs)
    return RateLimiterProcess(env, tmp_path / "ratelimiter.log", cwd=tmp_path)


def all_deliveries(sandbox) -> list[dict]:
    deliveries, since = [], 0
    while page := sandbox.deliveries(since):
        deliveries += page
        since = page[-1]["id"]
    return deliveries


def recipients(deliveries) -> Counter:
    return Counter(user for d in deliveries for user in d["to"])


@pytest.mark.slow
def test_calls_offered_at_3x_the_limit_for_5_s_no_429_and_the_limit_is_reached(tmp_path):
    # A limit far inside what a busy 2-core machine sustains with sandbox, limiter and test on it
    # (at 300/s a loaded machine delivered 253/s: the test measured the machine, not the pacing).
    # 5 s of calls: the first burst (limit/20) moves the measured rate by 0.8 %, inside the 5 % allowed.
    limit = 100
    with running_sandbox(tmp_path, sandbox_rate_limits=f"push={limit}/s") as sandbox, \
            start_limiter(tmp_path, sandbox, batching="false", rate_limits=f"push={limit}/s",
                          api_connections=2) as limiter:
        calls = [{"method": "push", "args": {"to": user_id(n % 5000), "messages": TEXT},
                  "event_id": uuid.uuid4().hex, "call_no": 1} for n in range(5 * limit)]
        ids, offered_at = [], time.monotonic()
        for start in range(0, len(calls), limit):  # 3x the limit offered, a second's worth at a time
            ids += limiter.calls(calls[start:start + limit])
            pause = offered_at + (start + limit) / (3 * limit) - time.monotonic()
            if pause > 0:
                time.sleep(pause)  # pacing the offered load (open loop), not synchronisation
        answers = limiter.results(ids, timeout=60)
        assert [e for e, _ in answers if e] == []
        stats = sandbox.stats()
        assert stats["http_429"] == 0, stats
        deliveries = all_deliveries(sandbox)
        assert len(deliveries) == len(calls)
        times = sorted(d["time"] for d in deliveries)
        rate = (len(times) - 1) / ((times[-1] - times[0]) / 1000.0)
        # the limiter's burst (limit/20) lets the first limit/20 go at once: allow 5% around the limit
        assert 0.95 * limit <= rate <= 1.05 * limit, f"achieved {rate:.0f} calls/s against {limit}/s"
        queues = limiter.wait_stats(lambda s: "push" in s.get("queues", {}))
        assert queues["calls"]["push"]["200"] > 0


def test_1000_identical_pushes_become_at_most_3_multicasts_each_user_once(tmp_path):
    with running_sandbox(tmp_path) as sandbox, start_limiter(tmp_path, sandbox) as limiter:
        users = [user_id(n) for n in range(1000)]
        ids = limiter.calls([{"method": "push", "args": {"to": u, "messages": TEXT},
                              "event_id": uuid.uuid4().hex, "call_no": 1} for u in users])
        answers = limiter.results(ids, timeout=20)
        assert all(error is None and result["sent_as"] == "multicast" for error, result in answers)
        calls = sandbox.stats()["calls"]
        assert sum(calls["multicast"].values()) <= 3 and "push" not in calls
        deliveries = all_deliveries(sandbox)
        assert recipients(deliveries) == Counter(users)
        assert all(d["endpoint"] == "multicast" and len(d["to"]) <= 500 for d in deliveries)
        stats = limiter.wait_stats(lambda s: s.get("batched_calls") == 1000)
        assert stats["batches"] <= 3 and stats["batch_max"] <= 500


def test_batching_groups_only_identical_messages_to_users(tmp_path):
    with running_sandbox(tmp_path) as sandbox, start_limiter(tmp_path, sandbox, batch_window_ms=200) as limiter:
        group = "C" + "2" * 32
        items = [{"method": "push", "args": {"to": user_id(n), "messages": TEXT}, "event_id": uuid.uuid4().hex,
                  "call_no": 1} for n in range(3)]
        items.append({"method": "push", "args": {"to": user_id(3), "messages": [{"type": "text", "text": "other"}]},
                      "event_id": uuid.uuid4().hex, "call_no": 1})
        items.append({"method": "push", "args": {"to": group, "messages": TEXT}, "event_id": uuid.uuid4().hex,
                      "call_no": 1})
        answers = limiter.results(limiter.calls(items), timeout=10)
        assert [r["sent_as"] for _, r in answers] == ["multicast"] * 3 + ["push", "push"]
        by_endpoint = sorted((d["endpoint"], len(d["to"])) for d in sandbox.deliveries())
        assert by_endpoint == [("multicast", 3), ("push", 1), ("push", 1)]


def test_batching_off_sends_each_push(tmp_path):
    with running_sandbox(tmp_path) as sandbox, start_limiter(tmp_path, sandbox, batching="false") as limiter:
        ids = limiter.calls([{"method": "push", "args": {"to": user_id(n), "messages": TEXT},
                              "event_id": uuid.uuid4().hex, "call_no": 1} for n in range(50)])
        assert all(r["sent_as"] == "push" for _, r in limiter.results(ids))
        calls = sandbox.stats()["calls"]
        assert calls["push"] == {"200": 50} and "multicast" not in calls   # (beside the quota's reads)


def _resend_unanswered(limiter_before, limiter_after, items, ids) -> list:
    """What the dispatcher does after restarting a dead rate limiter: make every unanswered call again."""
    pending = [item for item, msgid in zip(items, ids) if msgid not in limiter_before.answers]
    new_ids = limiter_after.calls(pending) if pending else []
    return pending, limiter_after.results(new_ids, timeout=30)


@pytest.mark.parametrize("batching, count, latency_ms", [("false", 100, 20), ("true", 600, 300)])
def test_kill_9_mid_burst_then_restart_nothing_lost_nothing_twice(tmp_path, batching, count, latency_ms):
    # Injected latency keeps requests in flight ("started" in the journal) when the kill comes.
    with running_sandbox(tmp_path, sandbox_latency_ms=latency_ms) as sandbox:
        users = [user_id(n) for n in range(count)]
        items = [{"method": "push", "args": {"to": u, "messages": TEXT}, "event_id": uuid.uuid4().hex,
                  "call_no": 1} for u in users]
        first = start_limiter(tmp_path, sandbox, batching=batching, rate_limits="push=200/s,multicast=2/s")
        try:
            ids = first.calls(items)
            store = open_store(f"sqlite:///{tmp_path}/rl.db")
            try:
                started = wait_until(lambda: store.journal_unfinished(), timeout=10,
                                     message="a call journaled as started")
            finally:
                store.close()
            first.proc.kill()  # SIGKILL: no chance to finish anything
            first.proc.wait()
        finally:
            first.kill()
        assert len(first.answers) < len(items)
        with start_limiter(tmp_path, sandbox, batching=batching, rate_limits="push=200/s,multicast=2/s") as second:
            pending, answers = _resend_unanswered(first, second, items, ids)
            assert [e for e, _ in answers if e] == []
            assert "journal_recovery resending=" in second.log()
            deliveries = all_deliveries(sandbox)
            assert recipients(deliveries) == Counter(users), "each user exactly once"
        assert started and pending
