"""frontdesk's HTTP/1.1 server: one asyncio event loop, no worker threads. The receiver serves
its webhook routes on it, the sandbox its falcon app (through protocol/wsgi.py).

Why not waitress any more: per webhook, waitress's I/O thread handed the request to a worker
thread, the worker to the group commit's writer thread and back, the worker back to the I/O
thread — four thread hand-offs under one GIL for a request whose own work (HMAC, JSON, a row) is
tens of microseconds. Here the loop parses the request, the handler answers at once or returns a
future (the receiver's: done when the store's writer says the events are durable), and the loop
writes the answer.

What a webhook server must still do, done here: keep-alive with pipelined requests answered in
order, Content-Length and chunked bodies, `Expect: 100-continue`, a header size limit (431), a
body limit checked before the body is read (413), a deadline for a whole request once its first
byte arrived (408: a slow client cannot hold a connection), an idle keep-alive timeout, a limit
on open connections (at the limit a newcomer takes the place of the idlest or slowest connection,
so slow clients cannot shut LINE out; 503 only while every one is being answered), and a graceful
stop that answers what was read. And one thing a stand-in for LINE needs: a response can say
"close the connection without answering" (the sandbox's injected drops).

Requests are parsed by httptools (llhttp, the parser of Node.js and uvicorn) at its default
strictness, never by hand: a hand-written parser here once stored 14 of 16 webhooks with
ambiguous or malformed framing (two Content-Lengths, Transfer-Encoding beside Content-Length,
chunk sizes such as `0x1f` or `-1`, a bare LF inside a header) and answered two requests on one
connection where a proxy in front would have seen one: request smuggling. llhttp refuses those;
this module adds what RFC 9112 leaves to the server (`_check_framing`). Whatever cannot be read
gets one 4xx (400, 411, 413, 431, 501 or 505), after the answers of the requests read before it,
and the connection is closed: nothing of it reaches the handler.
"""
from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Callable

import httptools

from .reads import read_small

MAX_HEAD_BYTES = 64 * 1024      # request line and headers (431 above it); trailers count too
PIPELINE_DEPTH = 4              # requests read ahead of the one being answered before reading pauses
# Headers that frontdesk's routes read as one value. A second copy is refused (400) rather than
# read one way here and another way by a proxy in front: a forged X-Line-Signature before a valid
# one must not pass. (Two Content-Lengths llhttp refuses itself.)
SINGLE_VALUED = frozenset({"host", "content-type", "authorization", "x-line-signature", "x-line-retry-key"})
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@dataclass
class Request:
    method: str
    path: str                         # the target up to "?", as sent (not percent-decoded)
    headers: dict[str, str]           # lower-case names
    body: bytes
    arrived: float                    # time.monotonic() when the whole request had been read
    query: str = ""                   # the target after "?"
    version: str = "HTTP/1.1"


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = "application/json"    # None: no Content-Type header
    headers: dict[str, str] = field(default_factory=dict)
    close_without_answer: bool = False    # write nothing, close the connection (a simulated failure)


Handler = Callable[[Request], "Response | asyncio.Future"]


@dataclass(frozen=True)
class Limits:
    """The knobs a connection enforces."""
    max_body_bytes: int
    request_timeout_s: float
    idle_timeout_s: float
    max_connections: int


class _Reject(Exception):
    """A request that cannot be read: answered with `status` (after the answers of the requests
    read before it), then the connection is closed."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def error_body(status: int, description: str) -> bytes:
    """An error answer's JSON body: {"title": <the status phrase>, "description": ...}."""
    return json.dumps({"title": HTTPStatus(status).phrase, "description": description}).encode()


def encode_response(response: Response, keep_alive: bool, head: bool = False) -> bytes:
    """The answer's bytes; to a HEAD request, the head alone (its Content-Length still says how
    long the body would be, RFC 9110 9.3.2)."""
    phrase = HTTPStatus(response.status).phrase
    lines = [f"HTTP/1.1 {response.status} {phrase}\r\n",
             f"Content-Length: {len(response.body)}\r\n",
             "Server: frontdesk\r\n"]
    if response.content_type is not None:
        lines.insert(1, f"Content-Type: {response.content_type}\r\n")
    lines += [f"{name}: {value}\r\n" for name, value in response.headers.items()]
    if not keep_alive:
        lines.append("Connection: close\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1") + (b"" if head else response.body)


class Server:
    """Accepted connections, shared limits, and the count of requests being answered."""

    def __init__(self, handler: Handler, limits: Limits,
                 log: logging.Logger = logging.getLogger("frontdesk.http")):
        self.handler = handler
        self.limits = limits
        self.log = log       # the serving process's logger: rejections are logged under its name
        self.connections: set[_Connection] = set()
        self.stopping = False
        self._drained: asyncio.Future | None = None

    def protocol(self) -> "_Connection":
        return _Connection(self)

    def make_room(self) -> bool:
        """At the connection limit: close the connection that is worth least, so that a new one
        (perhaps LINE with a webhook) is served rather than refused. Worth least: an idle one
        (the longest idle first), else the one whose unfinished request started longest ago (a
        slow or drip-feeding client: a real client sends its request in milliseconds). One
        waiting for its answer is never closed; when all are, False (the newcomer gets 503).
        A scan of the open connections (~0.1 ms for 1,000), only when the limit is reached."""
        victim = min((c for c in self.connections if c.waiting is None), key=_Connection.eviction_rank,
                     default=None)
        if victim is None:
            return False
        victim.evict()
        return True

    @property
    def busy(self) -> int:
        """Requests read and not yet answered."""
        return sum(1 for c in self.connections if c.waiting is not None)

    def stop(self) -> asyncio.Future:
        """Close idle connections; busy ones close after their answer. The future is done when
        the last connection is gone."""
        self.stopping = True
        self._drained = asyncio.get_running_loop().create_future()
        for connection in list(self.connections):
            if connection.waiting is None:
                connection.close()
        self._forget(None)
        return self._drained

    def _forget(self, connection: "_Connection | None") -> None:
        self.connections.discard(connection)
        if self.stopping and not self.connections and not self._drained.done():
            self._drained.set_result(None)


def _headers(fields: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """Header lines as one dict, names in lower case; a name on several lines gets their values
    joined in order (RFC 9110 5.3), except the SINGLE_VALUED ones, refused."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in fields:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        if name not in headers:
            headers[name] = value
        elif name in SINGLE_VALUED:
            raise _Reject(400, f"more than one {raw_name.decode('latin-1')} header")
        else:
            headers[name] += ", " + value
    return headers


class _Incoming:
    """The request being read: what llhttp has handed over so far."""
    __slots__ = ("url", "fields", "headers", "body", "method", "version", "head_bytes", "silent_bytes",
                 "continue_owed")

    def __init__(self):
        self.url = b""
        self.fields: list[tuple[bytes, bytes]] = []   # header lines as llhttp hands them over, trailers too
        self.headers: dict[str, str] | None = None     # set once the head is complete
        self.body = bytearray()
        self.method = self.version = ""
        self.head_bytes = 0        # request line and header lines handed over (trailers included)
        self.silent_bytes = 0      # bytes of reads in a row that completed nothing (see _count_silent)
        self.continue_owed = False

    @property
    def progress(self) -> tuple[int, int, int]:
        """Changes with every piece llhttp hands over."""
        return len(self.url), len(self.fields), len(self.body)


class _Connection(asyncio.Protocol):
    """One client connection. llhttp (httptools) parses whatever arrives into whole requests; they
    are answered one at a time, in order. While more than PIPELINE_DEPTH wait behind the one being
    answered, reading pauses (as uvicorn's httptools protocol does), so a client that pipelines
    without reading its answers holds at most that many requests and one read's bytes."""

    def __init__(self, server: Server):
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.incoming: _Incoming | None = None                # the request being read
        self.queue: deque[tuple[Request, bool]] = deque()    # read, not answered: (request, keep-alive)
        self.current: tuple[Request, bool] | None = None     # the request whose answer is awaited
        self.waiting: asyncio.Future | None = None            # its answer being computed
        self.refusal: _Reject | None = None    # unreadable bytes: answered after what was read before them
        self.done_reading = False              # after a refusal or an upgrade: nothing more is read
        self.eof = False                       # the client will send nothing more
        self.started: float | None = None     # first byte of the request being read; None: idle
        self.deadline = 0.0                    # when the request being read, or the idleness, times out
        self.timer: asyncio.TimerHandle | None = None
        self.closed = False
        self.idle_since = 0.0                  # when it last had no request in progress

    # --- connection life ---------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        read_small(transport)
        server = self.server
        if server.stopping or (len(server.connections) >= server.limits.max_connections
                               and not server.make_room()):
            self._send(Response(503, error_body(503, "too many open connections; try again")), False)
            return
        server.connections.add(self)
        self.idle_since = time.monotonic()
        self.deadline = self.idle_since + server.limits.idle_timeout_s
        self._check_in(min(server.limits.request_timeout_s, server.limits.idle_timeout_s))

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.server._forget(self)
        if self.timer is not None:
            self.timer.cancel()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.close()

    def eviction_rank(self) -> tuple[int, float]:
        """Lower goes first when room is needed (Server.make_room)."""
        if self.started is None:
            return 0, self.idle_since
        return 1, self.started

    def evict(self) -> None:
        """Close to make room for a new connection; an unfinished request gets 408."""
        self.server.connections.discard(self)   # room now, before the transport says it is lost
        if self.started is None:
            self.close()
            return
        self.server.log.info("status=408 reason='evicted at the connection limit with its request unfinished'")
        self._send(Response(408, error_body(408, "the request was not complete in time")), False)

    # One timer per connection looks at `deadline`, which each request only moves: arming and
    # cancelling two timers per request cost more than parsing it (asyncio's timer heap). The timer
    # looks again at least every `min(request_timeout_s, idle_timeout_s)`, the nearest any new
    # deadline can be, so none is passed unseen.
    def _check_in(self, seconds: float) -> None:
        self.timer = asyncio.get_running_loop().call_later(seconds, self._check_deadline)

    def _check_deadline(self) -> None:
        self.timer = None
        if self.closed:
            return
        limits = self.server.limits
        shortest = min(limits.request_timeout_s, limits.idle_timeout_s)
        left = self.deadline - time.monotonic()
        if self.waiting is not None or left > 0:   # an answer on its way is never timed out
            self._check_in(shortest if self.waiting is not None else min(left, shortest))
            return
        if self.started is None:
            self.close()   # idle keep-alive connection
            return
        self.server.log.info("status=408 reason='the request was not complete within %gs'",
                             self.server.limits.request_timeout_s)
        self._send(Response(408, error_body(408, "the request was not complete in time")), False)

    # --- reading -----------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.closed or self.done_reading:
            return
        if self.started is None:
            self.started = time.monotonic()
            self.deadline = self.started + self.server.limits.request_timeout_s
        incoming = self.incoming
        progress = incoming.progress if incoming is not None else None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._upgrade_ignored()
        except httptools.HttpParserCallbackError as exc:   # raised by one of the callbacks below
            cause = exc.__context__
            if not isinstance(cause, _Reject):   # a bug must cost one connection, not the process
                self.server.log.error("event=request_failed", exc_info=cause)
                cause = _Reject(500, "internal error")
            self._refuse(cause)
        except httptools.HttpParserError as exc:
            reason = str(exc)
            status = 505 if reason == "Invalid HTTP version" else 400
            self._refuse(_Reject(status, f"malformed request: {reason}"))
        else:
            self._count_silent(incoming, progress, len(data))
        if self.waiting is None:
            self._advance()

    def _count_silent(self, before: _Incoming | None, progress: tuple | None, size: int) -> None:
        """Bound what httptools buffers unseen: it hands a header line over only once the line is
        whole, so reads that complete nothing (one endless line) are counted here."""
        incoming = self.incoming
        if incoming is None:
            return
        if incoming is not before or incoming.progress != progress:
            incoming.silent_bytes = 0
            return
        incoming.silent_bytes += size
        if incoming.silent_bytes > MAX_HEAD_BYTES:
            self._refuse(_Reject(431, "a header line longer than 64 KiB"))

    def eof_received(self):
        if self.waiting is None:
            self.close()
            return False
        self.eof = True
        return True   # keep the transport: what was read still gets its answers

    def _refuse(self, refusal: _Reject) -> None:
        """Read nothing more; answer `refusal` after the requests read before it, then close."""
        self.refusal = refusal
        self._stop_reading()

    def _upgrade_ignored(self) -> None:
        """llhttp stopped after a request asking to switch protocols (Upgrade, CONNECT): frontdesk
        speaks only HTTP/1.1 (RFC 9110 allows ignoring Upgrade), so the request is answered as
        plain HTTP and the connection closed after it, since what follows is not HTTP/1.1."""
        request, _ = self.queue[-1]
        self.queue[-1] = (request, False)
        self._stop_reading()

    def _stop_reading(self) -> None:
        self.done_reading = True
        if not self.closed:
            self.transport.pause_reading()

    # --- llhttp's callbacks, run inside feed_data; a _Reject raised here refuses the request ------
    def on_message_begin(self) -> None:
        self.incoming = _Incoming()

    def on_url(self, url: bytes) -> None:
        incoming = self.incoming
        incoming.url += url
        incoming.head_bytes += len(url)
        if incoming.head_bytes > MAX_HEAD_BYTES:
            raise _Reject(431, "request headers larger than 64 KiB")

    def on_header(self, name: bytes, value: bytes) -> None:
        incoming = self.incoming
        incoming.fields.append((name, value))
        incoming.head_bytes += len(name) + len(value) + 4
        if incoming.head_bytes > MAX_HEAD_BYTES:
            raise _Reject(431, "request headers larger than 64 KiB")

    def on_headers_complete(self) -> None:
        incoming = self.incoming
        incoming.headers = _headers(incoming.fields)   # trailers, which come later, are left out
        incoming.version = self.parser.get_http_version()
        incoming.method = self.parser.get_method().decode("ascii")
        announced = self._check_framing(incoming)
        if self.parser.should_upgrade() and (announced or incoming.method == "CONNECT"):
            # llhttp would hand what follows the head to the new protocol, body included
            raise _Reject(400, "protocol upgrades and CONNECT are not supported")
        if announced and incoming.headers.get("expect", "").lower() == "100-continue":
            if self.waiting is None and not self.queue:
                self.transport.write(CONTINUE)
            else:   # the answers before it come first
                incoming.continue_owed = True

    def _check_framing(self, incoming: _Incoming) -> bool:
        """What RFC 9112 leaves to the server once llhttp has read a head; True when a body is
        announced. llhttp has already refused two Content-Lengths, Content-Length beside
        Transfer-Encoding, and a Transfer-Encoding whose last coding is not chunked."""
        version, headers = incoming.version, incoming.headers
        if version not in ("1.0", "1.1"):
            raise _Reject(505, f"HTTP/{version} is not supported; send HTTP/1.1")
        if version == "1.1" and "host" not in headers:
            raise _Reject(400, "an HTTP/1.1 request needs a Host header")
        coding = headers.get("transfer-encoding")
        if coding is not None:
            if version == "1.0":
                raise _Reject(400, "Transfer-Encoding in an HTTP/1.0 request")
            codings = [c.strip().lower() for c in coding.split(",")]
            if codings[-1] != "chunked":
                raise _Reject(400, "chunked must be the final transfer coding")
            if len(codings) > 1:
                raise _Reject(501, f"transfer coding {', '.join(codings[:-1])!r} is not implemented")
            return True
        limit = self.server.limits.max_body_bytes
        if "content-length" in headers:
            length = int(headers["content-length"])   # llhttp let only digits through
            if length > limit:
                raise _Reject(413, f"body of {length} bytes exceeds the limit of {limit}")
            return length > 0
        if incoming.method in ("POST", "PUT"):
            raise _Reject(411, "a body needs Content-Length or chunked transfer encoding")
        return False

    def on_body(self, body: bytes) -> None:
        incoming = self.incoming
        limit = self.server.limits.max_body_bytes
        if len(incoming.body) + len(body) > limit:
            raise _Reject(413, f"body exceeds the limit of {limit} bytes")
        incoming.body += body

    def on_message_complete(self) -> None:
        incoming, self.incoming = self.incoming, None
        path, _, query = incoming.url.decode("latin-1").partition("?")
        request = Request(incoming.method, path, incoming.headers, bytes(incoming.body), time.monotonic(),
                          query, "HTTP/" + incoming.version)
        self.queue.append((request, self.parser.should_keep_alive()))
        if len(self.queue) > PIPELINE_DEPTH:
            self.transport.pause_reading()

    # --- answering -----------------------------------------------------------------------------
    def _advance(self) -> None:
        """Answer what was read, in order, one at a time; then the refusal, if any."""
        while self.waiting is None and not self.closed:
            if self.queue:
                self.current = self.queue.popleft()
                if len(self.queue) == PIPELINE_DEPTH and not self.done_reading:
                    self.transport.resume_reading()
                self._dispatch(self.current[0])
            elif self.refusal is not None:
                refusal = self.refusal
                self.server.log.info("status=%d reason=%r", refusal.status, str(refusal))
                self._send(Response(refusal.status, error_body(refusal.status, str(refusal))), False)
            else:
                return

    def _dispatch(self, request: Request) -> None:
        answer = self.server.handler(request)
        if isinstance(answer, Response):
            self._answered(answer)
            return
        self.waiting = answer
        answer.add_done_callback(self._on_answer)

    def _on_answer(self, future: asyncio.Future) -> None:
        self.waiting = None
        try:
            response = future.result()
        except Exception:   # a bug must cost one request, not the process
            self.server.log.exception("event=request_failed")
            response = Response(500, error_body(500, "internal error"))
        self._answered(response)
        self._advance()

    def _answered(self, response: Response) -> None:
        request, keep_alive = self.current
        self.current = None
        if response.close_without_answer:
            self.close()   # what earlier answers wrote is still sent; pipelined requests are dropped
            return
        keep_alive = keep_alive and not self.server.stopping and not (self.eof and not self.queue)
        self._send(response, keep_alive, head=request.method == "HEAD")
        if keep_alive and not self.closed:
            now = time.monotonic()
            busy = bool(self.queue) or self.incoming is not None
            self.started = now if busy else None
            self.idle_since = now
            limits = self.server.limits
            self.deadline = now + (limits.request_timeout_s if busy else limits.idle_timeout_s)
            if self.incoming is not None and self.incoming.continue_owed and not self.queue:
                self.incoming.continue_owed = False
                self.transport.write(CONTINUE)

    def _send(self, response: Response, keep_alive: bool, head: bool = False) -> None:
        if self.closed or self.transport.is_closing():
            return
        self.transport.write(encode_response(response, keep_alive, head))
        if not keep_alive:
            self.closed = True
            self.transport.close()   # after what was written is sent


async def serve(server: Server, address: str, backlog: int, stop_timeout_s: float,
                stopped: asyncio.Future | None = None, on_listening: Callable[[], None] | None = None,
                on_stop: Callable[[], None] | None = None):
    """Serve on `address` (HOST:PORT) until SIGTERM or SIGINT, or until `stopped` gets a result
    (the owner's own reason to stop); `on_listening` is called once connections are accepted.
    Then stop accepting, call `on_stop` (e.g. to end long polls), and wait up to
    `stop_timeout_s` for the answers of the requests already read. A second signal ends the
    process at once. Returns `stopped`'s result (None after a signal); raises OSError when it
    cannot listen."""
    loop = asyncio.get_running_loop()
    stopped = stopped if stopped is not None else loop.create_future()
    host, _, port = address.rpartition(":")
    listener = await loop.create_server(server.protocol, host or None, int(port), backlog=backlog,
                                        reuse_address=True)

    def stop(signum: int) -> None:
        server.log.info("event=stopping signal=%s", signal.Signals(signum).name)
        for sig in (signal.SIGTERM, signal.SIGINT):   # a second signal: at once
            loop.remove_signal_handler(sig)
        if not stopped.done():
            stopped.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop, sig)
    server.log.info("event=listening address=%s", address)
    if on_listening is not None:
        on_listening()
    result = await stopped
    listener.close()
    if on_stop is not None:
        on_stop()
    try:
        await asyncio.wait_for(server.stop(), stop_timeout_s)
    except asyncio.TimeoutError:
        server.log.warning("event=stop_timeout open_connections=%d", len(server.connections))
    return result
