"""The counting rules, LINE's quota month in Japan time, the limits and reply_expiry's choices
(ratelimiter/quota.py), in-process."""
from __future__ import annotations

import datetime

import pytest

from frontdesk.ratelimiter.quota import (DEAD_LETTER, PUSH, Allowance, MonthCount, expired_reply_action,
                                         month_end, quota_month, recipients)

UTC = datetime.timezone.utc
# 2026-12-31 15:00 UTC is 2027-01-01 00:00 in Japan: LINE's quota month turns then
NEW_YEAR_JST = datetime.datetime(2026, 12, 31, 15, 0, tzinfo=UTC).timestamp()


def test_the_quota_month_turns_at_midnight_in_japan_not_in_utc():
    assert quota_month(NEW_YEAR_JST - 0.001) == "2026-12"
    assert quota_month(NEW_YEAR_JST) == "2027-01"
    assert month_end(NEW_YEAR_JST - 86400 * 20) == NEW_YEAR_JST and month_end(NEW_YEAR_JST) > NEW_YEAR_JST
    february = datetime.datetime(2027, 1, 31, 15, 0, tzinfo=UTC).timestamp()
    assert month_end(NEW_YEAR_JST) == february
    assert quota_month(datetime.datetime(2026, 12, 31, 23, 0, tzinfo=UTC).timestamp()) == "2027-01"


@pytest.mark.parametrize("kind, body, counted", [
    ("reply", {"replyToken": "t", "messages": [{}] * 5}, 1),         # free, once per request
    ("push", {"to": "U" + "1" * 32, "messages": [{}] * 5}, 1),       # not per message object
    ("push", {"to": "C" + "1" * 32, "messages": [{}]}, "C" + "1" * 32),   # its members: asked of LINE
    ("push", {"to": "R" + "1" * 32, "messages": [{}]}, "R" + "1" * 32),
    ("multicast", {"to": ["U1", "U2", "U3"], "messages": [{}] * 2}, 3),
    ("broadcast", {"messages": [{}]}, 0),                            # LINE's own figure covers them
    ("narrowcast", {"messages": [{}], "limit": {"max": 10}}, 0),
])
def test_a_request_counts_once_per_recipient(kind, body, counted):
    assert recipients(kind, body) == counted


def test_the_month_count_adds_the_stores_total_and_what_is_not_written_yet():
    count = MonthCount(NEW_YEAR_JST - 60)
    count.stored_totals("2026-12", {"push": 10, "reply": 4})
    count.add("push", 3, NEW_YEAR_JST - 30)
    count.add("reply", 1, NEW_YEAR_JST - 30)
    assert count.sent() == {"reply": 5, "push": 13, "multicast": 0, "narrowcast": 0, "broadcast": 0}
    assert count.billed() == 13
    assert count.take_pending() == {"2026-12": {"push": 3, "reply": 1}}
    count.give_back({"2026-12": {"push": 3}})    # the write failed: pending again
    assert count.billed() == 13


def test_the_month_count_starts_over_at_midnight_in_japan_with_an_injected_clock():
    count = MonthCount(NEW_YEAR_JST - 60)
    count.stored_totals("2026-12", {"push": 10})
    count.add("push", 2, NEW_YEAR_JST - 1)
    count.add("push", 1, NEW_YEAR_JST + 1)     # the new month
    assert count.month == "2027-01" and count.billed() == 1
    assert count.take_pending() == {"2026-12": {"push": 2}, "2027-01": {"push": 1}}   # each to its month
    count.stored_totals("2026-12", {"push": 12})   # a late answer about the old month changes nothing
    assert count.billed() == 0
    assert not count.turn(NEW_YEAR_JST + 3600) and count.turn(NEW_YEAR_JST + 31 * 86400)


def test_used_is_the_higher_of_lines_figure_and_frontdesks_and_remaining_the_tighter_limit():
    allowance = Allowance(line_quota=1000, line_used=300, counted=350, budget=500, warning_share=0.9)
    assert allowance.used == 350 and allowance.remaining == 150          # the budget is the tighter
    assert Allowance(1000, 900, 10, 5000, 0.9).remaining == 100          # LINE's quota is
    assert Allowance(None, 900, 10, 0, 0.9).remaining is None            # no limit at all
    assert Allowance(100, 150, 0, 0, 0.9).remaining == 0                 # never below zero


def test_the_warning_comes_at_the_share_of_the_first_limit_reached():
    assert Allowance(1000, None, 449, 500, 0.9).warning() is None
    assert Allowance(1000, None, 450, 500, 0.9).warning() == ("push_budget", 500)
    assert Allowance(1000, 900, 0, 0, 0.9).warning() == ("LINE's quota", 1000)
    assert Allowance(None, None, 10**6, 0, 0.9).warning() is None


@pytest.mark.parametrize("policy, used, action", [
    ("push", 10**6, PUSH),                       # today's behaviour, whatever it costs
    ("dead-letter", 0, DEAD_LETTER),             # never a push
    ("push-within-budget", 89, PUSH),            # under the budget's warning share
    ("push-within-budget", 90, DEAD_LETTER),     # at it
])
def test_reply_expiry_decides_push_or_dead_letter(policy, used, action):
    decided, reason = expired_reply_action(policy, Allowance(None, None, used, 100, 0.9))
    assert decided == action and reason.startswith(f"reply_expiry={policy}")


def test_push_within_budget_without_any_limit_pushes():
    assert expired_reply_action("push-within-budget", Allowance(None, None, 10**6, 0, 0.9))[0] == PUSH
