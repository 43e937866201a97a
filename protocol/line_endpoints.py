"""The endpoint table: every API method a handler can call, declared once, and LINE's rate limits.

A method's entry says what it is everywhere: its name on the wire (protocol/SPEC.md section 8),
the LINE request it makes (HTTP method and path, and whether it goes to the data host), the rate
bucket it is paced in (its own row at LINE's figure, or `default`), its journal rule (what the
call journal does with it: a retry key, a single-use reply token, read-only, or not journaled at
all) and the name of the Python SDK's method for it. Everything that knows about methods derives
from here: the dispatcher's check of a handler's call (API_METHODS), the rate limiter's
(ratelimiter/calls.py parse_call), its request builder (ratelimiter/line_api.py build_request),
the call journal's rules (EndpointTable.journaled), the token buckets (LIMITS, also the sandbox's
429s), the SDK's methods (handlers/sdk.py) and the table in SPEC.md, which
tests/test_line_endpoints.py compares with this one. docs/adding-an-api-method.md says how to add
a method.

LINE limits each API function (method and path) separately, per channel, and answers 429 beyond
("Rate limits" in LINE's Messaging API reference). Endpoints with no row of their own share the
figure of "Other API endpoints", 2,000 requests per second. The row names are the rate limiter's
bucket names and the keys of the `rate_limits` and `sandbox_rate_limits` settings.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Callable
from urllib.parse import quote

SECOND, MINUTE, HOUR = 1.0, 60.0, 3600.0
MAX_MESSAGES = 5
MAX_MULTICAST_TO = 500
MAX_PATH_ID = 200          # characters of an id that goes into a path
DEFAULT = "default"        # the bucket of every endpoint without a row of its own


class ArgsError(ValueError):
    """A handler's call arguments are unusable; the message names the method and the argument."""


class Journal(Enum):
    """What the call journal does with a method's calls (docs/ratelimiter.md, "Exactly-once
    machinery"); the value is how SPEC.md's table names the rule."""
    RETRY_KEY = "retry key"            # journaled; sent with X-Line-Retry-Key, so LINE drops a repeat (409)
    REPLY_TOKEN = "reply token"        # journaled; the token works once, so a repeat cannot deliver twice
    ONCE = "once"                      # journaled; never sent again once it may have reached LINE
    READ_ONLY = "read-only"            # not journaled: made again, it changes nothing
    NOT_JOURNALED = "not journaled"    # frontdesk's store, not LINE
    BY_REQUEST = "by request"          # `call`: a GET is read-only, a POST to a retry-key row gets a key, others once

    @property
    def journaled(self) -> bool:
        """Its calls are written to the journal before they go out (BY_REQUEST: see journaled())."""
        return self in (Journal.RETRY_KEY, Journal.REPLY_TOKEN, Journal.ONCE)


Check = Callable[[dict, str], None]   # check(args, method name): raises ArgsError naming the argument


def messages(args: dict, method: str) -> None:
    """`messages`: a list of 1 to MAX_MESSAGES message objects."""
    value = args.get("messages")
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_MESSAGES:
        raise ArgsError(f"{method}: `messages` must be a list of 1 to {MAX_MESSAGES} message objects")
    if not all(isinstance(m, dict) for m in value):
        raise ArgsError(f"{method}: every entry of `messages` must be a message object")


def string(name: str) -> Check:
    """`name`: a non-empty string."""
    def check(args: dict, method: str) -> None:
        value = args.get(name)
        if not isinstance(value, str) or not value:
            raise ArgsError(f"{method}: `{name}` must be a non-empty string")
    return check


def user_ids(name: str, most: int) -> Check:
    """`name`: a list of 1 to `most` non-empty strings."""
    def check(args: dict, method: str) -> None:
        value = args.get(name)
        if not isinstance(value, list) or not 1 <= len(value) <= most \
                or not all(isinstance(u, str) and u for u in value):
            raise ArgsError(f"{method}: `{name}` must be a list of 1 to {most} user ids")
    return check


def mapping(name: str) -> Check:
    """`name`: a map."""
    def check(args: dict, method: str) -> None:
        if not isinstance(args.get(name), dict):
            raise ArgsError(f"{method}: `{name}` must be a map")
    return check


def path_id(args: dict, name: str, method: str) -> str:
    """Arg `name` as one path segment: a non-empty string, no '/', at most MAX_PATH_ID characters."""
    string(name)(args, method)
    value = args[name]
    if "/" in value or len(value) > MAX_PATH_ID:
        raise ArgsError(f"{method}: `{name}` is not a valid id")
    return quote(value, safe="")


@dataclass(frozen=True)
class RateRow:
    """One row of LINE's rate-limit table: a bucket of the rate limiter and of the sandbox's 429s.
    `path` has `{field}` for one path segment; `retry_key`: LINE accepts X-Line-Retry-Key there."""
    name: str
    http_method: str
    path: str
    limit: tuple[float, float]
    retry_key: bool = False


@dataclass(frozen=True)
class ApiMethod:
    """One method a handler can call (SPEC.md section 8).

    `request` is the LINE request it makes, "METHOD /path" with `{field}` for an argument that
    goes into the path (checked as an id), or None for `call` (the request is in its args) and for
    the store's methods. `limit` gives it a rate row of its own at LINE's figure, named after the
    method; without one it shares `default`. A POST sends its args, less the path's, as the JSON
    body. `checks` run in order before anything is sent. `sdk` is the Python SDK's name for it.
    `tells_sent_as`: its result says how it went ("sent_as": a reply may go as a push, a push as a
    multicast); `request_id`: its result carries LINE's X-Line-Request-Id (to follow its progress).
    """
    name: str
    request: str | None
    journal: Journal
    limit: tuple[float, float] | None = None
    data_api: bool = False
    checks: tuple[Check, ...] = ()
    sdk: str = ""
    tells_sent_as: bool = False
    request_id: bool = False

    http_method: str | None = field(init=False, repr=False, compare=False)
    path: str | None = field(init=False, repr=False, compare=False)
    path_fields: tuple[str, ...] = field(init=False, repr=False, compare=False)   # args that go into the path

    def __post_init__(self):
        # PERF: derived once; the request builder reads them for every call
        method, _, path = (self.request or "").partition(" ")
        derived = {"sdk": self.sdk or self.name, "http_method": method or None, "path": path or None,
                   "path_fields": tuple(part[1:-1] for part in path.split("/") if part.startswith("{"))}
        for name, value in derived.items():
            object.__setattr__(self, name, value)

    @property
    def bucket(self) -> str | None:
        """The rate row it is paced in (None: `call`'s depends on its request, the store's none)."""
        if self.request is None:
            return None
        return self.name if self.limit is not None else DEFAULT

    def check(self, args: dict) -> None:
        """Raises ArgsError naming the first argument that is wrong."""
        for check in self.checks:
            check(args, self.name)
        for name in self.path_fields:
            path_id(args, name, self.name)

    def path_with(self, args: dict) -> str:
        """The path with the args' ids in it, each checked (ArgsError naming a bad one)."""
        if not self.path_fields:
            return self.path
        return "/".join(path_id(args, part[1:-1], self.name) if part.startswith("{") else part
                        for part in self.path.split("/"))


GENERIC_CALL = "call"   # the method whose args name the request (any Messaging API endpoint)

METHODS: tuple[ApiMethod, ...] = (
    ApiMethod("reply", "POST /v2/bot/message/reply", Journal.REPLY_TOKEN, (2000, SECOND),
              checks=(messages, string("replyToken")), tells_sent_as=True),
    ApiMethod("push", "POST /v2/bot/message/push", Journal.RETRY_KEY, (2000, SECOND),
              checks=(messages, string("to")), tells_sent_as=True),
    ApiMethod("multicast", "POST /v2/bot/message/multicast", Journal.RETRY_KEY, (200, SECOND),
              checks=(messages, user_ids("to", MAX_MULTICAST_TO)), tells_sent_as=True),
    ApiMethod("broadcast", "POST /v2/bot/message/broadcast", Journal.RETRY_KEY, (60, HOUR), checks=(messages,)),
    ApiMethod("narrowcast", "POST /v2/bot/message/narrowcast", Journal.RETRY_KEY, (60, HOUR), request_id=True),
    ApiMethod("profile", "GET /v2/bot/profile/{userId}", Journal.READ_ONLY, (2000, SECOND)),
    ApiMethod("content", "GET /v2/bot/message/{messageId}/content", Journal.READ_ONLY, (2000, SECOND),
              data_api=True),
    # repeat-safe (a repeat only restarts the animation), so read-only's rule; LINE's table has no
    # row for it: 100/s is frontdesk's own figure, since the animation is a courtesy (docs/ratelimiter.md)
    ApiMethod("loading", "POST /v2/bot/chat/loading/start", Journal.READ_ONLY, (100, SECOND),
              checks=(string("chatId"),), sdk="show_loading_animation"),
    ApiMethod("quota", "GET /v2/bot/message/quota", Journal.READ_ONLY),
    ApiMethod("quota_consumption", "GET /v2/bot/message/quota/consumption", Journal.READ_ONLY),
    ApiMethod("webhook_endpoint", "GET /v2/bot/channel/webhook/endpoint", Journal.READ_ONLY),
    ApiMethod("group_member_count", "GET /v2/bot/group/{groupId}/members/count", Journal.READ_ONLY),
    ApiMethod("room_member_count", "GET /v2/bot/room/{roomId}/members/count", Journal.READ_ONLY),
    ApiMethod("mark_as_read", "POST /v2/bot/chat/markAsRead", Journal.ONCE, checks=(string("markAsReadToken"),)),
    ApiMethod(GENERIC_CALL, None, Journal.BY_REQUEST),
    ApiMethod("user_get", None, Journal.NOT_JOURNALED, checks=(string("userId"),)),
    ApiMethod("user_set_data", None, Journal.NOT_JOURNALED, checks=(string("userId"), mapping("data"))),
)
"""The methods a handler can call, in SPEC.md's order."""

OTHER_ROWS: tuple[RateRow, ...] = (
    RateRow("richmenu_create", "POST", "/v2/bot/richmenu", (100, HOUR)),
    RateRow("richmenu_delete", "DELETE", "/v2/bot/richmenu/{richMenuId}", (100, HOUR)),
    RateRow("richmenu_alias_delete", "DELETE", "/v2/bot/richmenu/alias/{richMenuAliasId}", (100, HOUR)),
    RateRow("richmenu_batch", "POST", "/v2/bot/richmenu/batch", (3, HOUR)),
    RateRow("webhook_test", "POST", "/v2/bot/channel/webhook/test", (60, HOUR)),
)
"""LINE's rows for endpoints a handler reaches through `call` only."""

DEFAULT_LIMIT = (2000, SECOND)


class EndpointTable:
    """The methods and LINE's rate rows, indexed for the per-call look-ups.

    One instance (TABLE) serves frontdesk; tests build one with an extra method to show that a
    new method is one entry. Rows come from the methods with a limit of their own, then
    `other_rows`, then `default` (LIMITS keeps that order: it is the settings' default text)."""

    def __init__(self, methods: tuple[ApiMethod, ...] = METHODS, other_rows: tuple[RateRow, ...] = OTHER_ROWS,
                 default_limit: tuple[float, float] = DEFAULT_LIMIT):
        self.methods: dict[str, ApiMethod] = {m.name: m for m in methods}
        if len(self.methods) != len(methods):
            raise ValueError("two methods of the endpoint table have one name")
        rows = [RateRow(m.name, m.http_method, m.path, m.limit, m.journal is Journal.RETRY_KEY)
                for m in methods if m.limit is not None and m.request is not None]
        self.rows: dict[str, RateRow] = {row.name: row for row in (*rows, *other_rows)}
        self.limits: dict[str, tuple[float, float]] = {
            **{name: row.limit for name, row in self.rows.items()}, DEFAULT: default_limit}
        self.names = frozenset(self.methods)
        self.retry_key_rows = frozenset(row.name for row in self.rows.values() if row.retry_key)
        self._exact: dict[tuple[str, str], str] = {}                       # (method, path) -> row
        self._patterns: dict[tuple[str, int], list[tuple[tuple[str, ...], str]]] = {}
        for row in self.rows.values():
            segments = tuple(row.path.strip("/").split("/"))
            if "{" not in row.path:
                self._exact[row.http_method, row.path] = row.name   # the usual paths, at one look-up
            self._patterns.setdefault((row.http_method, len(segments)), []).append(
                (tuple("*" if s.startswith("{") else s for s in segments), row.name))
        for patterns in self._patterns.values():   # literal segments win over {fields}, as in falcon
            patterns.sort(key=lambda pattern: pattern[0].count("*"))

    def method(self, name: str) -> ApiMethod | None:
        return self.methods.get(name)

    def endpoint_name(self, http_method: str, path: str) -> str:
        """The rate row of a request (a key of `limits`); DEFAULT for the other endpoints."""
        name = self._exact.get((http_method, path))
        if name is not None:
            return name
        segments = path.strip("/").split("/")
        for pattern, name in self._patterns.get((http_method, len(segments)), ()):
            if all(p == "*" or p == s for p, s in zip(pattern, segments)):
                return name
        return DEFAULT

    def journaled(self, name: str, args: dict) -> bool:
        """Whether a call is journaled: calls with effects are; reads (profile, content, a GET) are
        simply made again, and the store's methods are not LINE's."""
        method = self.methods.get(name)
        if method is None:
            return False
        if method.journal is Journal.BY_REQUEST:
            return args.get("method") != "GET"
        return method.journal.journaled

    def takes_retry_key(self, http_method: str, endpoint: str) -> bool:
        """LINE accepts X-Line-Retry-Key on this request (400 elsewhere)."""
        return http_method == "POST" and endpoint in self.retry_key_rows

    def uses_reply_token(self, name: str) -> bool:
        """A request sent as this method carries a single-use reply token."""
        method = self.methods.get(name)
        return method is not None and method.journal is Journal.REPLY_TOKEN


TABLE = EndpointTable()
LIMITS: dict[str, tuple[float, float]] = TABLE.limits
"""LINE's published figure per row name: (count, period in seconds)."""
API_METHODS: frozenset[str] = TABLE.names
"""The methods a handler may call (the dispatcher refuses any other)."""
RETRY_KEY_ENDPOINTS: frozenset[str] = TABLE.retry_key_rows
"""The rows on which LINE accepts X-Line-Retry-Key: push, multicast, broadcast, narrowcast."""
endpoint_name = TABLE.endpoint_name


def limits_text(limits: dict[str, tuple[float, float]] = LIMITS) -> str:
    """LIMITS as a setting's value: `reply=2000/s,...,broadcast=60/h`."""
    units = {SECOND: "s", MINUTE: "m", HOUR: "h"}
    return ",".join(f"{name}={count:g}/{units[period]}" for name, (count, period) in limits.items())
