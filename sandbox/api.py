"""What every sandbox endpoint shares: LINE's error shape, body validation, JSON in and out,
the base resource, and paging.

LINE answers every error as `{"message": ..., "details": [{"message", "property"}]}`; the
details name each property that failed, in the words LINE uses ("must be specified",
"Size must be between 1 and 5").
"""
from __future__ import annotations

import json
import re
import time

import falcon

MAX_MESSAGES = 5
MAX_MULTICAST = 500
MAX_TEXT = 5000

ID_PATTERN = re.compile(r"[UCR][0-9a-f]{32}")
USER_ID_PATTERN = re.compile(r"U[0-9a-f]{32}")
UUID_PATTERN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
MESSAGE_TYPES = ("text", "image", "video", "audio", "location", "sticker", "template", "imagemap", "flex",
                 "textV2", "coupon")
MAX_DELIVERY_TAG = 30   # a coupon message's deliveryTag (messaging-api.yml, CouponMessage)

MESSAGES = {
    "no_auth": "Authorization header required. Must follow the scheme, 'Authorization: Bearer <ACCESS TOKEN>'",
    "bad_auth": "Authentication failed. Confirm that the access token in the authorization header is valid.",
    "rate_limited": "The API rate limit has been exceeded. Try again later.",
    "bad_reply_token": "Invalid reply token",
    "retry_key_accepted": "The retry key is already accepted",
    "monthly_limit": "You have reached your monthly limit.",
    "not_found": "Not found",
}
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


class LineError(Exception):
    """An answer in LINE's error shape: {"message": ..., "details": [...]}."""

    def __init__(self, status: int, message: str, details: list[dict] | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.details, self.headers = status, message, details, headers or {}
        self.extra: dict = {}   # more of the body (a 409's sentMessages)

    def body(self) -> dict:
        return {"message": self.message, **({"details": self.details} if self.details else {}), **self.extra}


def not_found(what: str = MESSAGES["not_found"]) -> LineError:
    """LINE's 404: the resource does not exist (or is not the bot's)."""
    return LineError(404, what)


def _utf16_length(text: str) -> int:
    """LINE counts text length in UTF-16 code units (an emoji outside the BMP counts twice)."""
    return len(text.encode("utf-16-le")) // 2


class Validator:
    """Collects LINE-style error details for one request body."""

    def __init__(self):
        self.details: list[dict] = []

    def fail(self, prop: str, message: str) -> None:
        self.details.append({"message": message, "property": prop})

    def raise_if_failed(self) -> None:
        if self.details:
            raise LineError(400, f"The request body has {len(self.details)} error(s)", self.details)

    def string(self, obj: dict, key: str, prop: str, max_length: int | None = None,
               allow_empty: bool = False) -> None:
        value = obj.get(key)
        if value is None:
            self.fail(prop, "must be specified")
        elif not isinstance(value, str):
            self.fail(prop, "must be a string")
        elif not value and not allow_empty:
            self.fail(prop, "May not be empty")
        elif max_length is not None and _utf16_length(value) > max_length:
            self.fail(prop, f"Length must be between 0 and {max_length}")

    def https_url(self, obj: dict, key: str, prop: str) -> None:
        self.string(obj, key, prop, max_length=2000)
        value = obj.get(key)
        if isinstance(value, str) and value and not value.startswith("https://"):
            self.fail(prop, "must be an HTTPS URL")

    def number(self, obj: dict, key: str, prop: str) -> None:
        value = obj.get(key)
        if value is None:
            self.fail(prop, "must be specified")
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(prop, "must be a number")

    def messages(self, body: dict) -> None:
        messages = body.get("messages")
        if messages is None:
            self.fail("messages", "must be specified")
            return
        if not isinstance(messages, list):
            self.fail("messages", "must be an array")
            return
        if not 1 <= len(messages) <= MAX_MESSAGES:
            self.fail("messages", f"Size must be between 1 and {MAX_MESSAGES}")
        for index, message in enumerate(messages[:MAX_MESSAGES]):
            self.message(message, f"messages[{index}]")

    def message(self, message, prop: str) -> None:
        if not isinstance(message, dict):
            self.fail(prop, "must be an object")
            return
        kind = message.get("type")
        if kind is None:
            self.fail(f"{prop}.type", "must be specified")
            return
        if kind not in MESSAGE_TYPES:
            self.fail(f"{prop}.type", f"Must be one of the following values: [{', '.join(MESSAGE_TYPES)}]")
            return
        if kind in ("text", "textV2"):
            self.string(message, "text", f"{prop}.text", MAX_TEXT)
        elif kind == "sticker":
            self.string(message, "packageId", f"{prop}.packageId")
            self.string(message, "stickerId", f"{prop}.stickerId")
        elif kind in ("image", "video"):
            self.https_url(message, "originalContentUrl", f"{prop}.originalContentUrl")
            self.https_url(message, "previewImageUrl", f"{prop}.previewImageUrl")
        elif kind == "audio":
            self.https_url(message, "originalContentUrl", f"{prop}.originalContentUrl")
            self.number(message, "duration", f"{prop}.duration")
        elif kind == "coupon":   # a coupon made with POST /v2/bot/coupon (shop.py); its existence is not checked
            self.string(message, "couponId", f"{prop}.couponId")
            if "deliveryTag" in message:
                self.string(message, "deliveryTag", f"{prop}.deliveryTag", MAX_DELIVERY_TAG)
        elif kind == "location":
            self.string(message, "title", f"{prop}.title", 100)
            self.string(message, "address", f"{prop}.address", 100)
            self.number(message, "latitude", f"{prop}.latitude")
            self.number(message, "longitude", f"{prop}.longitude")
        else:  # template, imagemap, flex: the alternative text is what every client shows
            self.string(message, "altText", f"{prop}.altText", 1500 if kind == "flex" else 400)
            part = {"template": "template", "flex": "contents", "imagemap": "baseUrl"}[kind]
            if message.get(part) is None:
                self.fail(f"{prop}.{part}", "must be specified")

    def recipient(self, body: dict, key: str = "to") -> None:
        value = body.get(key)
        if value is None:
            self.fail(key, "must be specified")
        elif not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
            self.fail(key, "must be a user, group or room ID (U, C or R followed by 32 hex digits)")

    def user_ids(self, body: dict, key: str = "to") -> None:
        value = body.get(key)
        if value is None:
            self.fail(key, "must be specified")
        elif not isinstance(value, list):
            self.fail(key, "must be an array")
        elif not 1 <= len(value) <= MAX_MULTICAST:
            self.fail(key, f"Size must be between 1 and {MAX_MULTICAST}")
        else:
            for index, item in enumerate(value):
                if not isinstance(item, str) or not USER_ID_PATTERN.fullmatch(item):
                    self.fail(f"{key}[{index}]", "must be a user ID (U followed by 32 hex digits)")

    def boolean(self, body: dict, key: str) -> None:
        if key in body and not isinstance(body[key], bool):
            self.fail(key, "must be a boolean")


def send_json(resp: falcon.Response, status: int, body) -> None:
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    resp.data = _JSON.encode(body).encode()


def read_json(req: falcon.Request) -> dict:
    """The request's JSON object; the raw bytes stay on req.context for the chat page's inspector."""
    raw = req.context.raw_body = req.bounded_stream.read()
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LineError(400, f"The request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise LineError(400, "The request body must be a JSON object")
    return body


def iso_time(epoch_ms: float) -> str:
    """LINE's timestamps in progress answers: 2024-01-01T00:00:00.000Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch_ms / 1000)) + f".{int(epoch_ms % 1000):03d}Z"


def query_limit(req: falcon.Request, default: int, maximum: int, minimum: int = 1) -> int:
    """The `limit` query parameter, checked as LINE does (400 naming it)."""
    raw = req.get_param("limit")
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if not minimum <= value <= maximum:
        raise LineError(400, "The request has 1 error(s)",
                        [{"message": f"must be between {minimum} and {maximum}", "property": "limit"}])
    return value


def page(items: list, req: falcon.Request, key: str, default_limit: int, max_limit: int) -> dict:
    """One page of `items` as LINE pages them: `{key: [...], "next": <continuation token>}`.

    The token is the index of the next item, opaque to clients; a token that is not one of
    ours is 400, as LINE answers an incorrect or expired `start`.
    """
    limit = query_limit(req, default_limit, max_limit)
    start = req.get_param("start")
    offset = 0
    if start is not None:
        if not start.startswith("n") or not start[1:].isdigit():
            raise LineError(400, "The request has 1 error(s)",
                            [{"message": "is incorrect or expired", "property": "start"}])
        offset = int(start[1:])
    answer = {key: items[offset:offset + limit]}
    if offset + limit < len(items):
        answer["next"] = f"n{offset + limit}"
    return answer


_CAMEL_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


class Endpoint:
    """An API resource. `endpoint` names its rate-limit bucket and stats row where LINE's table
    has a row for it (protocol/line_endpoints.py); `endpoints` names them per HTTP method. The
    others are named after the resource and method (`followers.get`): LINE limits every endpoint
    on its own, each of these at the `default` figure."""
    endpoint: str | None = None
    endpoints: dict[str, str] = {}
    authenticated = True   # needs the channel's bearer token (the token API's routes take credentials instead)
    _names: dict[tuple[type, str], str] = {}

    def __init__(self, state):
        self.state = state

    @classmethod
    def endpoint_for(cls, method: str) -> str:
        name = cls._names.get((cls, method))
        if name is None:
            name = cls.endpoints.get(method) or cls.endpoint or \
                f"{_CAMEL_HUMP.sub('_', cls.__name__).lower()}.{method.lower()}"
            cls._names[cls, method] = name
        return name

