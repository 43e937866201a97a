"""The LINE Messaging API emulator as a falcon WSGI app.

Same paths, JSON bodies, status codes and error bodies as LINE (api.line.me and api-data.line.me
on one port), so the official SDKs and our rate limiter work against it unchanged. Every API
call goes through, in order: injected latency, bearer token (401), rate limit (429), retry-key
header rules (400), injected fault (500, nothing done), the endpoint (validation 400, reply
token 400, retry-key 409, then the delivery is recorded), injected drop (the connection closes
with no answer, after the call took effect — the ambiguous failure retry keys exist for).
Accepted deliveries are served at /sandbox/deliveries for tests and the bench.
"""
from __future__ import annotations

import bisect
import hmac
import itertools
import json
import logging
import os
import random
import re
import threading
import time
from collections import defaultdict
from http import HTTPStatus

import falcon

from frontdesk.protocol import config
from frontdesk.protocol.config import Settings

from .webhooks import BOT_USER_ID, ReplyTokenError, message_content, read_reply_token

log = logging.getLogger("frontdesk.sandbox")

# The WSGI environ key the app sets to have the server close the connection without an answer.
DROP_CONNECTION = "frontdesk.sandbox.drop"

RETRY_KEY_ENDPOINTS = frozenset({"push", "multicast", "narrowcast", "broadcast"})
RETRY_KEY_LIFETIME_MS = 24 * 3600 * 1000
MAX_MESSAGES = 5
MAX_MULTICAST = 500
MAX_TEXT = 5000
MAX_WAIT_S = 30.0          # longest long-poll of /sandbox/deliveries
MAX_PAGE = 10000           # most deliveries in one page
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))

ID_PATTERN = re.compile(r"[UCR][0-9a-f]{32}")
USER_ID_PATTERN = re.compile(r"U[0-9a-f]{32}")
UUID_PATTERN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
MESSAGE_TYPES = ("text", "image", "video", "audio", "location", "sticker", "template", "imagemap", "flex",
                 "textV2")

MESSAGES = {
    "no_auth": "Authorization header required. Must follow the scheme, 'Authorization: Bearer <ACCESS TOKEN>'",
    "bad_auth": "Authentication failed. Confirm that the access token in the authorization header is valid.",
    "rate_limited": "The API rate limit has been exceeded. Try again later.",
    "bad_reply_token": "Invalid reply token",
    "retry_key_accepted": "The retry key is already accepted",
    "not_found": "Not found",
}


class LineError(Exception):
    """An answer in LINE's error shape: {"message": ..., "details": [...]}."""

    def __init__(self, status: int, message: str, details: list[dict] | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.details, self.headers = status, message, details, headers or {}

    def body(self) -> dict:
        return {"message": self.message, **({"details": self.details} if self.details else {})}


class TokenBucket:
    """`count` calls per `period` seconds, bursts up to one second's worth (at least one call)."""

    def __init__(self, count: float, period: float):
        self.rate = count / period
        self.capacity = max(1.0, self.rate)
        self.tokens = self.capacity
        self.updated = time.monotonic()
        self.lock = threading.Lock()

    def take(self) -> bool:
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return True
            return False


def rate_limits(settings: Settings) -> dict[str, tuple[float, float]]:
    """LINE's defaults, with what sandbox_rate_limits names replacing them endpoint by endpoint."""
    knob = config.KNOBS_BY_NAME["sandbox_rate_limits"]
    return {**knob.type(knob.default), **settings.sandbox_rate_limits}


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


class SandboxState:
    """Everything the sandbox remembers, shared by the waitress threads under one lock."""

    def __init__(self, settings: Settings, channel_secret: str):
        self.channel_secret = channel_secret
        self.reply_token_ttl_ms = settings.sandbox_reply_token_ttl_s * 1000.0
        self.buckets = {name: TokenBucket(*limit) for name, limit in rate_limits(settings).items()}
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)   # notified on every new delivery
        # The recorder: each delivery kept as its JSON (a dict per delivery held 2.8 KB; 54,000 of
        # them 153 MB), the oldest dropped past sandbox_recorder_size, a tenth at a time.
        self.recorder_size = settings.sandbox_recorder_size
        self.deliveries: list[bytes] = []
        self.delivery_ids: list[int] = []
        self.dropped_deliveries = 0
        self.next_delivery_id = 1
        self.used_reply_tokens: dict[str, float] = {}   # token -> when it expires (epoch ms)
        self.retry_keys: dict[str, tuple[str, float]] = {}  # key -> (request id, accepted at ms)
        self.message_ids = itertools.count(int.from_bytes(os.urandom(4), "big") * 1000)
        self.stats_lock = threading.Lock()
        self.calls: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self.dropped = 0
        self.faults = 0
        self.messages_sent = 0

    def bucket(self, endpoint: str) -> TokenBucket | None:
        return self.buckets.get(endpoint) or self.buckets.get("default")

    def sent_messages(self, messages: list[dict]) -> list[dict]:
        """LINE's `sentMessages`: an id per message, a quote token for quotable ones."""
        return [{"id": str(next(self.message_ids)),
                 **({"quoteToken": os.urandom(16).hex()} if m.get("type") in ("text", "textV2", "sticker") else {})}
                for m in messages]

    def deliver(self, endpoint: str, req: falcon.Request, to: list[str], messages: list[dict],
                reply_token: str | None = None, reply_expires_ms: float = 0.0,
                source_event: str | None = None, extra: dict | None = None) -> dict:
        """Record an accepted delivery, enforcing single-use reply tokens and retry keys atomically."""
        retry_key = req.get_header("X-Line-Retry-Key")
        now_ms = time.time() * 1000.0
        with self.lock:
            if reply_token is not None:
                if reply_token in self.used_reply_tokens:
                    raise LineError(400, MESSAGES["bad_reply_token"])
                self.used_reply_tokens[reply_token] = reply_expires_ms
                if len(self.used_reply_tokens) % 10000 == 0:
                    self._forget_expired(now_ms)
            if retry_key is not None:
                accepted = self.retry_keys.get(retry_key.lower())
                if accepted is not None and now_ms - accepted[1] < RETRY_KEY_LIFETIME_MS:
                    raise LineError(409, MESSAGES["retry_key_accepted"],
                                    headers={"X-Line-Accepted-Request-Id": accepted[0]})
                self.retry_keys[retry_key.lower()] = (req.context.request_id, now_ms)
            delivery = {"id": self.next_delivery_id, "endpoint": endpoint, "to": to, "messages": messages,
                        "time": now_ms, "retry_key": retry_key, "request_id": req.context.request_id,
                        "source_event": source_event, **(extra or {})}
            self.next_delivery_id += 1
            self.deliveries.append(_JSON.encode(delivery).encode())
            self.delivery_ids.append(delivery["id"])
            if len(self.deliveries) > self.recorder_size:
                drop = max(1, self.recorder_size // 10)
                del self.deliveries[:drop], self.delivery_ids[:drop]
                self.dropped_deliveries += drop
            if endpoint != "reply":
                self.messages_sent += len(messages) * max(1, len(to))
            self.changed.notify_all()
        return delivery

    def _forget_expired(self, now_ms: float) -> None:
        """Expired tokens are refused by their timestamp already; they need not be remembered."""
        self.used_reply_tokens = {t: exp for t, exp in self.used_reply_tokens.items() if exp > now_ms}
        self.retry_keys = {k: v for k, v in self.retry_keys.items() if now_ms - v[1] < RETRY_KEY_LIFETIME_MS}

    def deliveries_since(self, since: int, limit: int, wait_s: float) -> tuple[bytes, int]:
        """(a JSON array of the deliveries with an id above `since`, the oldest id still held);
        with wait_s, block until there is one (long poll)."""
        with self.lock:
            if wait_s > 0:
                self.changed.wait_for(lambda: self.delivery_ids and self.delivery_ids[-1] > since,
                                      timeout=wait_s)
            start = bisect.bisect_right(self.delivery_ids, since)
            page = b"[" + b",".join(self.deliveries[start:start + limit]) + b"]"
            return page, self.delivery_ids[0] if self.delivery_ids else self.next_delivery_id

    def reset(self) -> int:
        with self.lock:
            dropped = len(self.deliveries)
            self.deliveries, self.delivery_ids, self.dropped_deliveries = [], [], 0
        with self.stats_lock:
            self.calls.clear()
            self.dropped = self.faults = self.messages_sent = 0
        return dropped

    def count_call(self, endpoint: str, status: int, dropped: bool) -> None:
        with self.stats_lock:
            self.calls[endpoint][status] += 1
            self.dropped += dropped

    def stats(self) -> dict:
        with self.stats_lock:
            calls = {endpoint: {str(status): n for status, n in sorted(by_status.items())}
                     for endpoint, by_status in sorted(self.calls.items())}
            totals = {"dropped": self.dropped, "faults": self.faults}
        with self.lock:
            held, last, forgotten = len(self.deliveries), self.next_delivery_id - 1, self.dropped_deliveries
        return {"calls": calls, "api_calls": sum(sum(s.values()) for s in calls.values()),
                "http_429": sum(s.get("429", 0) for s in calls.values()), **totals,
                "deliveries": held, "last_delivery_id": last, "deliveries_dropped": forgotten}


def _json(resp: falcon.Response, status: int, body) -> None:
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    resp.data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def _read_json(req: falcon.Request) -> dict:
    raw = req.bounded_stream.read()
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LineError(400, f"The request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise LineError(400, "The request body must be a JSON object")
    return body


class ApiMiddleware:
    """What LINE does around every endpoint: latency, auth, limits, retry-key rules, faults, drops."""

    def __init__(self, settings: Settings, state: SandboxState, access_token: str):
        self.state = state
        self.latency_s = settings.sandbox_latency_ms / 1000.0
        self.fault_rate = settings.sandbox_fault_rate
        self.drop_rate = settings.sandbox_drop_rate
        self.expected_auth = ("Bearer " + access_token).encode()
        self.random = random.Random()

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.request_id = os.urandom(16).hex()
        req.context.drop = False
        if self.latency_s and req.path.startswith("/v2/"):
            time.sleep(self.latency_s)

    def process_resource(self, req, resp, resource, params) -> None:
        endpoint = getattr(resource, "endpoint", None)
        if endpoint is None:  # /sandbox/* control routes and unknown paths
            return
        authorization = req.get_header("Authorization")
        if not authorization:
            raise LineError(401, MESSAGES["no_auth"])
        if not hmac.compare_digest(authorization.encode("latin-1", "replace"), self.expected_auth):
            log.warning("event=auth_failed endpoint=%s", endpoint)
            raise LineError(401, MESSAGES["bad_auth"])
        bucket = self.state.bucket(endpoint)
        if bucket is not None and not bucket.take():
            raise LineError(429, MESSAGES["rate_limited"])
        retry_key = req.get_header("X-Line-Retry-Key")
        if retry_key is not None:
            if endpoint not in RETRY_KEY_ENDPOINTS:
                raise LineError(400, f"X-Line-Retry-Key is not supported by this endpoint ({endpoint}); "
                                     f"only by {', '.join(sorted(RETRY_KEY_ENDPOINTS))}")
            if not UUID_PATTERN.fullmatch(retry_key):
                raise LineError(400, "X-Line-Retry-Key must be a UUID (hexadecimal, 8-4-4-4-12)")
        draw = self.random.random()
        if draw < self.fault_rate:
            with self.state.stats_lock:
                self.state.faults += 1
            log.debug("event=fault_injected endpoint=%s request_id=%s", endpoint, req.context.request_id)
            raise LineError(500, "Internal server error (injected by the sandbox: nothing was done)")
        req.context.drop = draw < self.fault_rate + self.drop_rate

    def process_response(self, req, resp, resource, req_succeeded) -> None:
        resp.set_header("X-Line-Request-Id", req.context.request_id)
        endpoint = getattr(resource, "endpoint", None)
        if endpoint is None:
            return
        status = int(str(resp.status).split()[0])
        self.state.count_call(endpoint, status, req.context.drop)
        if req.context.drop:
            log.debug("event=connection_dropped endpoint=%s request_id=%s status=%d", endpoint,
                      req.context.request_id, status)
            req.env[DROP_CONNECTION] = True


class Endpoint:
    """An API resource: `endpoint` names its rate-limit bucket and stats row."""
    endpoint = "default"

    def __init__(self, state: SandboxState):
        self.state = state


class Reply(Endpoint):
    endpoint = "reply"

    def on_post(self, req, resp):
        body = _read_json(req)
        check = Validator()
        check.string(body, "replyToken", "replyToken")
        check.messages(body)
        check.boolean(body, "notificationDisabled")
        check.raise_if_failed()
        try:
            token = read_reply_token(self.state.channel_secret, body["replyToken"])
        except ReplyTokenError:
            raise LineError(400, MESSAGES["bad_reply_token"]) from None
        expires_ms = token.issued_ms + self.state.reply_token_ttl_ms
        if time.time() * 1000.0 > expires_ms:
            raise LineError(400, MESSAGES["bad_reply_token"])
        self.state.deliver("reply", req, [token.source_key], body["messages"], reply_token=body["replyToken"],
                           reply_expires_ms=expires_ms, source_event=token.event_id or None)
        _json(resp, 200, {"sentMessages": self.state.sent_messages(body["messages"])})


class Push(Endpoint):
    endpoint = "push"

    def on_post(self, req, resp):
        body = _read_json(req)
        check = Validator()
        check.recipient(body)
        check.messages(body)
        check.boolean(body, "notificationDisabled")
        check.raise_if_failed()
        self.state.deliver("push", req, [body["to"]], body["messages"])
        _json(resp, 200, {"sentMessages": self.state.sent_messages(body["messages"])})


class Multicast(Endpoint):
    endpoint = "multicast"

    def on_post(self, req, resp):
        body = _read_json(req)
        check = Validator()
        check.user_ids(body)
        check.messages(body)
        check.boolean(body, "notificationDisabled")
        check.raise_if_failed()
        self.state.deliver("multicast", req, list(body["to"]), body["messages"])
        _json(resp, 200, {})


class Broadcast(Endpoint):
    """To every friend of the bot: recorded with an empty `to`."""
    endpoint = "broadcast"

    def on_post(self, req, resp):
        body = _read_json(req)
        check = Validator()
        check.messages(body)
        check.boolean(body, "notificationDisabled")
        check.raise_if_failed()
        self.state.deliver("broadcast", req, [], body["messages"])
        _json(resp, 200, {})


class Narrowcast(Endpoint):
    """Answered 202 like LINE; the audience (recipient, filter, limit) is recorded, not resolved."""
    endpoint = "narrowcast"

    def on_post(self, req, resp):
        body = _read_json(req)
        check = Validator()
        check.messages(body)
        for key in ("recipient", "filter", "limit"):
            if key in body and not isinstance(body[key], dict):
                check.fail(key, "must be an object")
        check.boolean(body, "notificationDisabled")
        check.raise_if_failed()
        audience = {key: body[key] for key in ("recipient", "filter", "limit") if key in body}
        self.state.deliver("narrowcast", req, [], body["messages"], extra={"audience": audience})
        _json(resp, 202, {})


class NarrowcastProgress(Endpoint):
    def on_get(self, req, resp):
        if not req.get_param("requestId"):
            raise LineError(400, "The request has 1 error(s)", [{"message": "must be specified",
                                                                   "property": "requestId"}])
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        _json(resp, 200, {"phase": "succeeded", "successCount": 0, "failureCount": 0, "targetCount": 0,
                          "acceptedTime": now, "completedTime": now})


class ValidateMessages(Endpoint):
    """POST /v2/bot/message/validate/{reply,push,multicast,narrowcast,broadcast}: messages only."""

    def on_post(self, req, resp, kind):
        if kind not in ("reply", "push", "multicast", "narrowcast", "broadcast"):
            raise LineError(404, MESSAGES["not_found"])
        check = Validator()
        check.messages(_read_json(req))
        check.raise_if_failed()
        _json(resp, 200, {})


def display_name(some_id: str) -> str:
    """Deterministic profile names, so tests know what to expect: User-<last 4 chars>."""
    return f"User-{some_id[-4:]}"


def _profile(user_id: str) -> dict:
    if not USER_ID_PATTERN.fullmatch(user_id):
        raise LineError(404, MESSAGES["not_found"])
    return {"userId": user_id, "displayName": display_name(user_id), "language": "ja",
            "pictureUrl": f"https://profile.line-scdn.net/sandbox/{user_id}", "statusMessage": "Hello, LINE!"}


class Profile(Endpoint):
    endpoint = "profile"

    def on_get(self, req, resp, user_id):
        _json(resp, 200, _profile(user_id))


class MemberProfile(Endpoint):
    """GET /v2/bot/{group|room}/{id}/member/{userId}: the profile without status and language."""
    endpoint = "profile"

    def on_get(self, req, resp, user_id, group_id=None, room_id=None):
        if not ID_PATTERN.fullmatch(group_id or room_id):
            raise LineError(404, MESSAGES["not_found"])
        profile = _profile(user_id)
        _json(resp, 200, {k: profile[k] for k in ("userId", "displayName", "pictureUrl")})


class GroupSummary(Endpoint):
    def on_get(self, req, resp, group_id):
        if not group_id.startswith("C") or not ID_PATTERN.fullmatch(group_id):
            raise LineError(404, MESSAGES["not_found"])
        _json(resp, 200, {"groupId": group_id, "groupName": f"Group-{group_id[-4:]}",
                          "pictureUrl": f"https://profile.line-scdn.net/sandbox/{group_id}"})


class Content(Endpoint):
    """api-data.line.me's content download, served on the same port."""
    endpoint = "content"

    def on_get(self, req, resp, message_id):
        content = message_content(message_id)
        if content is None:
            raise LineError(404, MESSAGES["not_found"])
        resp.content_type, resp.data = content


class ContentTranscoding(Endpoint):
    endpoint = "content"

    def on_get(self, req, resp, message_id):
        if message_content(message_id) is None:
            raise LineError(404, MESSAGES["not_found"])
        _json(resp, 200, {"status": "succeeded"})


class Quota(Endpoint):
    def on_get(self, req, resp):
        _json(resp, 200, {"type": "none"})


class QuotaConsumption(Endpoint):
    """Messages counted as LINE bills them: push, multicast, broadcast, narrowcast (not reply)."""

    def on_get(self, req, resp):
        with self.state.lock:
            _json(resp, 200, {"totalUsage": self.state.messages_sent})


class BotInfo(Endpoint):
    def on_get(self, req, resp):
        _json(resp, 200, {"userId": BOT_USER_ID, "basicId": "@frontdesk", "displayName": "frontdesk sandbox",
                          "chatMode": "bot", "markAsReadMode": "auto"})


class LoadingAnimation(Endpoint):
    def on_post(self, req, resp):
        body = _read_json(req)
        check = Validator()
        value = body.get("chatId")
        if not isinstance(value, str) or not USER_ID_PATTERN.fullmatch(value):
            check.fail("chatId", "must be a user ID (U followed by 32 hex digits)")
        seconds = body.get("loadingSeconds", 20)
        if isinstance(seconds, bool) or not isinstance(seconds, int) or not 5 <= seconds <= 60 or seconds % 5:
            check.fail("loadingSeconds", "must be a multiple of 5 between 5 and 60")
        check.raise_if_failed()
        _json(resp, 202, {})


class Deliveries:
    """GET: what users received (?since=<id>&limit=<n>&wait=<s> to page and long-poll); DELETE: forget."""

    def __init__(self, state: SandboxState):
        self.state = state

    def on_get(self, req, resp):
        try:
            since = int(req.get_param("since") or 0)
            limit = min(int(req.get_param("limit") or MAX_PAGE), MAX_PAGE)
            wait_s = min(float(req.get_param("wait") or 0), MAX_WAIT_S)
        except ValueError:
            raise LineError(400, "since and limit must be integers, wait a number of seconds") from None
        page, oldest = self.state.deliveries_since(since, max(limit, 0), wait_s)
        resp.status, resp.content_type, resp.data = 200, falcon.MEDIA_JSON, page
        # A reader that fell behind the recorder sees it: ids below this one were dropped.
        resp.set_header("X-Sandbox-Oldest-Delivery", str(oldest))

    def on_delete(self, req, resp):
        _json(resp, 200, {"deleted": self.state.reset()})


class Stats:
    def __init__(self, state: SandboxState):
        self.state = state

    def on_get(self, req, resp):
        _json(resp, 200, self.state.stats())


def _line_error(req, resp, ex: LineError, params) -> None:
    _json(resp, ex.status, ex.body())
    for name, value in ex.headers.items():
        resp.set_header(name, value)
    if ex.status >= 400 and ex.status != 429:
        log.debug("event=api_error status=%d path=%s message=%s", ex.status, req.path, ex.message)


def _http_error(req, resp, ex: falcon.HTTPError, params) -> None:
    """Falcon's own errors (unknown path, wrong method) in LINE's shape."""
    status = int(str(ex.status).split()[0])
    message = MESSAGES["not_found"] if status == 404 else ex.description or HTTPStatus(status).phrase
    _json(resp, status, {"message": message})


def create_app(settings: Settings, channel_secret: str, access_token: str) -> falcon.App:
    """The emulator: LINE's API under /v2, the recorder under /sandbox."""
    state = SandboxState(settings, channel_secret)
    app = falcon.App(middleware=[ApiMiddleware(settings, state, access_token)])
    app.req_options.strip_url_path_trailing_slash = True
    routes = {
        "/v2/bot/message/reply": Reply,
        "/v2/bot/message/push": Push,
        "/v2/bot/message/multicast": Multicast,
        "/v2/bot/message/broadcast": Broadcast,
        "/v2/bot/message/narrowcast": Narrowcast,
        "/v2/bot/message/progress/narrowcast": NarrowcastProgress,
        "/v2/bot/message/validate/{kind}": ValidateMessages,
        "/v2/bot/message/quota": Quota,
        "/v2/bot/message/quota/consumption": QuotaConsumption,
        "/v2/bot/message/{message_id}/content": Content,
        "/v2/bot/message/{message_id}/content/transcoding": ContentTranscoding,
        "/v2/bot/profile/{user_id}": Profile,
        "/v2/bot/group/{group_id}/member/{user_id}": MemberProfile,
        "/v2/bot/room/{room_id}/member/{user_id}": MemberProfile,
        "/v2/bot/group/{group_id}/summary": GroupSummary,
        "/v2/bot/info": BotInfo,
        "/v2/bot/chat/loading/start": LoadingAnimation,
        "/sandbox/deliveries": Deliveries,
        "/sandbox/stats": Stats,
    }
    for path, resource in routes.items():
        app.add_route(path, resource(state))
    app.add_error_handler(falcon.HTTPError, _http_error)
    app.add_error_handler(LineError, _line_error)
    return app
