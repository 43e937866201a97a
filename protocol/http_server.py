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
"""
from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Callable

from frontdesk.protocol.http1 import ChunkError, read_chunks

MAX_HEAD_BYTES = 64 * 1024


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
    """A request that cannot be read: answered with `status`, then the connection is closed."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def error_body(status: int, description: str) -> bytes:
    """An error answer's JSON body: {"title": <the status phrase>, "description": ...}."""
    return json.dumps({"title": HTTPStatus(status).phrase, "description": description}).encode()


def encode_response(response: Response, keep_alive: bool) -> bytes:
    phrase = HTTPStatus(response.status).phrase
    head = [f"HTTP/1.1 {response.status} {phrase}\r\n",
            f"Content-Length: {len(response.body)}\r\n",
            "Server: frontdesk\r\n"]
    if response.content_type is not None:
        head.insert(1, f"Content-Type: {response.content_type}\r\n")
    head += [f"{name}: {value}\r\n" for name, value in response.headers.items()]
    if not keep_alive:
        head.append("Connection: close\r\n")
    head.append("\r\n")
    return "".join(head).encode("latin-1") + response.body


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


class _Connection(asyncio.Protocol):
    """One client connection: parse requests in order, one answered at a time."""

    def __init__(self, server: Server):
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.head: tuple[str, str, str, dict[str, str]] | None = None   # method, target, version, headers
        self.body = bytearray()
        self.chunked = False
        self.length = 0
        self.waiting: asyncio.Future | None = None    # the answer being computed
        self.keep_alive = True
        self.started: float | None = None              # first byte of the request being read
        self.timer: asyncio.TimerHandle | None = None
        self.closed = False
        self.idle_since = 0.0                          # when it last had no request in progress

    # --- connection life ---------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        server = self.server
        if server.stopping or (len(server.connections) >= server.limits.max_connections
                               and not server.make_room()):
            self._send(Response(503, error_body(503, "too many open connections; try again")), False)
            return
        server.connections.add(self)
        self.idle_since = time.monotonic()
        self._arm(server.limits.idle_timeout_s)

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
        if self.started is None and not self.buffer:
            return 0, self.idle_since
        return 1, self.started if self.started is not None else self.idle_since

    def evict(self) -> None:
        """Close to make room for a new connection; an unfinished request gets 408."""
        self.server.connections.discard(self)   # room now, before the transport says it is lost
        if self.started is None and not self.buffer:
            self.close()
            return
        self.server.log.info("status=408 reason='evicted at the connection limit with its request unfinished'")
        self._send(Response(408, error_body(408, "the request was not complete in time")), False)

    def _arm(self, seconds: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(seconds, self._timed_out)

    def _timed_out(self) -> None:
        self.timer = None
        if self.waiting is not None:
            return   # the answer is on its way
        if self.started is None and not self.buffer:
            self.close()   # idle keep-alive connection
            return
        self.server.log.info("status=408 reason='the request was not complete within %gs'",
                 self.server.limits.request_timeout_s)
        self._send(Response(408, error_body(408, "the request was not complete in time")), False)

    # --- reading -----------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.buffer += data
        if self.started is None:
            self.started = time.monotonic()
            self._arm(self.server.limits.request_timeout_s)
        if self.waiting is None:
            self._advance()

    def eof_received(self):
        if self.waiting is None:
            self.close()
            return False
        self.keep_alive = False
        return True   # keep the transport: the request being answered still gets its answer

    def _advance(self) -> None:
        """Read as many whole requests as the buffer holds, answering each before the next."""
        while not self.closed and self.waiting is None:
            try:
                request = self._parse()
            except _Reject as exc:
                self.server.log.info("status=%d reason=%r", exc.status, str(exc))
                self._send(Response(exc.status, error_body(exc.status, str(exc))), False)
                return
            if request is None:
                return
            self._dispatch(request)

    def _parse(self) -> Request | None:
        if self.head is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end > MAX_HEAD_BYTES or (end < 0 and len(self.buffer) > MAX_HEAD_BYTES):
                raise _Reject(431, "request headers larger than 64 KiB")
            if end < 0:
                return None
            self.head = self._parse_head(bytes(self.buffer[:end]))
            del self.buffer[:end + 4]
            if self.head[3].get("expect", "").lower() == "100-continue" and self.length:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if self.chunked:
            if not self._read_chunks():
                return None
        else:
            if len(self.buffer) < self.length:
                return None
            self.body += self.buffer[:self.length]
            del self.buffer[:self.length]
        method, target, version, headers = self.head
        path, _, query = target.partition("?")
        request = Request(method, path, headers, bytes(self.body), time.monotonic(), query, version)
        self.head, self.body, self.chunked, self.length = None, bytearray(), False, 0
        self.keep_alive = self._keeps_alive(version, headers)
        return request

    def _parse_head(self, raw: bytes) -> tuple[str, str, str, dict[str, str]]:
        """(method, target, version, headers), and the body's framing; raises _Reject."""
        lines = raw.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _Reject(400, f"not an HTTP/1.x request line: {lines[0][:80]!r}")
        method, target, version = parts
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise _Reject(400, f"malformed header line: {line[:80]!r}")
            headers[name.lower()] = value.strip()
        limit = self.server.limits.max_body_bytes
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self.chunked = True
        elif "content-length" in headers:
            value = headers["content-length"]
            if not value.isdigit():
                raise _Reject(400, f"bad Content-Length {value[:40]!r}")
            self.length = int(value)
            if self.length > limit:
                raise _Reject(413, f"body of {self.length} bytes exceeds the limit of {limit}")
        elif method in ("POST", "PUT"):
            raise _Reject(411, "a body needs Content-Length or chunked transfer encoding")
        return method, target, version, headers

    def _read_chunks(self) -> bool:
        """Move whole chunks from the buffer to the body; True once the last chunk is in."""
        limit = self.server.limits.max_body_bytes
        try:
            complete = read_chunks(self.buffer, self.body, limit)
        except ChunkError as exc:
            raise _Reject(400, str(exc)) from None
        if len(self.body) > limit:
            raise _Reject(413, f"body exceeds the limit of {limit} bytes")
        return complete

    @staticmethod
    def _keeps_alive(version: str, headers: dict[str, str]) -> bool:
        connection = headers.get("connection", "").lower()
        return "keep-alive" in connection if version == "HTTP/1.0" else "close" not in connection

    # --- answering -----------------------------------------------------------------------------
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
        if not self.closed and self.buffer:
            self._advance()

    def _answered(self, response: Response) -> None:
        if response.close_without_answer:
            self.close()   # what earlier answers wrote is still sent; pipelined requests are dropped
            return
        keep_alive = self.keep_alive and not self.server.stopping
        self._send(response, keep_alive)
        if keep_alive and not self.closed:
            self.started = time.monotonic() if self.buffer else None
            self.idle_since = time.monotonic()
            self._arm(self.server.limits.request_timeout_s if self.buffer
                      else self.server.limits.idle_timeout_s)

    def _send(self, response: Response, keep_alive: bool) -> None:
        if self.closed or self.transport.is_closing():
            return
        self.transport.write(encode_response(response, keep_alive))
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
