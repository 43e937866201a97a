"""`frontdesk doctor`'s reading of LINE's clock from a Date header, in-process."""
from __future__ import annotations

import email.utils

import requests

from frontdesk.doctor import CLOCK_SKEW_LIMIT_S, check_clock, clock_skew, days


def answer_dated(date: str | None) -> requests.Response:
    answer = requests.Response()
    if date is not None:
        answer.headers["Date"] = date
    return answer


def test_the_skew_is_lines_second_middle_against_the_local_midpoint():
    now = 1_800_000_000.0
    assert clock_skew(email.utils.formatdate(now, usegmt=True), now) == 0.5
    assert clock_skew(email.utils.formatdate(now + 30, usegmt=True), now) == 30.5
    assert clock_skew(None, now) is None and clock_skew("yesterday-ish", now) is None


def test_a_clock_off_by_more_than_the_limit_is_a_problem_saying_which_way():
    now = 1_800_000_000.0
    behind = check_clock(answer_dated(email.utils.formatdate(now + 60, usegmt=True)), now)
    assert behind.ok is False and "60 s behind LINE's" in behind.text and "NTP" in behind.text
    ahead = check_clock(answer_dated(email.utils.formatdate(now - 60, usegmt=True)), now)
    assert ahead.ok is False and "ahead of LINE's" in ahead.text
    near = check_clock(answer_dated(email.utils.formatdate(now + CLOCK_SKEW_LIMIT_S - 1, usegmt=True)), now)
    assert near.ok is True
    assert check_clock(answer_dated(None), now).ok is True


def test_durations_read_as_people_say_them():
    assert (days(900), days(3 * 3600), days(5 * 86400)) == ("15 minutes", "3 hours", "5 days")
