"""Which waiting chats get LINE's loading animation, and when again (ratelimiter/loading.py
LoadingPlan, times given: no clock, no store)."""
from __future__ import annotations

from frontdesk.ratelimiter.loading import REFRESH_AHEAD_S, LoadingPlan

ALICE, BOB = "U" + "a" * 32, "U" + "b" * 32


def test_a_waiting_chat_is_started_once_and_not_again_while_its_animation_lasts():
    plan = LoadingPlan(seconds=20)
    assert plan.due([(ALICE, 1000)], now=0.0) == [ALICE]
    assert plan.due([(ALICE, 1000), (BOB, 1500)], now=1.0) == [BOB]      # only the newcomer
    assert plan.due([(ALICE, 1000), (BOB, 1500)], now=17.9) == []


def test_it_is_refreshed_shortly_before_it_ends_while_the_chat_still_waits():
    plan = LoadingPlan(seconds=20)
    plan.due([(ALICE, 1000)], now=0.0)
    assert plan.due([(ALICE, 1000)], now=20.0 - REFRESH_AHEAD_S - 0.01) == []
    assert plan.due([(ALICE, 1000)], now=20.0 - REFRESH_AHEAD_S) == [ALICE]
    assert plan.due([(ALICE, 1000)], now=30.0) == []                   # the refreshed one lasts to 38
    assert plan.due([(ALICE, 1000)], now=38.0 - REFRESH_AHEAD_S) == [ALICE]


def test_a_chat_that_waits_for_a_newer_event_is_started_again_at_once():
    """The reply to its older event ended the animation (LINE ends it when the bot's message arrives)."""
    plan = LoadingPlan(seconds=20)
    plan.due([(ALICE, 1000)], now=0.0)
    assert plan.due([(ALICE, 4000)], now=3.0) == [ALICE]


def test_a_chat_no_longer_waiting_is_forgotten_and_started_again_when_it_waits_again():
    plan = LoadingPlan(seconds=20)
    plan.due([(ALICE, 1000)], now=0.0)
    assert plan.due([], now=1.0) == []
    assert plan.due([(ALICE, 1000)], now=2.0) == [ALICE]


def test_nothing_waits_nothing_starts():
    assert LoadingPlan(seconds=5).due([], now=0.0) == []
