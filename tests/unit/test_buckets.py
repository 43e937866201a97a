"""The rate limiter's pacing (ratelimiter/buckets.py) with a clock the test moves: token buckets,
an endpoint's queue (retries before newer calls), and the scheduler's rule (the oldest ready call
of any endpoint goes first; nothing goes before its token)."""
from __future__ import annotations

import asyncio

import pytest

from frontdesk.ratelimiter.buckets import EndpointQueue, Scheduler, TokenBucket
from tests.unit.clock import Clock


# --- the bucket -------------------------------------------------------------------------------------------
def test_a_bucket_starts_full_with_a_twentieth_of_a_seconds_worth():
    bucket = TokenBucket(2000, 1.0, now=0.0)
    assert bucket.burst == 100 and bucket.delay(0.0) == 0.0
    for _ in range(100):
        bucket.take(0.0)
    assert bucket.delay(0.0) == pytest.approx(1 / 2000)


def test_a_slow_bucket_holds_one_token_and_refills_at_its_rate():
    bucket = TokenBucket(60, 3600.0, now=0.0)
    assert bucket.burst == 1.0
    bucket.take(0.0)
    assert bucket.delay(0.0) == pytest.approx(60.0)
    assert bucket.delay(30.0) == pytest.approx(30.0)
    assert bucket.delay(60.0) == 0.0
    assert bucket.delay(600.0) == 0.0 and bucket.tokens == 1.0     # never more than the burst


def test_a_pause_after_a_429_holds_a_full_bucket_back():
    bucket = TokenBucket(2000, 1.0, now=0.0)
    bucket.pause(0.0, 0.2)
    bucket.pause(0.0, 0.1)                        # a shorter pause does not shorten it
    assert bucket.delay(0.05) == pytest.approx(0.15)
    assert bucket.delay(0.2) == 0.0


# --- an endpoint's queue -----------------------------------------------------------------------------------
def test_a_queue_hands_out_in_arrival_order_and_counts_waits():
    queue = EndpointQueue("push", 2000, 1.0, now=0.0)
    queue.waiting.extend([(0.0, "a"), (0.5, "b")])
    assert queue.head(1.0) == (0.0, 0.0)
    assert [queue.pop(1.0), queue.pop(1.0)] == ["a", "b"]
    assert queue.head(1.0) is None
    assert queue.stats() == {"queued": 0, "sent": 2, "wait_ms_avg": 750.0, "wait_ms_max": 1000.0}
    assert queue.stats()["sent"] == 0            # stats cover the time since they were last read


def test_a_due_retry_goes_before_newer_calls_and_a_retry_not_due_waits():
    scheduler = Scheduler({}, clock=Clock(100.0))
    scheduler.submit("push", "new")
    scheduler.retry("push", "again", 0.5, enqueued_at=50.0, pause_endpoint=False)
    assert scheduler.next_ready(100.0) == ("new", None)            # the retry is not due yet
    scheduler.submit("push", "newer")
    assert scheduler.next_ready(100.6) == ("again", None)           # due: ahead of newer calls
    assert scheduler.next_ready(100.6) == ("newer", None)


# --- the scheduler -----------------------------------------------------------------------------------------
def test_the_oldest_ready_call_of_any_endpoint_goes_first():
    clock = Clock(100.0)
    scheduler = Scheduler({}, clock=clock)
    scheduler.submit("reply", "reply-1")
    clock.now = 100.1
    scheduler.submit("push", "push-1")
    clock.now = 100.15
    scheduler.submit("reply", "reply-2")
    assert [scheduler.next_ready(100.2)[0] for _ in range(3)] == ["reply-1", "push-1", "reply-2"]
    assert scheduler.next_ready(100.2) == (None, None) and scheduler.pending() == 0


def test_a_call_that_yields_goes_only_when_no_other_call_of_any_endpoint_may():
    clock = Clock(100.0)
    scheduler = Scheduler({"reply": (1, 1.0)}, clock=clock, yields=lambda item: item.startswith("loading"))
    scheduler.submit("loading", "loading-1")
    scheduler.submit("loading", "loading-2")
    clock.now = 100.1
    scheduler.submit("reply", "reply-1")
    scheduler.submit("reply", "reply-2")
    assert scheduler.next_ready(100.1)[0] == "reply-1"          # older loading calls wait behind it
    assert [scheduler.next_ready(100.1)[0] for _ in range(2)] == ["loading-1", "loading-2"]  # reply-2 has no token
    assert scheduler.next_ready(101.1)[0] == "reply-2"


def test_a_call_that_yields_goes_after_a_later_call_of_its_own_endpoint_and_in_its_own_order():
    """The rate limiter's own reads share `default` with a handler's calls: at one call per 3 s,
    three reads queued at start once put a handler's first call 9 s back."""
    clock = Clock(100.0)
    scheduler = Scheduler({"default": (1, 3.0)}, clock=clock, yields=lambda item: item.startswith("own"))
    scheduler.submit("quota.get", "own-quota")
    scheduler.submit("quota.consumption", "own-consumption")
    clock.now = 100.5
    scheduler.submit("bot_info.get", "handler-1")
    scheduler.submit("bot_info.get", "handler-2")
    sent = [scheduler.next_ready(at)[0] for at in (100.5, 103.5, 106.5, 109.5)]
    assert sent == ["handler-1", "handler-2", "own-quota", "own-consumption"]
    assert scheduler.queue_for("default").stats()["wait_ms_max"] == pytest.approx(9500.0)


def test_closing_drops_the_picked_calls_that_yield_and_keeps_the_rest_in_order():
    scheduler = Scheduler({}, clock=Clock(0.0), yields=lambda item: item.startswith("own"))
    for item in ("own-1", "call-1", "own-keep", "call-drop", "own-2"):
        scheduler.submit("default", item)
    dropped = scheduler.close(drop=lambda item: item in ("own-1", "own-2", "call-drop"))
    assert sorted(dropped) == ["call-drop", "own-1", "own-2"]
    assert [scheduler.next_ready(0.0)[0] for _ in range(2)] == ["call-1", "own-keep"]


def test_an_endpoint_without_a_row_is_paced_in_default():
    scheduler = Scheduler({"default": (1, 1.0)}, clock=Clock(0.0))
    assert scheduler.queue_for("followers.get") is scheduler.queue_for("default")
    scheduler.submit("followers.get", "a")
    scheduler.submit("followers.get", "b")
    assert scheduler.next_ready(0.0)[0] == "a"
    assert scheduler.next_ready(0.0) == (None, pytest.approx(1.0))   # "b" may go in a second
    assert scheduler.next_ready(1.0)[0] == "b"


def test_pacing_lets_a_burst_go_then_one_call_per_interval():
    """20/s: a burst of one, then the 21st call a whole second after the first."""
    scheduler = Scheduler({"push": (20, 1.0)}, clock=Clock(0.0))
    for n in range(21):
        scheduler.submit("push", n)
    now, times = 0.0, []
    for _ in range(100):                 # bounded: each turn hands out a call or moves the clock on
        if not scheduler.pending():
            break
        item, soonest = scheduler.next_ready(now)
        if item is None:
            now += soonest
        else:
            times.append(now)
    assert len(times) == 21 and times[-1] == pytest.approx(1.0)
    assert all(b - a == pytest.approx(0.05) for a, b in zip(times, times[1:]))


def test_a_429_pauses_the_whole_endpoint_not_the_others():
    scheduler = Scheduler({}, clock=Clock(0.0))
    scheduler.retry("push", "refused", 0.2, enqueued_at=0.0, pause_endpoint=True)
    scheduler.submit("push", "push-2")
    scheduler.submit("reply", "reply-1")
    assert scheduler.next_ready(0.0) == ("reply-1", pytest.approx(0.2))
    assert scheduler.next_ready(0.1) == (None, pytest.approx(0.1))
    assert scheduler.next_ready(0.2)[0] == "refused"


def test_the_rates_and_the_stats_of_busy_queues():
    scheduler = Scheduler({"push": (10, 1.0)}, clock=Clock(0.0))
    assert scheduler.rates()["push"] == 10 and scheduler.rates()["broadcast"] == pytest.approx(60 / 3600)
    scheduler.submit("push", "a")
    assert scheduler.stats() == {"push": {"queued": 1, "sent": 0, "wait_ms_avg": 0.0, "wait_ms_max": 0.0}}


class Budget:
    """The shared budget as the scheduler asks it: a delay per endpoint, and the tokens taken."""

    def __init__(self, delay: float):
        self.wait, self.taken = delay, []

    def delay(self, endpoint: str, now: float, demand: int) -> float:
        return self.wait

    def take(self, endpoint: str, now: float) -> None:
        self.taken.append(endpoint)


def test_with_a_shared_budget_a_call_also_waits_for_leased_time():
    scheduler = Scheduler({}, clock=Clock(0.0))
    scheduler.budget = Budget(0.3)
    scheduler.submit("push", "a")
    assert scheduler.next_ready(0.0) == (None, pytest.approx(0.3))
    scheduler.budget.wait = 0.0
    assert scheduler.next_ready(0.0) == ("a", None) and scheduler.budget.taken == ["push"]


# --- senders waiting on the scheduler ----------------------------------------------------------------------
def test_a_waiting_sender_wakes_at_a_submit_and_every_sender_ends_at_close():
    async def main():
        scheduler = Scheduler({})
        takers = [asyncio.ensure_future(scheduler.take()) for _ in range(3)]
        await asyncio.sleep(0)
        scheduler.submit("push", "a")
        done, _ = await asyncio.wait(takers, timeout=5, return_when=asyncio.FIRST_COMPLETED)
        assert [task.result() for task in done] == ["a"]
        scheduler.close()
        rest = await asyncio.wait_for(asyncio.gather(*(t for t in takers if t not in done)), 5)
        assert rest == [None, None]
    asyncio.run(main())


def test_close_takes_out_what_the_owner_drops_retries_too_and_leaves_the_rest_to_go():
    scheduler = Scheduler({}, clock=Clock(0.0))
    for item in ("keep-1", "drop-1"):
        scheduler.submit("push", item)
    scheduler.retry("push", "drop-2", 30.0, 0.0, pause_endpoint=False)
    scheduler.retry("push", "keep-2", 30.0, 0.0, pause_endpoint=False)
    assert sorted(scheduler.close(drop=lambda item: item.startswith("drop"))) == ["drop-1", "drop-2"]
    assert scheduler.pending() == 2 and scheduler.next_ready(0.0)[0] == "keep-1"
    assert scheduler.next_ready(31.0)[0] == "keep-2"
