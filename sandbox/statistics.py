"""Delivery statistics, quota consumption and aggregation units, true to what the sandbox sent.

Every accepted delivery is counted here (SandboxState.deliver): messages times recipients, per
endpoint and per day in Japan time (UTC+9, the day LINE's statistics use). A broadcast reaches
every follower (world.FOLLOWERS), a narrowcast its target count. The quota consumption is the sum
over the billed endpoints: everything but replies. LINE compiles a day's counts after the day
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


class Statistics:
    """Counts per (endpoint, day) and the aggregation unit names used, in first-use order."""

    def __init__(self):
        self._lock = threading.Lock()
        self._sent: dict[tuple[str, int], int] = defaultdict(int)
        self.total_billed = 0
        self.units: dict[str, None] = {}

    def record(self, endpoint: str, messages: int, recipients: int, now_ms: float, units=None) -> None:
        count = messages * recipients
        with self._lock:
            self._sent[endpoint, jst_day(now_ms)] += count
            if endpoint in BILLED:
                self.total_billed += count
            for unit in units or ():
                self.units[unit] = None

    def sent(self, endpoint: str, day: int) -> int:
        with self._lock:
            return self._sent.get((endpoint, day), 0)

    def reset(self) -> None:
        with self._lock:
            self._sent.clear()
            self.total_billed = 0


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
    def on_get(self, req, resp):
        send_json(resp, 200, {"type": "none"})


class QuotaConsumption(Endpoint):
    """Messages counted as LINE bills them: push, multicast, broadcast, narrowcast (not reply)."""

    def on_get(self, req, resp):
        send_json(resp, 200, {"totalUsage": self.state.statistics.total_billed})


ROUTES = {
    "/v2/bot/message/delivery/{kind}": DeliveryCount,
    "/v2/bot/message/aggregation/info": AggregationInfo,
    "/v2/bot/message/aggregation/list": AggregationList,
    "/v2/bot/message/quota": Quota,
    "/v2/bot/message/quota/consumption": QuotaConsumption,
}
