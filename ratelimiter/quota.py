"""The month's messages as LINE counts them, and what the quota and the budget allow: pure rules,
tested on their own (tests/unit/test_quota.py); ratelimiter/quota_watch.py keeps them live.

LINE bills a request once per recipient, whatever its message objects ("1 request x 5 users = 5
messages"): a push to a user counts 1, to a group or room once per member, a multicast its `to`
list; replies are free (not billed). Broadcast and narrowcast reach recipients frontdesk cannot
know when it sends (every follower; an audience LINE resolves): they count 0 here and LINE's own
figure, read at once after such a send, covers them. The month is LINE's quota month: the
calendar month in Japan time (UTC+9), so it turns at 15:00 UTC on the last day of a month.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass

JST = datetime.timezone(datetime.timedelta(hours=9))
KINDS = ("reply", "push", "multicast", "narrowcast", "broadcast")   # the endpoint rows that send messages
BILLED = frozenset(KINDS[1:])
UNKNOWN_RECIPIENTS = frozenset({"narrowcast", "broadcast"})
CHAT_METHODS = {"C": ("group_member_count", "groupId"), "R": ("room_member_count", "roomId")}

PUSH, DEAD_LETTER = "push", "dead_letter"


def quota_month(epoch_s: float) -> str:
    """LINE's quota month of a moment: "2026-12", in Japan time."""
    return datetime.datetime.fromtimestamp(epoch_s, JST).strftime("%Y-%m")


def month_end(epoch_s: float) -> float:
    """When the quota month of a moment ends (epoch seconds): midnight of the 1st, Japan time."""
    first = datetime.datetime.fromtimestamp(epoch_s, JST).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return (first + datetime.timedelta(days=32)).replace(day=1).timestamp()


def recipients(kind: str, body) -> int | str:
    """How many messages LINE counts for an accepted request of `kind` with JSON `body`: a number,
    or the id of the group or room whose member count it is."""
    if kind == "push":
        to = body.get("to") if isinstance(body, dict) else None
        if isinstance(to, str) and to[:1] in CHAT_METHODS:
            return to
        return 1
    if kind == "multicast":
        to = body.get("to") if isinstance(body, dict) else None
        return len(to) if isinstance(to, list) else 0
    if kind in UNKNOWN_RECIPIENTS:
        return 0
    return 1   # a reply: free, counted once per request


class MonthCount:
    """The messages sent this quota month per kind: the store's total (every rate limiter's, as
    last read) plus what this one counted since and has not added to the store yet."""

    def __init__(self, now: float):
        self.month = quota_month(now)
        self._ends = month_end(now)   # PERF: a send compares one float, not a calendar
        self.stored: dict[str, int] = {}
        self.pending: dict[str, dict[str, int]] = {}   # month -> kind -> not yet in the store

    def add(self, kind: str, count: int, now: float) -> None:
        if now >= self._ends:
            self.turn(now)
        by_kind = self.pending.setdefault(self.month, {})
        by_kind[kind] = by_kind.get(kind, 0) + count

    def turn(self, now: float) -> bool:
        """Start a new month when `now` is in one; True when it did."""
        if now < self._ends:
            return False
        self.month, self._ends, self.stored = quota_month(now), month_end(now), {}
        return True

    def take_pending(self) -> dict[str, dict[str, int]]:
        """What to add to the store (month -> kind -> count); it is no longer pending."""
        pending, self.pending = self.pending, {}
        return pending

    def give_back(self, pending: dict[str, dict[str, int]]) -> None:
        """A write that failed: its counts are pending again."""
        for month, by_kind in pending.items():
            mine = self.pending.setdefault(month, {})
            for kind, count in by_kind.items():
                mine[kind] = mine.get(kind, 0) + count

    def stored_totals(self, month: str, totals: dict[str, int]) -> None:
        if month == self.month:
            self.stored = dict(totals)

    def sent(self) -> dict[str, int]:
        pending = self.pending.get(self.month, {})
        return {kind: self.stored.get(kind, 0) + pending.get(kind, 0) for kind in KINDS}

    def billed(self) -> int:
        sent = self.sent()
        return sum(sent[kind] for kind in BILLED)


@dataclass(frozen=True)
class Allowance:
    """The month's limits and use. `line_quota`: LINE's target limit (None: none set, or not read
    yet); `line_used`: LINE's consumption (None: not read yet); `counted`: frontdesk's own billed
    count; `budget`: push_budget (0: none)."""
    line_quota: int | None
    line_used: int | None
    counted: int
    budget: int
    warning_share: float

    @property
    def used(self) -> int:
        """The higher of LINE's figure (a day late, but it has the LINE Official Account Manager's
        sends) and frontdesk's own (live)."""
        return max(self.line_used or 0, self.counted)

    def limits(self) -> list[tuple[str, int]]:
        """(name, messages) of each limit that applies."""
        named = [("LINE's quota", self.line_quota), ("push_budget", self.budget or None)]
        return [(name, value) for name, value in named if value is not None]

    @property
    def remaining(self) -> int | None:
        """Messages left this month under the tighter limit (None: no limit)."""
        left = [value - self.used for _, value in self.limits()]
        return max(0, min(left)) if left else None

    def warning(self) -> tuple[str, int] | None:
        """The first limit whose warning share is used, or None."""
        for name, value in self.limits():
            if self.used >= self.warning_share * value:
                return name, value
        return None


def expired_reply_action(policy: str, allowance: Allowance) -> tuple[str, str]:
    """(PUSH or DEAD_LETTER, why) for a reply whose token is too old, under reply_expiry `policy`."""
    if policy == "dead-letter":
        return DEAD_LETTER, "reply_expiry=dead-letter"
    if policy == "push-within-budget":
        warned = allowance.warning()
        if warned is not None:
            name, value = warned
            return DEAD_LETTER, (f"reply_expiry=push-within-budget: {allowance.used} of {name} {value} used "
                                 f"(at least quota_warning_share={allowance.warning_share:g})")
        return PUSH, "reply_expiry=push-within-budget: under the warning share"
    return PUSH, "reply_expiry=push"
