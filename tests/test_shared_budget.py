"""One channel, one rate budget: rate limiters on one store stay within LINE's limit together.

Each dispatcher runs a rate limiter. In process (with real time and threads): two schedulers
sharing a store, a store that cannot lease; the slices' arithmetic alone is in
tests/unit/test_shared_budget_slices.py. Then real processes on one SQLite store, sending replies to the sandbox, which enforces the same
limit with 429s: three `python -m frontdesk.ratelimiter` processes driven directly, and three
whole dispatchers (with the echo bot) draining a queue. Counts are asserted strictly (no 429,
every reply delivered once), the combined rate within 5 % of the limit; one process of the three
is killed midway and the other two take its share.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

import pytest

from frontdesk.ratelimiter.buckets import Scheduler
from frontdesk.ratelimiter.shared_budget import LATE_S, MAX_AHEAD_S, SharedBudget
from frontdesk.sandbox.webhooks import EventFactory, mint_reply_token, user_id, user_source
from frontdesk.store import open_store
from tests.helpers import wait_until
from tests.test_scale_out import ECHO
from tests.ratelimiter_client import RateLimiterProcess, limiter_env
from tests.sandbox_harness import SECRET, TOKEN, running_sandbox
from tests.test_ratelimiter_load import all_deliveries

LIMIT = 200            # replies per second for the channel
OFFERED_S = 3          # 3 rate limiters offered LIMIT each for this long: 3x the limit, 9 s of calls
TEXT = [{"type": "text", "text": "thanks"}]


# --- in process: schedulers sharing one store -------------------------------------------------------

def test_two_schedulers_on_one_store_never_exceed_the_rate_together(tmp_path):
    """Two rate limiters' schedulers (one event loop here, one store): every call of both is taken
    from leased slices, so no stretch of time sees more than the rate and one small burst."""
    rate, calls_each = 100, 60
    store = open_store(f"sqlite:///{tmp_path}/budget.db")

    async def run() -> list[float]:
        times: list[float] = []
        schedulers = []
        for _ in range(2):
            scheduler = Scheduler({"push": (rate, 1.0)})
            scheduler.budget = SharedBudget(store, scheduler.rates(), scheduler.notify)
            schedulers.append(scheduler)
            for n in range(calls_each):
                scheduler.submit("push", n)
            scheduler.close()

        async def sender(scheduler):
            while await scheduler.take() is not None:
                times.append(time.monotonic())
        await asyncio.wait_for(asyncio.gather(*(sender(s) for s in schedulers for _ in range(2))), 30)
        for scheduler in schedulers:
            scheduler.budget.close()
        return sorted(times)

    try:
        times = asyncio.run(run())
    finally:
        store.close()
    assert len(times) == 2 * calls_each
    window = 0.2
    busiest = max(sum(1 for t in times if start <= t < start + window) for start in times)
    # alone, each would send rate * window (and a burst) in every window: together twice that
    assert busiest <= rate * (window + 2 * LATE_S) + 2, f"{busiest} calls within {window} s at {rate}/s"


def test_a_budget_reserved_far_ahead_by_another_rate_limiter_is_asked_again_only_when_it_comes_near(tmp_path):
    """60 broadcasts an hour: one rate limiter's call reserves the next minute; another's waits
    that minute (less MAX_AHEAD_S) before it even asks the store again."""
    store = open_store(f"sqlite:///{tmp_path}/budget.db")

    async def run() -> tuple[float, float]:
        woken = asyncio.Event()
        first = SharedBudget(store, {"broadcast": 60 / 3600}, woken.set)
        second = SharedBudget(store, {"broadcast": 60 / 3600}, woken.set)
        try:
            delays = []
            for budget in (first, second):
                woken.clear()
                budget.delay("broadcast", time.monotonic(), demand=1)   # asks for a lease
                await asyncio.wait_for(woken.wait(), 10)
                delays.append(budget.delay("broadcast", time.monotonic(), 1))
            return delays[0], delays[1]
        finally:
            first.close()
            second.close()

    try:
        first_delay, second_delay = asyncio.run(run())
    finally:
        store.close()
    assert first_delay < 1.0   # at once (or asking again, had a stalled machine let its token expire)
    assert 60 - MAX_AHEAD_S - 5 < second_delay <= 60 - MAX_AHEAD_S


def test_calls_wait_while_the_store_cannot_lease_and_the_failure_is_logged(tmp_path, caplog):
    store = open_store(f"sqlite:///{tmp_path}/budget.db")
    store.close()   # every lease now fails with StoreUnavailable

    async def run():
        scheduler = Scheduler({"push": (100, 1.0)})
        scheduler.budget = SharedBudget(store, scheduler.rates(), scheduler.notify)
        scheduler.submit("push", "call")
        try:
            with pytest.raises(asyncio.TimeoutError):   # not sent without a lease: no 429 risked
                await asyncio.wait_for(scheduler.take(), 1.2)
        finally:
            scheduler.budget.close()

    with caplog.at_level("WARNING", logger="frontdesk.ratelimiter"):
        asyncio.run(run())
    failures = [r.getMessage() for r in caplog.records if "rate_budget_unavailable" in r.getMessage()]
    assert len(failures) >= 2 and "is closed" in failures[0]   # asked again after STORE_RETRY_S


# --- real processes -----------------------------------------------------------------------------------------

def reply_calls(count: int) -> list[dict]:
    calls = []
    for n in range(count):
        event_id, user = uuid.uuid4().hex, user_id(n % 5000)
        calls.append({"method": "reply", "event_id": event_id, "call_no": 1,
                      "args": {"replyToken": mint_reply_token(SECRET, user, event_id), "messages": TEXT},
                      "context": {"received_at": int(time.time() * 1000), "source": {"type": "user", "userId": user}}})
    return calls


def shares(limiter: RateLimiterProcess) -> float:
    """The share of the reply budget this rate limiter leased in its latest stats second."""
    latest = limiter.stats[-1] if limiter.stats else {}
    return latest.get("budget", {}).get("reply", {}).get("share", 0.0)


@pytest.mark.slow
def test_three_rate_limiters_on_one_store_share_the_limit_and_a_killed_ones_share_goes_to_the_others(tmp_path):
    store = f"sqlite:///{tmp_path}/shared.db"
    with running_sandbox(tmp_path, sandbox_rate_limits=f"reply={LIMIT}/s") as sandbox:
        limiters = [RateLimiterProcess(limiter_env(sandbox.url, TOKEN, store, rate_limits=f"reply={LIMIT}/s",
                                                   api_connections=4),
                                       tmp_path / f"ratelimiter-{n}.log", cwd=tmp_path) for n in range(3)]
        try:
            offered = [reply_calls(LIMIT * OFFERED_S) for _ in limiters]
            msgids: list[list[int]] = [[] for _ in limiters]
            started = time.monotonic()
            for tenth in range(OFFERED_S * 10):   # a tenth of a second's worth to each, open loop
                for n, limiter in enumerate(limiters):
                    msgids[n] += limiter.calls(offered[n][tenth * LIMIT // 10:(tenth + 1) * LIMIT // 10])
                pause = started + (tenth + 1) / 10 - time.monotonic()
                if pause > 0:
                    time.sleep(pause)   # pacing the offered load, not synchronisation
            wait_until(lambda: all(shares(limiter) > 0.2 for limiter in limiters), 10,
                       message="all three rate limiters leasing a share of the budget")

            victim, survivors = limiters[0], limiters[1:]
            victim.proc.kill()   # SIGKILL, with calls queued: its leased slices simply run out
            victim.proc.wait()
            killed_at = time.monotonic()
            wait_until(lambda: sum(shares(limiter) for limiter in survivors) > 0.9, 10,
                       message="the survivors taking the killed rate limiter's share")
            took_over_s = time.monotonic() - killed_at
            # its dispatcher's events are delivered again elsewhere: their calls come to a survivor
            unanswered = [call for call, msgid in zip(offered[0], msgids[0]) if msgid not in victim.answers]
            resent = survivors[0].calls(unanswered)

            answers = [answer for n, limiter in enumerate(survivors, 1) for answer in limiter.results(msgids[n], 60)]
            answers += survivors[0].results(resent, 60)
            assert [error for error, _ in answers if error] == []
            stats = sandbox.stats()
            assert stats["http_429"] == 0, stats
            deliveries = all_deliveries(sandbox)
            every_event = [call["event_id"] for calls in offered for call in calls]
            assert Counter(d["source_event"] for d in deliveries) == Counter(every_event), \
                "each reply delivered exactly once"
            times = sorted(d["time"] for d in deliveries)
            rate = (len(times) - 1) / ((times[-1] - times[0]) / 1000.0)
            assert 0.95 * LIMIT <= rate <= 1.05 * LIMIT, f"combined {rate:.0f} replies/s against {LIMIT}/s"
            assert took_over_s < 5
            budget = [limiter_stats["budget"]["reply"] for limiter in survivors for limiter_stats in limiter.stats
                      if "reply" in limiter_stats.get("budget", {})]
            leases, sent = sum(b["leases"] for b in budget), sum(b["sent"] for b in budget)
            assert leases <= sent / 5, f"{leases} store writes for {sent} calls: not a slice per write"
        finally:
            for limiter in limiters:
                limiter.kill()


@pytest.mark.slow
def test_three_dispatchers_draining_one_queue_stay_within_the_limit_and_survive_losing_one(harness, tmp_path):
    # a whole event costs ~4 ms of CPU here (dispatcher, handler, rate limiter, sandbox): a limit
    # of 100/s keeps the busy 2-core machine out of what is measured
    limit, users = 100, 150
    factory = EventFactory(SECRET)
    with running_sandbox(tmp_path, sandbox_rate_limits=f"reply={limit}/s") as sandbox:
        dispatchers = [harness.start(handlers=2, handler=ECHO, env={"LINE_CHANNEL_ACCESS_TOKEN": TOKEN},
                                     api_base=sandbox.url, api_data_base=sandbox.url,
                                     rate_limits=f"reply={limit}/s", event_deadline_s=20) for _ in range(3)]
        appended = []
        started = time.monotonic()
        for tenth in range(OFFERED_S * 10):   # 3x the limit offered for OFFERED_S, as webhooks would come
            events = [factory.event("text", user_source(user_id(n % users)), text=f"m{n}")
                      for n in range(tenth * 3 * limit // 10, (tenth + 1) * 3 * limit // 10)]
            harness.store.append("Udest", events, int(time.time() * 1000))
            appended += [event["webhookEventId"] for event in events]
            pause = started + (tenth + 1) / 10 - time.monotonic()
            if pause > 0:
                time.sleep(pause)   # pacing the offered load, not synchronisation

        def shares(processes) -> float:
            total = 0.0
            for process in processes:
                doc = harness.status(process) or {}
                stats = (doc.get("ratelimiter") or {}).get("stats") or {}
                total += stats.get("budget", {}).get("reply", {}).get("share", 0.0)
            return total
        wait_until(lambda: all(shares([d]) > 0.15 for d in dispatchers), 15,
                   message="all three rate limiters leasing a share")
        victim, survivors = dispatchers[0], dispatchers[1:]
        victim.kill()   # SIGKILL: its rate limiter and handlers go with it, its leases run out
        victim.wait(10)
        killed_at = time.monotonic()
        wait_until(lambda: shares(survivors) > 0.9, 15, message="the other two taking the killed one's share")
        took_over_s = time.monotonic() - killed_at

        harness.wait_done(len(appended), timeout=90)
        assert sandbox.stats()["http_429"] == 0, sandbox.stats()
        replies = [d for d in all_deliveries(sandbox) if d["endpoint"] == "reply"]
        assert Counter(d["source_event"] for d in replies) == Counter(appended), "each event replied to once"
        times = sorted(d["time"] for d in replies)
        rate = (len(times) - 1) / ((times[-1] - times[0]) / 1000.0)
        assert 0.95 * limit <= rate <= 1.05 * limit, f"combined {rate:.1f} replies/s against {limit}/s"
        assert took_over_s < 10
