"""The LINE Messaging API: what each API method sends, and the connections to send it on
(ratelimiter/http.py: why a hand-rolled client on the event loop, not http.client or requests).

The bearer token is sent in a header and never logged or put in an error.
"""
from __future__ import annotations

import base64
import json
import re
import uuid
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode

from frontdesk.protocol.line_endpoints import MESSAGE_PATHS, endpoint_name
from frontdesk.protocol.rpc import api_error

from .http import HttpConnection

USER_AGENT = "frontdesk/0.1"
RETRY_KEY_NAMESPACE = uuid.UUID("6f1e2d3c-7b5a-4c1e-9a8f-2b3c4d5e6f70")  # fixed: keys survive restarts
RETRY_KEY_ENDPOINTS = frozenset({"push", "multicast", "broadcast", "narrowcast"})
MAX_MESSAGES = 5
MAX_MULTICAST_TO = 500
HTTP_METHODS = frozenset({"GET", "POST", "PUT", "DELETE"})
MAX_TRACED_CALLS = 10     # a batched multicast's trace header names its first ten members
MEDIA_TYPE = re.compile(r"[A-Za-z0-9][\w.+-]*/[A-Za-z0-9][\w.+-]*", re.ASCII)   # a Content-Type we send: type/subtype only


class ArgsError(ValueError):
    """A handler's call arguments are unusable; the message names the argument."""


@dataclass
class HttpRequest:
    """One Messaging API request, as journaled and as sent (a restart repeats it byte for byte)."""
    method: str
    path: str
    body: object = None
    query: dict | None = None
    data_api: bool = False
    retry_key: str | None = None
    content_type: str | None = None    # a body of bytes is sent as is, with this type (a rich menu image)

    @property
    def endpoint(self) -> str:
        """The rate-limit bucket this request counts against."""
        return endpoint_name(self.method, self.path)

    def to_journal(self) -> dict:
        raw = isinstance(self.body, bytes)   # the journal holds JSON: bytes go as base64
        return {"method": self.method, "path": self.path, "body": None if raw else self.body,
                "query": self.query, "data_api": self.data_api, "retry_key": self.retry_key,
                **({"body_base64": base64.b64encode(self.body).decode(), "content_type": self.content_type}
                   if raw else {})}

    @classmethod
    def from_journal(cls, data: dict) -> "HttpRequest":
        body = base64.b64decode(data["body_base64"]) if "body_base64" in data else data.get("body")
        return cls(data["method"], data["path"], body, data.get("query"),
                   bool(data.get("data_api")), data.get("retry_key"), data.get("content_type"))


@dataclass
class HttpResponse:
    status: int
    body: object                       # parsed JSON, or raw bytes for binary content
    content_type: str = ""
    headers: dict = field(default_factory=dict)  # lower-case names, only the ones we use


def retry_key(event_id: str, call_no: int) -> str:
    """X-Line-Retry-Key of the n-th call of an event: the same after any restart or redelivery."""
    return str(uuid.uuid5(RETRY_KEY_NAMESPACE, f"{event_id}/{call_no}"))


def batch_retry_key(members: list[tuple[str, int]]) -> str:
    """X-Line-Retry-Key of a multicast made of batched pushes: derived from its members."""
    names = ",".join(sorted(f"{event_id}/{call_no}" for event_id, call_no in members))
    return str(uuid.uuid5(RETRY_KEY_NAMESPACE, "multicast:" + names))


# --- from a handler's call to an HTTP request ------------------------------------------------------
def _string(args: dict, name: str, method: str) -> str:
    value = args.get(name)
    if not isinstance(value, str) or not value:
        raise ArgsError(f"{method}: `{name}` must be a non-empty string")
    return value


def _path_id(args: dict, name: str, method: str) -> str:
    value = _string(args, name, method)
    if "/" in value or len(value) > 200:
        raise ArgsError(f"{method}: `{name}` is not a valid id")
    return quote(value, safe="")


def _messages(args: dict, method: str) -> None:
    messages = args.get("messages")
    if not isinstance(messages, list) or not 1 <= len(messages) <= MAX_MESSAGES:
        raise ArgsError(f"{method}: `messages` must be a list of 1 to {MAX_MESSAGES} message objects")
    if not all(isinstance(m, dict) for m in messages):
        raise ArgsError(f"{method}: every entry of `messages` must be a message object")


def build_request(method: str, args: dict, key: str | None) -> HttpRequest:
    """The HTTP request for a handler's API call (SPEC.md API table); `key` is its retry key.

    Raises ArgsError naming the argument when the call cannot be made. Content rules LINE
    itself checks (text length, message types) are left to LINE, whose message the handler gets.
    """
    if method in MESSAGE_PATHS:
        if method != "narrowcast":
            _messages(args, method)
        if method == "reply":
            _string(args, "replyToken", method)
        elif method == "push":
            _string(args, "to", method)
        elif method == "multicast":
            to = args.get("to")
            if not isinstance(to, list) or not 1 <= len(to) <= MAX_MULTICAST_TO \
                    or not all(isinstance(u, str) and u for u in to):
                raise ArgsError(f"multicast: `to` must be a list of 1 to {MAX_MULTICAST_TO} user ids")
        return HttpRequest("POST", MESSAGE_PATHS[method], dict(args),
                           retry_key=key if method in RETRY_KEY_ENDPOINTS else None)
    if method == "profile":
        return HttpRequest("GET", "/v2/bot/profile/" + _path_id(args, "userId", method))
    if method == "content":
        return HttpRequest("GET", f"/v2/bot/message/{_path_id(args, 'messageId', method)}/content",
                           data_api=True)
    if method == "call":
        verb = args.get("method")
        if verb not in HTTP_METHODS:
            raise ArgsError(f"call: `method` must be one of {', '.join(sorted(HTTP_METHODS))}")
        path = _string(args, "path", method)
        if not path.startswith("/v2/") or ".." in path or "?" in path or "#" in path:
            raise ArgsError("call: `path` must start with /v2/ and hold no '..', '?' or '#' (use `query`)")
        query = args.get("query")
        if query is not None and not isinstance(query, dict):
            raise ArgsError("call: `query` must be a map")
        content_type = args.get("content_type")
        if isinstance(args.get("body"), bytes) and not (isinstance(content_type, str)
                                                       and MEDIA_TYPE.fullmatch(content_type)):
            raise ArgsError("call: a `body` of bytes needs `content_type`, a media type such as image/png")
        endpoint = HttpRequest(verb, path).endpoint
        return HttpRequest(verb, path, args.get("body"), query, bool(args.get("data_api")),
                           retry_key=key if endpoint in RETRY_KEY_ENDPOINTS and verb == "POST" else None,
                           content_type=content_type if isinstance(args.get("body"), bytes) else None)
    raise ArgsError(f"unknown API method {method!r}")


def trace_header(calls) -> str | None:
    """X-Frontdesk-Trace (setting api_trace): the events a request serves, as JSON, for the
    sandbox's chat page: each event with the n-th call, the handler that had it, and when it was
    stored (received_at) and handed to that handler (handed_at), epoch ms."""
    entries = [{"event": call.event_id, "call": call.call_no, "handler": call.context.get("handler"),
                "received_at": call.context.get("received_at"), "handed_at": call.context.get("handed_at")}
               for call in calls[:MAX_TRACED_CALLS] if call.event_id is not None]
    return json.dumps(entries, separators=(",", ":")) if entries else None


def push_target(source: dict | None) -> str | None:
    """Where a reply goes when it has to be a push: the group, else the room, else the user."""
    for name in ("groupId", "roomId", "userId"):
        value = (source or {}).get(name)
        if isinstance(value, str) and value:
            return value
    return None


def response_error(response: HttpResponse, retryable: bool) -> dict:
    """The SPEC error map from LINE's error body: LINE's own message, status and details."""
    body = response.body if isinstance(response.body, dict) else {}
    message = body.get("message") if isinstance(body.get("message"), str) else None
    details = body.get("details")
    return api_error(message or f"LINE API answered HTTP {response.status}", response.status, retryable,
                     details if isinstance(details, list) else None)


# --- the connections -------------------------------------------------------------------------------
class LineApi:
    """The Messaging API as one sender sees it: a keep-alive connection to the API host and one to
    the data host (content), each opened on first use."""

    def __init__(self, settings):
        headers = {"Authorization": f"Bearer {settings.channel_access_token}", "User-Agent": USER_AGENT}
        timeouts = (settings.api_connect_timeout_s, settings.api_read_timeout_s)
        self.api = HttpConnection(settings.api_base, headers, *timeouts)
        self.data = HttpConnection(settings.api_data_base, headers, *timeouts)

    async def send(self, request: HttpRequest, max_bytes: int | None = None,
                   trace: str | None = None) -> HttpResponse:
        """Send `request` (with `trace` as X-Frontdesk-Trace). A body over max_bytes gives status
        413 and body None (connection dropped). Raises ApiConnectionError."""
        headers = {}
        body = None
        if isinstance(request.body, bytes):
            body = request.body
            headers["Content-Type"] = request.content_type
        elif request.body is not None:
            body = json.dumps(request.body, separators=(",", ":"), ensure_ascii=False).encode()
            headers["Content-Type"] = "application/json"
        if request.retry_key:
            headers["X-Line-Retry-Key"] = request.retry_key
        if trace:
            headers["X-Frontdesk-Trace"] = trace
        path = request.path + ("?" + urlencode(request.query) if request.query else "")
        connection = self.data if request.data_api else self.api
        status, response_headers, data = await connection.request(request.method, path, headers, body, max_bytes)
        content_type = response_headers.get("content-type", "")
        if data is None:
            return HttpResponse(413, None, content_type, response_headers)
        if content_type.startswith("application/json"):
            try:
                parsed = json.loads(data) if data else {}
            except ValueError:
                parsed = {"message": f"LINE API answered HTTP {status} with a body that is not JSON"}
            return HttpResponse(status, parsed, content_type, response_headers)
        if 200 <= status < 300 and request.data_api:
            return HttpResponse(status, data, content_type, response_headers)
        return HttpResponse(status, {} if not data else {"message": data[:200].decode("utf-8", "replace")},
                            content_type, response_headers)

    def close(self) -> None:
        self.api.close()
        self.data.close()
