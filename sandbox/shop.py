"""Coupons (create, list, get, close) and membership plans (plans, a user's subscription, the
members of a plan), as messaging-api.yml defines them.

Coupons are stored as created; a coupon's status follows its time window (DRAFT before
`startTimestamp`, RUNNING until `endTimestamp`, CLOSED after, or once closed; timestamps in epoch
seconds) and closing a closed coupon is 410 Gone. Membership is fixed: two plans, whose members
are every third follower (world.py), so a test knows who subscribes to what.
"""
from __future__ import annotations

import itertools
import threading
import time

from .api import USER_ID_PATTERN, Endpoint, LineError, Validator, not_found, page, query_limit, read_json, send_json

TIMEZONES = frozenset((
    "ETC_GMT_MINUS_12 ETC_GMT_MINUS_11 PACIFIC_HONOLULU AMERICA_ANCHORAGE AMERICA_LOS_ANGELES AMERICA_PHOENIX "
    "AMERICA_CHICAGO AMERICA_NEW_YORK AMERICA_CARACAS AMERICA_SANTIAGO AMERICA_ST_JOHNS AMERICA_SAO_PAULO "
    "ETC_GMT_MINUS_2 ATLANTIC_CAPE_VERDE EUROPE_LONDON EUROPE_PARIS EUROPE_ISTANBUL EUROPE_MOSCOW ASIA_TEHRAN "
    "ASIA_TBILISI ASIA_KABUL ASIA_TASHKENT ASIA_COLOMBO ASIA_KATHMANDU ASIA_ALMATY ASIA_RANGOON ASIA_BANGKOK "
    "ASIA_TAIPEI ASIA_TOKYO AUSTRALIA_DARWIN AUSTRALIA_SYDNEY ASIA_VLADIVOSTOK ETC_GMT_PLUS_12 PACIFIC_TONGATAPU"
).split())
VISIBILITIES = ("UNLISTED", "PUBLIC")
ACQUISITION_TYPES = ("normal", "lottery")
REWARD_TYPES = ("cashBack", "discount", "free", "gift", "others")
STATUSES = ("DRAFT", "RUNNING", "CLOSED")
PLANS = (
    {"membershipId": 1, "title": "Gold", "description": "Every perk", "benefits": ["Monthly sticker", "10% off"],
     "price": 500.0, "currency": "JPY", "memberLimit": 10000, "isInAppPurchase": False, "isPublished": True},
    {"membershipId": 2, "title": "Silver", "description": "Some perks", "benefits": ["Monthly sticker"],
     "price": 200.0, "currency": "JPY", "memberLimit": None, "isInAppPurchase": False, "isPublished": True},
)
_PLAN_FIELDS = ("membershipId", "title", "description", "benefits", "price", "currency")


class Shop:
    """The coupons created so far and the fixed membership plans."""

    def __init__(self, world):
        self.lock = threading.Lock()
        self.coupons: dict[str, dict] = {}
        self.closed: set[str] = set()
        self._ids = itertools.count(1)
        followers = world.followers
        self.members = {plan["membershipId"]: followers[index::3] for index, plan in enumerate(PLANS)}

    def new_coupon_id(self) -> str:
        return f"COUPON{next(self._ids):010d}"

    def status(self, coupon: dict, now_s: float) -> str:
        if coupon["couponId"] in self.closed or now_s >= coupon["endTimestamp"]:
            return "CLOSED"
        return "RUNNING" if now_s >= coupon["startTimestamp"] else "DRAFT"


def _typed(check: Validator, body: dict, key: str, types: tuple[str, ...], required: bool) -> None:
    value = body.get(key)
    if value is None:
        if required:
            check.fail(key, "must be specified")
    elif not isinstance(value, dict) or value.get("type") not in types:
        check.fail(f"{key}.type", f"Must be one of the following values: [{', '.join(types)}]")


def check_coupon(body: dict) -> None:
    check = Validator()
    check.string(body, "title", "title", 60)
    times = []
    for key in ("startTimestamp", "endTimestamp"):
        value = body.get(key)
        if value is None:
            check.fail(key, "must be specified")
        elif isinstance(value, bool) or not isinstance(value, int):
            check.fail(key, "must be an integer (epoch seconds)")
        else:
            times.append(value)
    if len(times) == 2 and times[1] <= times[0]:
        check.fail("endTimestamp", "must be after startTimestamp")
    if body.get("maxUseCountPerTicket") != 1 or isinstance(body.get("maxUseCountPerTicket"), bool):
        check.fail("maxUseCountPerTicket", "must be 1")
    if body.get("visibility") not in VISIBILITIES:
        check.fail("visibility", f"Must be one of the following values: [{', '.join(VISIBILITIES)}]")
    if body.get("timezone") not in TIMEZONES:
        check.fail("timezone", "must be one of LINE's timezone names (e.g. ASIA_TOKYO)")
    _typed(check, body, "acquisitionCondition", ACQUISITION_TYPES, required=True)
    _typed(check, body, "reward", REWARD_TYPES, required=False)
    for key, limit in (("description", 1000), ("usageCondition", 100)):
        if key in body:
            check.string(body, key, key, limit, allow_empty=True)
    check.raise_if_failed()


class Coupons(Endpoint):
    """POST /v2/bot/coupon creates; GET lists ({"items": [{"couponId", "title"}], "next"})."""

    def on_post(self, req, resp):
        body = read_json(req)
        check_coupon(body)
        shop = self.state.shop
        with shop.lock:
            coupon_id = shop.new_coupon_id()
            shop.coupons[coupon_id] = {**body, "couponId": coupon_id, "createdTimestamp": int(time.time())}
        send_json(resp, 200, {"couponId": coupon_id})

    def on_get(self, req, resp):
        wanted = req.get_param_as_list("status") or list(STATUSES)
        if not set(wanted) <= set(STATUSES):
            raise LineError(400, "The request has 1 error(s)",
                            [{"message": f"Must be one of the following values: [{', '.join(STATUSES)}]",
                              "property": "status"}])
        query_limit(req, 20, 100)
        shop, now_s = self.state.shop, time.time()
        with shop.lock:
            items = [{"couponId": c["couponId"], "title": c["title"]} for c in shop.coupons.values()
                     if shop.status(c, now_s) in wanted]
        send_json(resp, 200, page(items, req, "items", 20, 100))


class Coupon(Endpoint):
    def on_get(self, req, resp, coupon_id):
        shop = self.state.shop
        with shop.lock:
            coupon = shop.coupons.get(coupon_id)
            if coupon is None:
                raise not_found()
            send_json(resp, 200, {**coupon, "status": shop.status(coupon, time.time())})


class CouponClose(Endpoint):
    def on_put(self, req, resp, coupon_id):
        shop = self.state.shop
        with shop.lock:
            coupon = shop.coupons.get(coupon_id)
            if coupon is None:
                raise not_found()
            if shop.status(coupon, time.time()) == "CLOSED":
                raise LineError(410, "The coupon is already closed")
            shop.closed.add(coupon_id)
        send_json(resp, 200, {})


class Memberships(Endpoint):
    def on_get(self, req, resp):
        members = self.state.shop.members
        send_json(resp, 200, {"memberships": [{**plan, "memberCount": len(members[plan["membershipId"]])}
                                              for plan in PLANS]})


class Subscription(Endpoint):
    """GET /v2/bot/membership/subscription/{userId}: 400 for a bad id, 404 when not subscribed."""

    def on_get(self, req, resp, user_id):
        if not USER_ID_PATTERN.fullmatch(user_id):
            raise LineError(400, "An invalid user ID is specified.")
        for plan in PLANS:
            members = self.state.shop.members[plan["membershipId"]]
            if user_id in members:
                user = {"membershipNo": members.index(user_id) + 1, "joinedTime": 1700000000,
                        "nextBillingDate": time.strftime("%Y-%m-01", time.gmtime(time.time() + 31 * 86400)),
                        "totalSubscriptionMonths": 3}
                send_json(resp, 200, {"subscriptions": [
                    {"membership": {k: plan[k] for k in _PLAN_FIELDS}, "user": user}]})
                return
        raise not_found("Unable to get information about the membership to which the user subscribes.")


class MembershipUsers(Endpoint):
    def on_get(self, req, resp, membership_id):
        members = self.state.shop.members.get(int(membership_id) if membership_id.isdigit() else None)
        if members is None:
            raise not_found("Membership ID is not owned by the bot or does not exist.")
        send_json(resp, 200, page(members, req, "userIds", 300, 1000))


ROUTES = {
    "/v2/bot/coupon": Coupons,
    "/v2/bot/coupon/{coupon_id}": Coupon,
    "/v2/bot/coupon/{coupon_id}/close": CouponClose,
    "/v2/bot/membership/list": Memberships,
    "/v2/bot/membership/subscription/{user_id}": Subscription,
    "/v2/bot/membership/{membership_id}/users/ids": MembershipUsers,
}
