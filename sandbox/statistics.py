"""Delivery statistics, the month's quota and its consumption, and aggregation units, true to
what the sandbox sent.

Every accepted delivery is counted here (SandboxState.deliver): once per recipient, whatever
the number of message objects (LINE: "1 request x 5 users = 5 messages"), per endpoint and per
day in Japan time (UTC+9, the day LINE's statistics use). A push to a group or room reaches each
member, a broadcast every follower (world.FOLLOWERS), a narrowcast its target count. The month's consumption is the
sum over the billed endpoints (everything but replies) in the current month of Japan time, plus
what the LINE Official Account Manager sent (LINE counts both; the sandbox is told the Manager's
part through PUT /sandbox/channel). With a target limit set (`quota`, also set there, as in the
Manager), a billed send that would take the month past it is refused with LINE's 429 "You have
reached your monthly limit." and nothing is sent. LINE compiles a day's counts after the day
ends; the sandbox answers `ready` with the count so far, so a test sees its own sends at once.
"""
from __future__ import annotations

import datetime
import re
import threading
from collections import defaultdict

from .api import Endpoint, LineError, send_json, page

JST_OFFSET_S = 9 * 3600
_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()
DATE_PATTERN = re.compile(r"\d{8}")
BILLED = frozenset({"push", "multicast", "broadcast", "narrowcast", "pnp"})
COUNTED = frozenset({"reply"}) | BILLED
UNIT_PATTERN = re.compile(r"[a-zA-Z0-9_]{1,30}")
MAX_UNITS = 1000     # LINE's limit of aggregation unit names per month


def jst_day(epoch_ms: float) -> int:
    """Days since 1970-01-01 in Japan time."""
    return int((epoch_ms / 1000 + JST_OFFSET_S) // 86400)


def jst_month(epoch_ms: float) -> int:
    """Months since January 1970 in Japan time: LINE's quota month."""
    date = datetime.date.fromordinal(_EPOCH_ORDINAL + jst_day(epoch_ms))
    return (date.year - 1970) * 12 + date.month - 1


class Statistics:
    """Counts per (endpoint, day) and billed messages per month, the month's target limit, and the
    aggregation unit names used, in first-use order."""

    def __init__(self):
        self._lock = threading.Lock()
        self._sent: dict[tuple[str, int], int] = defaultdict(int)
        self._billed: dict[int, int] = defaultdict(int)   # month -> billed messages sent through the API
        self.quota: int | None = None        # the month's target limit; None: none set (LINE's "type": "none")
        self.sent_by_manager = 0             # this month's messages sent from the LINE Official Account Manager
        self.units: dict[str, None] = {}

    def record(self, endpoint: str, count: int, now_ms: float, units=None) -> None:
        """`count`: recipients (a request with several message objects counts once per recipient)."""
        with self._lock:
            self._sent[endpoint, jst_day(now_ms)] += count
            if endpoint in BILLED:
                self._billed[jst_month(now_ms)] += count
            for unit in units or ():
                self.units[unit] = None

    def usage(self, now_ms: float) -> int:
        """This month's consumption as LINE reports it."""
        with self._lock:
            return self._billed.get(jst_month(now_ms), 0) + self.sent_by_manager

    def over_quota(self, endpoint: str, count: int, now_ms: float) -> bool:
        """Whether sending to `count` more recipients now would pass the month's target limit."""
        return self.quota is not None and endpoint in BILLED and self.usage(now_ms) + count > self.quota

    def sent(self, endpoint: str, day: int) -> int:
        with self._lock:
            return self._sent.get((endpoint, day), 0)

    def reset(self) -> None:
        with self._lock:
            self._sent.clear()
            self._billed.clear()


def check_units(check, body: dict, statistics: Statistics) -> None:
    """customAggregationUnits: at most one name of 1-30 letters, digits or underscores; a new
    name only while the channel has fewer than MAX_UNITS."""
    units = body.get("customAggregationUnits")
    if units is None:
        return
    if not isinstance(units, list) or len(units) > 1:
        check.fail("customAggregationUnits", "Size must be between 0 and 1")
    elif not all(isinstance(u, str) and UNIT_PATTERN.fullmatch(u) for u in units):
        check.fail("customAggregationUnits[0]", "must match [a-zA-Z0-9_]{1,30}")
    elif units and units[0] not in statistics.units and len(statistics.units) >= MAX_UNITS:
        check.fail("customAggregationUnits[0]", f"the channel already uses {MAX_UNITS} aggregation units")


class DeliveryCount(Endpoint):
    """GET /v2/bot/message/delivery/{reply,push,multicast,broadcast,pnp}?date=yyyyMMdd."""

    def on_get(self, req, resp, kind):
        if kind not in COUNTED or kind == "narrowcast":
            raise LineError(404, "Not found")
        raw = req.get_param("date") or ""
        try:
            if not DATE_PATTERN.fullmatch(raw):
                raise ValueError(raw)
            day = datetime.date(int(raw[:4]), int(raw[4:6]), int(raw[6:])).toordinal() - _EPOCH_ORDINAL
        except ValueError:
            raise LineError(400, "The request has 1 error(s)",
                            [{"message": "must be a date in the format yyyyMMdd (UTC+9)", "property": "date"}]) from None
        if day > jst_day(self.state.now_ms()):
            send_json(resp, 200, {"status": "unready"})
            return
        send_json(resp, 200, {"status": "ready", "success": self.state.statistics.sent(kind, day)})


class AggregationInfo(Endpoint):
    def on_get(self, req, resp):
        send_json(resp, 200, {"numOfCustomAggregationUnits": len(self.state.statistics.units)})


class AggregationList(Endpoint):
    def on_get(self, req, resp):
        send_json(resp, 200, page(list(self.state.statistics.units), req, "customAggregationUnits", 100, 100))


class Quota(Endpoint):
    """The month's target limit: {"type": "none"}, or {"type": "limited", "value": n}."""

    def on_get(self, req, resp):
        quota = self.state.statistics.quota
        send_json(resp, 200, {"type": "none"} if quota is None else {"type": "limited", "value": quota})


class QuotaConsumption(Endpoint):
    """This month's messages counted as LINE bills them: push, multicast, broadcast, narrowcast,
    PNP (not reply), and what the Manager sent."""

    def on_get(self, req, resp):
        send_json(resp, 200, {"totalUsage": self.state.statistics.usage(self.state.now_ms())})


ROUTES = {
    "/v2/bot/message/delivery/{kind}": DeliveryCount,
    "/v2/bot/message/aggregation/info": AggregationInfo,
    "/v2/bot/message/aggregation/list": AggregationList,
    "/v2/bot/message/quota": Quota,
    "/v2/bot/message/quota/consumption": QuotaConsumption,
}
