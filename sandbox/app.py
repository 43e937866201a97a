"""The LINE Messaging API emulator as a falcon WSGI app.

Same paths, JSON bodies, status codes and error bodies as LINE (api.line.me and api-data.line.me
on one port), so the official SDKs and our rate limiter work against it unchanged. Every API
call goes through, in order: injected latency (the server's, sandbox/server.py), bearer token
(401: the channel's fixed token, or one the token API of tokens.py issued), rate limit (429),
retry-key header rules (400), injected fault (500, nothing done), the endpoint (validation 400,
reply token 400, retry-key 409, the month's target limit 429, then the delivery is recorded),
injected drop (the connection closes with no answer, after the call took effect — the ambiguous
failure retry keys exist for; the server closes it, asked by wsgi.CLOSE_WITHOUT_ANSWER).
Accepted deliveries are served at /sandbox/deliveries for tests and the bench.

The endpoints live beside this module, one area each: messages.py (sending and validating
messages), chats.py (profiles, followers, groups and rooms), content.py, richmenu.py,
statistics.py, channel.py (bot info, webhook settings, link tokens, read receipts), shop.py
(coupons and membership) and tokens.py (the channel access token API). This module holds what
they share: the state and the middleware.
"""
from __future__ import annotations

import bisect
import email.utils
import hmac
import itertools
import json
import logging
import os
import random
import threading
import time
from collections import defaultdict
from http import HTTPStatus

import falcon

from frontdesk.protocol.config import SANDBOX_CHANNEL_ID, Settings
from frontdesk.protocol.line_endpoints import LIMITS, RETRY_KEY_ENDPOINTS
from frontdesk.protocol.wsgi import CLOSE_WITHOUT_ANSWER

from . import channel, chatpage, chats, content, messages, richmenu, shop, statistics, tokens
from .api import MESSAGES, UUID_PATTERN, LineError, send_json
from .history import ChatHistory, read_trace
from .statistics import Statistics
from .world import World

log = logging.getLogger("frontdesk.sandbox")

RETRY_KEY_LIFETIME_MS = 24 * 3600 * 1000
MAX_WAIT_S = 30.0          # longest long-poll of /sandbox/deliveries
MAX_PAGE = 10000           # most deliveries in one page
TRACE_HEADER = "X-Frontdesk-Trace"   # frontdesk's rate limiter names the events a call serves (api_trace)
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


class TokenBucket:
    """`count` calls per `period` seconds, bursts up to one period's worth (at least one call):
    60 per hour may come at once, then one a minute."""

    def __init__(self, count: float, period: float):
        self.rate = count / period
        self.capacity = max(1.0, count)
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
    """LINE's figures, with what sandbox_rate_limits names replacing them endpoint by endpoint."""
    return {**LIMITS, **settings.sandbox_rate_limits}


# Made-up ids (request ids, quote tokens) need to be unique, not secret: one generator seeded
# from the OS per process. os.urandom per id cost a system call each (with the GIL released and
# taken back): 6 % and 15 % of the sandbox's samples at 1,000 events/s.
_ids = random.Random()


def random_hex() -> str:
    """32 random hex digits (128 bits)."""
    return f"{_ids.getrandbits(128):032x}"


def new_request_id() -> str:
    """A random UUID (version 4) like LINE's x-line-request-id; a fraction of uuid.uuid4()'s cost."""
    h = random_hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


_date = (0, "")   # (second, its Date header)


def http_date() -> str:
    """The Date header LINE's answers carry (`frontdesk doctor` reads the clock skew from it),
    formatted once a second."""
    global _date
    second = int(time.time())
    if _date[0] != second:
        _date = (second, email.utils.formatdate(second, usegmt=True))
    return _date[1]


class SandboxState:
    """Everything the sandbox remembers, under one lock: the loop's thread serves most calls, the
    threads of blocking ones (long polls, the webhook test) may touch it at the same time."""

    def __init__(self, settings: Settings, channel_secret: str, access_token: str):
        self.channel_secret = channel_secret
        self.reply_token_ttl_ms = settings.sandbox_reply_token_ttl_s * 1000.0
        self.limits = rate_limits(settings)
        self.buckets = {name: TokenBucket(*limit) for name, limit in self.limits.items()}
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)   # notified on every new delivery
        self.stopping = False                           # long polls return at once
        # The recorder: each delivery kept as its JSON (a dict per delivery held 2.8 KB; 54,000 of
        # them 153 MB), the oldest dropped past sandbox_recorder_size, a tenth at a time.
        self.recorder_size = settings.sandbox_recorder_size
        self.deliveries: list[bytes] = []
        self.delivery_ids: list[int] = []
        self.dropped_deliveries = 0
        self.next_delivery_id = 1
        self.used_reply_tokens: dict[str, float] = {}   # token -> when it expires (epoch ms)
        # retry key -> (request id, accepted at ms, the answer's sentMessages or None)
        self.retry_keys: dict[str, tuple[str, float, list | None]] = {}
        self.message_ids = itertools.count(int.from_bytes(os.urandom(4), "big") * 1000)
        self.stats_lock = threading.Lock()
        self.calls: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self.loading_chats: dict[str, int] = defaultdict(int)   # chat -> loading animations started
        self.dropped = 0
        self.faults = 0
        self.statistics = Statistics()
        self.world = World()
        self.narrowcasts: dict[str, tuple[float, int]] = {}  # request id -> (accepted at ms, target count)
        self.richmenus = richmenu.RichMenus()
        local_receiver = f"http://{settings.listen}{settings.callback_path}"
        self.channel = channel.ChannelSettings(settings.public_url or local_receiver)
        self.tokens = tokens.ChannelTokens(settings.channel_id or SANDBOX_CHANNEL_ID, channel_secret,
                                           access_token, stateless_lifetime_s=settings.sandbox_stateless_token_s)
        self.shop = shop.Shop(self.world)
        self.history = ChatHistory()
        self.uploads = content.Uploads()
        self.latency_ms = settings.sandbox_latency_ms

    @staticmethod
    def now_ms() -> float:
        return time.time() * 1000.0

    def bucket(self, endpoint: str) -> TokenBucket:
        """The endpoint's own bucket: LINE limits each endpoint separately, the ones without a row
        of their own at the `default` figure."""
        bucket = self.buckets.get(endpoint)
        if bucket is None:
            bucket = self.buckets.setdefault(endpoint, TokenBucket(*self.limits["default"]))
        return bucket

    def sent_messages(self, messages: list[dict]) -> list[dict]:
        """LINE's `sentMessages`: an id per message, a quote token for quotable ones."""
        return [{"id": str(next(self.message_ids)),
                 **({"quoteToken": random_hex()} if m.get("type") in ("text", "textV2", "sticker") else {})}
                for m in messages]

    def deliver(self, endpoint: str, req: falcon.Request, to: list[str], messages: list[dict],
                reply_token: str | None = None, reply_expires_ms: float = 0.0,
                source_event: str | None = None, extra: dict | None = None,
                sent: list[dict] | None = None, recipients: int | None = None) -> dict:
        """Record an accepted delivery, enforcing single-use reply tokens and retry keys atomically.

        `sent` is the answer's sentMessages (kept with the retry key: a repeat's 409 carries them,
        as LINE's does); `recipients` counts for the statistics when `to` does not (broadcast, a
        group's members). LINE counts a request once per recipient, whatever its message objects.
        Raises LineError 400 for a used reply token, 409 for a retry key accepted within 24 h.
        """
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
                    conflict = LineError(409, MESSAGES["retry_key_accepted"],
                                         headers={"X-Line-Accepted-Request-Id": accepted[0]})
                    if accepted[2] is not None:
                        conflict.extra["sentMessages"] = accepted[2]
                    raise conflict
            count = len(to) if recipients is None else recipients   # LINE: requests times recipients
            if self.statistics.over_quota(endpoint, count, now_ms):
                raise LineError(429, MESSAGES["monthly_limit"])
            if retry_key is not None:
                self.retry_keys[retry_key.lower()] = (req.context.request_id, now_ms, sent)
            delivery = {"id": self.next_delivery_id, "endpoint": endpoint, "to": to, "messages": messages,
                        "time": now_ms, "retry_key": retry_key, "request_id": req.context.request_id,
                        "source_event": source_event, **(extra or {})}
            if sent is not None:
                delivery["sent_message_ids"] = [m["id"] for m in sent]
            self.next_delivery_id += 1
            encoded = _JSON.encode(delivery).encode()
            self.deliveries.append(encoded)
            self.delivery_ids.append(delivery["id"])
            if len(self.deliveries) > self.recorder_size:
                drop = max(1, self.recorder_size // 10)
                del self.deliveries[:drop], self.delivery_ids[:drop]
                self.dropped_deliveries += drop
            self.statistics.record(endpoint, count, now_ms, extra and extra.get("customAggregationUnits"))
            self.changed.notify_all()
        traced = read_trace(req.context.trace) if source_event is None and req.context.trace else ()
        self.history.add_delivery(delivery, encoded, source_event or (traced[0]["event"] if traced else None))
        return delivery

    def _forget_expired(self, now_ms: float) -> None:
        """Expired tokens are refused by their timestamp already; they need not be remembered."""
        self.used_reply_tokens = {t: exp for t, exp in self.used_reply_tokens.items() if exp > now_ms}
        self.retry_keys = {k: v for k, v in self.retry_keys.items() if now_ms - v[1] < RETRY_KEY_LIFETIME_MS}

    def deliveries_since(self, since: int, limit: int, wait_s: float) -> tuple[bytes, int]:
        """(a JSON array of the deliveries with an id above `since`, the oldest id still held);
        with wait_s, block until there is one or the server stops (long poll)."""
        with self.lock:
            if wait_s > 0:
                self.changed.wait_for(
                    lambda: self.stopping or (self.delivery_ids and self.delivery_ids[-1] > since), timeout=wait_s)
            start = bisect.bisect_right(self.delivery_ids, since)
            page = b"[" + b",".join(self.deliveries[start:start + limit]) + b"]"
            return page, self.delivery_ids[0] if self.delivery_ids else self.next_delivery_id

    def stop_waiting(self) -> None:
        """The server is stopping: every long poll answers now with what there is."""
        with self.lock:
            self.stopping = True
            self.changed.notify_all()
        self.history.stop_waiting()

    def reset(self) -> int:
        with self.lock:
            dropped = len(self.deliveries)
            self.deliveries, self.delivery_ids, self.dropped_deliveries = [], [], 0
        with self.stats_lock:
            self.calls.clear()
            self.loading_chats.clear()
            self.dropped = self.faults = 0
        self.statistics.reset()
        return dropped

    def count_call(self, endpoint: str, status: int, dropped: bool) -> None:
        with self.stats_lock:
            self.calls[endpoint][status] += 1
            self.dropped += dropped

    def loading_started(self, chat_id: str) -> None:
        with self.stats_lock:
            self.loading_chats[chat_id] += 1

    def stats(self) -> dict:
        with self.stats_lock:
            calls = {endpoint: {str(status): n for status, n in sorted(by_status.items())}
                     for endpoint, by_status in sorted(self.calls.items())}
            totals = {"dropped": self.dropped, "faults": self.faults,
                      "loading": {"chats": len(self.loading_chats), "started": sum(self.loading_chats.values()),
                                  "by_chat": dict(self.loading_chats)}}
        with self.lock:
            held, last, forgotten = len(self.deliveries), self.next_delivery_id - 1, self.dropped_deliveries
        return {"calls": calls, "api_calls": sum(sum(s.values()) for s in calls.values()),
                "http_429": sum(s.get("429", 0) for s in calls.values()), **totals,
                "deliveries": held, "last_delivery_id": last, "deliveries_dropped": forgotten}


class ApiMiddleware:
    """What LINE does around every endpoint: auth, limits, retry-key rules, faults, drops (the
    latency is the server's: a sleep here would stall its event loop)."""

    def __init__(self, settings: Settings, state: SandboxState):
        self.state = state
        self.fault_rate = settings.sandbox_fault_rate
        self.drop_rate = settings.sandbox_drop_rate
        self.expected_auth = ("Bearer " + state.tokens.long_lived_token).encode()
        self.random = random.Random()

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.request_id = new_request_id()
        req.context.drop = False
        req.context.started = time.perf_counter()
        req.context.arrived_ms = time.time() * 1000.0   # the call's time in the inspector
        req.context.raw_body = None          # read_json keeps the body it parsed, for the inspector
        req.context.reply_event = None       # a reply's token names the event it answers

    def process_resource(self, req, resp, resource, params) -> None:
        endpoint_for = getattr(resource, "endpoint_for", None)
        if endpoint_for is None:  # /sandbox/* control routes and unknown paths
            req.context.endpoint = None
            return
        req.context.endpoint = endpoint = endpoint_for(req.method)
        req.context.trace = req.get_header(TRACE_HEADER)   # read only when the inspector asks
        if resource.authenticated:
            self._authenticate(req, endpoint)
        if not self.state.bucket(endpoint).take():
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

    def _authenticate(self, req, endpoint: str) -> None:
        """The channel's fixed token (one comparison: the hot path), else a token the token API
        issued that is neither expired nor revoked; LINE's 401 otherwise."""
        authorization = req.get_header("Authorization")
        if not authorization:
            raise LineError(401, MESSAGES["no_auth"])
        tokens = self.state.tokens
        if hmac.compare_digest(authorization.encode("latin-1", "replace"), self.expected_auth):
            if not tokens.long_lived_revoked:
                return
        else:
            scheme, _, token = authorization.partition(" ")
            if scheme == "Bearer" and tokens.accepts(token):
                return
        log.warning("event=auth_failed endpoint=%s", endpoint)
        raise LineError(401, MESSAGES["bad_auth"])

    def process_response(self, req, resp, resource, req_succeeded) -> None:
        resp.set_header("X-Line-Request-Id", req.context.request_id)
        endpoint = getattr(req.context, "endpoint", None)
        if endpoint is None:
            return
        resp.set_header("Date", http_date())
        status = int(str(resp.status).split()[0])
        self.state.count_call(endpoint, status, req.context.drop)
        self._record(req, resp, endpoint, status)
        if req.context.drop:
            log.debug("event=connection_dropped endpoint=%s request_id=%s status=%d", endpoint,
                      req.context.request_id, status)
            req.env[CLOSE_WITHOUT_ANSWER] = True


    def _record(self, req, resp, endpoint: str, status: int) -> None:
        """The call for the chat page's inspector, as a history.Call of references (bodies as sent,
        frontdesk's trace header unread): a few microseconds on the hot path."""
        body = req.context.raw_body
        if body is None and req.method != "GET":
            body = _described(req)
        content_type = resp.content_type or ""
        self.state.history.add_call((
            req.context.request_id, req.context.arrived_ms, endpoint, req.method,
            req.path + "?" + req.query_string if req.query_string else req.path, status,
            self.state.latency_ms + (time.perf_counter() - req.context.started) * 1000.0, req.context.reply_event,
            req.context.trace, req.context.drop, body,
            resp.data if content_type.startswith("application/json") else f"<{len(resp.data or b'')} bytes, {content_type}>"))


def _described(req: falcon.Request) -> str | None:
    """A body the endpoint did not parse as JSON (an image upload): its size and type only."""
    return f"<{req.content_length} bytes, {req.content_type}>" if req.content_length else None


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
        send_json(resp, 200, {"deleted": self.state.reset()})


class Stats:
    def __init__(self, state: SandboxState):
        self.state = state

    def on_get(self, req, resp):
        send_json(resp, 200, self.state.stats())


def _line_error(req, resp, ex: LineError, params) -> None:
    send_json(resp, ex.status, ex.body())
    for name, value in ex.headers.items():
        resp.set_header(name, value)
    if ex.status >= 400 and ex.status != 429:
        log.debug("event=api_error status=%d path=%s message=%s", ex.status, req.path, ex.message)


def _http_error(req, resp, ex: falcon.HTTPError, params) -> None:
    """Falcon's own errors (unknown path, wrong method) in LINE's shape."""
    status = int(str(ex.status).split()[0])
    message = MESSAGES["not_found"] if status == 404 else ex.description or HTTPStatus(status).phrase
    send_json(resp, status, {"message": message})


API_ROUTES = {**messages.ROUTES, **chats.ROUTES, **content.ROUTES, **richmenu.ROUTES, **statistics.ROUTES,
              **channel.ROUTES, **shop.ROUTES, **tokens.ROUTES}
"""Every LINE API path the sandbox serves -> its resource (one area module each)."""
CONTROL_ROUTES = {"/sandbox/deliveries": Deliveries, "/sandbox/stats": Stats, **channel.CONTROL_ROUTES,
                  **tokens.CONTROL_ROUTES}
"""The sandbox's own routes: no token, no latency, no faults."""
HTTP_METHODS = ("GET", "POST", "PUT", "DELETE")


def served_operations() -> set[tuple[str, str]]:
    """(method, path template) of every API operation served, as create_app registers them."""
    return {(method, path) for path, resource in API_ROUTES.items() for method in HTTP_METHODS
            if hasattr(resource, "on_" + method.lower())}


def create_app(settings: Settings, channel_secret: str, access_token: str,
               state: SandboxState | None = None) -> falcon.App:
    """The emulator: LINE's API under /v2 and /oauth2, the sandbox's own routes under /sandbox; `state` is a new one
    unless the server holds it (to end long polls when it stops)."""
    state = state if state is not None else SandboxState(settings, channel_secret, access_token)
    app = falcon.App(middleware=[ApiMiddleware(settings, state)])
    app.req_options.strip_url_path_trailing_slash = True
    for path, resource in {**API_ROUTES, **CONTROL_ROUTES, **chatpage.ROUTES}.items():
        app.add_route(path, resource(state))
    app.add_error_handler(falcon.HTTPError, _http_error)
    app.add_error_handler(LineError, _line_error)
    return app
