"""The LINE Messaging API: the request each call makes, and the connections to send it on
(ratelimiter/http.py: why a client of our own on the event loop, not http.client or requests).

What a method sends comes from the endpoint table (protocol/line_endpoints.py); only `call`, whose
args name the request, and the requests frontdesk makes of its own accord (a reply as a push, a
batch as one multicast) are built here by hand. The bearer token is sent in a header and never
logged or put in an error.
"""
from __future__ import annotations

import base64
import json
import re
import uuid
from dataclasses import dataclass, field
from functools import cached_property
from urllib.parse import urlencode

import orjson

from frontdesk.protocol.line_endpoints import GENERIC_CALL, TABLE, ArgsError, EndpointTable, Journal
from frontdesk.protocol.rpc import api_error

from .http import HttpConnection

USER_AGENT = "frontdesk/0.1"
RETRY_KEY_NAMESPACE = uuid.UUID("6f1e2d3c-7b5a-4c1e-9a8f-2b3c4d5e6f70")  # fixed: keys survive restarts
HTTP_METHODS = frozenset({"GET", "POST", "PUT", "DELETE"})
MAX_TRACED_CALLS = 10     # a batched multicast's trace header names its first ten members
MEDIA_TYPE = re.compile(r"[A-Za-z0-9][\w.+-]*/[A-Za-z0-9][\w.+-]*", re.ASCII)   # a Content-Type we send: type/subtype only
PUSH_PATH = TABLE.method("push").path
MULTICAST_PATH = TABLE.method("multicast").path


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

    @cached_property
    def endpoint(self) -> str:
        """The rate-limit bucket this request counts against."""
        return TABLE.endpoint_name(self.method, self.path)

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
def build_request(method: str, args: dict, key: str | None, table: EndpointTable = TABLE) -> HttpRequest:
    """The HTTP request for a handler's API call (its entry in the endpoint table); `key` is its
    retry key, sent where the table's journal rule says LINE takes one.

    Raises ArgsError naming the argument when the call cannot be made. Content rules LINE
    itself checks (text length, message types) are left to LINE, whose message the handler gets.
    """
    entry = table.method(method)
    if entry is None or entry.request is None:
        if method == GENERIC_CALL and entry is not None:
            return _generic_call(args, key, table)
        raise ArgsError(f"unknown API method {method!r}")
    for check in entry.checks:
        check(args, method)
    path, fields = entry.path_with(args), entry.path_fields
    body = None if entry.http_method == "GET" else (
        {k: v for k, v in args.items() if k not in fields} if fields else dict(args))
    return HttpRequest(entry.http_method, path, body, data_api=entry.data_api,
                       retry_key=key if entry.journal is Journal.RETRY_KEY else None)


def _generic_call(args: dict, key: str | None, table: EndpointTable) -> HttpRequest:
    """`call`: any other Messaging API endpoint, named by the args (SPEC.md section 8)."""
    verb = args.get("method")
    if verb not in HTTP_METHODS:
        raise ArgsError(f"call: `method` must be one of {', '.join(sorted(HTTP_METHODS))}")
    path = args.get("path")
    if not isinstance(path, str) or not path:
        raise ArgsError("call: `path` must be a non-empty string")
    if not path.startswith("/v2/") or ".." in path or "?" in path or "#" in path:
        raise ArgsError("call: `path` must start with /v2/ and hold no '..', '?' or '#' (use `query`)")
    query = args.get("query")
    if query is not None and not isinstance(query, dict):
        raise ArgsError("call: `query` must be a map")
    content_type = args.get("content_type")
    if isinstance(args.get("body"), bytes) and not (isinstance(content_type, str)
                                                   and MEDIA_TYPE.fullmatch(content_type)):
        raise ArgsError("call: a `body` of bytes needs `content_type`, a media type such as image/png")
    takes_key = table.takes_retry_key(verb, table.endpoint_name(verb, path))
    return HttpRequest(verb, path, args.get("body"), query, bool(args.get("data_api")),
                       retry_key=key if takes_key else None,
                       content_type=content_type if isinstance(args.get("body"), bytes) else None)


def reply_as_push(args: dict, source: dict | None, key: str | None) -> HttpRequest:
    """A reply's messages as a push to the event's source (its token is too old, or was refused
    unused). Raises ArgsError when the event has no source to push to."""
    target = push_target(source)
    if target is None:
        raise ArgsError("reply: the reply token is too old or used, and the event has no source to push to")
    body = {"to": target, "messages": args["messages"]}
    if "notificationDisabled" in args:
        body["notificationDisabled"] = args["notificationDisabled"]
    return HttpRequest("POST", PUSH_PATH, body, retry_key=key)


def batch_request(members: list[tuple[dict, tuple[str, int]]]) -> HttpRequest:
    """One multicast for batched pushes (args identical but for `to`; batcher.py), with a retry
    key derived from its members' (event id, call number)."""
    body = {k: v for k, v in members[0][0].items() if k != "to"}
    body["to"] = [args["to"] for args, _ in members]
    return HttpRequest("POST", MULTICAST_PATH, body, retry_key=batch_retry_key([key for _, key in members]))


def trace_header(calls) -> str | None:
    """X-Frontdesk-Trace (setting api_trace): the events a request serves, as JSON, for the
    sandbox's chat page: each event with the n-th call, the handler that had it, and when it was
    stored (received_at) and handed to that handler (handed_at), epoch ms."""
    entries = [{"event": call.event_id, "call": call.call_no, "handler": call.context.get("handler"),
                "received_at": call.context.get("received_at"), "handed_at": call.context.get("handed_at")}
               for call in calls[:MAX_TRACED_CALLS] if call.event_id is not None]
    if not entries:
        return None
    text = orjson.dumps(entries)   # a header is ASCII: anything else is escaped, as json.dumps does
    return text.decode() if text.isascii() else json.dumps(entries, separators=(",", ":"))


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
class _FixedCredential:
    """A token that never changes (tokens.TokenKeeper's interface, for a LineApi made on its own)."""

    def __init__(self, token: str):
        self.authorization = f"Bearer {token}"

    async def wait(self) -> str:
        return self.authorization

    def refused(self, authorization: str) -> None:
        pass


class LineApi:
    """The Messaging API as one sender sees it: a keep-alive connection to the API host and one to
    the data host (content), each opened on first use."""

    def __init__(self, settings, credential=None):
        # the token per request, from the keeper that renews it (tokens.py)
        self.credential = credential or _FixedCredential(settings.channel_access_token)
        headers = {"User-Agent": USER_AGENT}
        timeouts = (settings.api_connect_timeout_s, settings.api_read_timeout_s)
        self.api = HttpConnection(settings.api_base, headers, *timeouts)
        self.data = HttpConnection(settings.api_data_base, headers, *timeouts)

    async def send(self, request: HttpRequest, max_bytes: int | None = None,
                   trace: str | None = None) -> HttpResponse:
        """Send `request` (with `trace` as X-Frontdesk-Trace). A body over max_bytes gives status
        413 and body None (connection dropped). Raises ApiConnectionError."""
        authorization = self.credential.authorization or await self.credential.wait()
        headers = {"Authorization": authorization}
        body = None
        if isinstance(request.body, bytes):
            body = request.body
            headers["Content-Type"] = request.content_type
        elif request.body is not None:
            body = orjson.dumps(request.body, option=orjson.OPT_NON_STR_KEYS)
            headers["Content-Type"] = "application/json"
        if request.retry_key:
            headers["X-Line-Retry-Key"] = request.retry_key
        if trace:
            headers["X-Frontdesk-Trace"] = trace
        path = request.path + ("?" + urlencode(request.query) if request.query else "")
        connection = self.data if request.data_api else self.api
        status, response_headers, data = await connection.request(request.method, path, headers, body, max_bytes)
        if status == 401:
            self.credential.refused(authorization)
        content_type = response_headers.get("content-type", "")
        if data is None:
            return HttpResponse(413, None, content_type, response_headers)
        if content_type.startswith("application/json"):
            try:
                parsed = orjson.loads(data) if data else {}
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
