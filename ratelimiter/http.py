"""One keep-alive HTTP/1.1 connection, driven by the rate limiter's event loop.

Why not http.client (or requests) any more: the rate limiter used to run 16 sender threads, each
blocking on an http.client connection, and profiling showed a fifth of its CPU in thread
hand-offs (Condition.notify and the GIL) and much of the rest in http.client's header parsing
(the email package). One asyncio loop drives every connection here, TLS included (asyncio's
non-blocking TLS).

Responses are parsed by httptools (llhttp) at its default strictness, never by hand: a
hand-written reader here once returned a `100 Continue` as the final answer (the 200 behind it
discarded, the call counted as failed and sent again), a chunked body larger than the limit as a
successful, truncated body, and two Content-Lengths last-wins. Now 1xx answers are skipped, 204
and 304 have no body, malformed framing is an error, and a body over the limit is never a
success. llhttp cannot know the request's method, so the answer to HEAD is taken as complete
with its headers here (RFC 9110 9.3.2). h11 knows the method, but cost 156 µs of CPU per call
against llhttp's 63 (docs/benchmarks.md), at up to 2,000 calls/s.

Not accepted: a body that ends only with the connection (no Content-Length, not chunked) — a
cut connection would look the same, so it would be a success that may be truncated; LINE frames
every body. Nor transfer codings other than chunked, which nothing asked for.

What the call journal needs from a connection is kept: `ApiConnectionError.sent` is False when
the request certainly never left whole (no connection, or its bytes were still buffered when the
connection failed) and True when it went out and no complete answer came (LINE may have acted).
One request at a time per connection; no pipelining; HTTP proxies are not supported.
"""
from __future__ import annotations

import asyncio
import functools
import socket
import ssl
import time
from urllib.parse import urlsplit

import httptools

from frontdesk.protocol.reads import read_small

MAX_HEAD_BYTES = 64 * 1024      # what may arrive before the answer's headers are complete


class ApiConnectionError(Exception):
    """No complete HTTP answer. `sent` is False when the request certainly never reached the server."""

    def __init__(self, message: str, sent: bool):
        super().__init__(message)
        self.sent = sent


class _Malformed(Exception):
    """The server's bytes are not an HTTP/1.1 answer we can take."""


class _Response:
    """The one answer awaited on a connection, filled in by llhttp's callbacks."""
    __slots__ = ("future", "head_request", "max_bytes", "status", "headers", "body", "head_bytes", "heard")

    def __init__(self, future: asyncio.Future, head_request: bool, max_bytes: int | None):
        self.future, self.head_request, self.max_bytes = future, head_request, max_bytes
        self.status = 0                    # set once the final (non-1xx) answer's headers are in
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.head_bytes = 0                # the head's bytes so far: its headers, and reads that ended inside it
        self.heard = False                 # an answer began: the request reached the server


class _Protocol(asyncio.Protocol):
    """Bytes in and out of one socket; llhttp parses the answer that is awaited, nothing else."""

    def __init__(self):
        self.transport: asyncio.Transport | None = None
        self.parser: httptools.HttpResponseParser | None = None   # a fresh one per request
        self.pending: _Response | None = None
        self.deadline = 0.0              # when the awaited answer times out
        self.timer: asyncio.TimerHandle | None = None
        self.closed = False
        self.broken: str | None = None   # why the connection cannot be used again

    def connection_made(self, transport) -> None:
        self.transport = transport
        read_small(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, data: bytes, response: _Response, timeout: float) -> None:
        """Write one request; its answer goes to `response`, or asyncio.TimeoutError to its future
        once `timeout` has passed. One timer per connection watches the deadline each request
        moves (later), re-armed only when it fires: cheaper than a timer per request."""
        self.pending = response
        self.parser = httptools.HttpResponseParser(self)
        self.deadline = time.monotonic() + timeout
        if self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(timeout, self._check_deadline)
        self.transport.write(data)

    def _check_deadline(self) -> None:
        self.timer = None
        response = self.pending
        if response is None:
            return   # answered; the next request arms it again
        left = self.deadline - time.monotonic()
        if left > 0:
            self.timer = asyncio.get_running_loop().call_later(left, self._check_deadline)
        elif not response.future.done():
            response.future.set_exception(asyncio.TimeoutError())

    def data_received(self, data: bytes) -> None:
        response = self.pending
        if response is None:
            self.broken = "the server sent bytes while no request was outstanding"
            return
        response.heard = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail("malformed response: the server switched protocols unasked")
        except httptools.HttpParserCallbackError as exc:   # one of ours, raised in a callback
            self._fail(f"malformed response: {exc.__context__ or exc}")
        except httptools.HttpParserError as exc:
            self._fail(f"malformed response: {exc}")
        else:
            if self.pending is response and not response.status:
                response.head_bytes += len(data)
                if response.head_bytes > MAX_HEAD_BYTES:
                    self._fail("malformed response: more than 64 KiB before its headers ended")

    def eof_received(self):
        self.closed = True
        return False   # close the transport; connection_lost fails an answer still awaited

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
        if self.pending is not None:
            self._fail(f"connection lost: {exc}" if exc else "connection closed before the answer was complete")

    def _fail(self, reason: str) -> None:
        pending, self.pending = self.pending, None
        self.broken = reason
        if pending is not None and not pending.future.done():
            pending.future.set_exception(ConnectionError(reason))
        if self.transport is not None:
            self.transport.close()

    # --- llhttp's callbacks, run inside feed_data ---------------------------------------------
    # Once the answer is done (self.pending None), anything more llhttp finds is a fault of the
    # server's: the connection is not used again.
    def on_header(self, name: bytes, value: bytes) -> None:
        response = self.pending
        if response is None:
            self.broken = "bytes after the response"
        elif not response.status:   # not a trailer, which is not passed on
            response.head_bytes += len(name) + len(value) + 4
            if response.head_bytes > MAX_HEAD_BYTES:   # a head that came in one read: counted here
                raise _Malformed("more than 64 KiB before its headers ended")
            headers = response.headers
            key, text = name.decode("latin-1").lower(), value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text

    def on_headers_complete(self) -> None:
        response = self.pending
        if response is None:
            self.broken = "bytes after the response"
            return
        status = self.parser.get_status_code()
        if status < 200:      # 100 Continue, 103 Early Hints: the answer follows
            response.headers = {}
            return
        response.status = status
        coding = response.headers.get("transfer-encoding")
        if coding is not None and coding.strip().lower() != "chunked":
            raise _Malformed(f"transfer coding {coding!r} was not asked for")
        length = response.headers.get("content-length")   # llhttp let only digits through
        if response.max_bytes is not None and length is not None and int(length) > response.max_bytes:
            self._done(keep_alive=False, too_large=True)    # known from the header: not read at all
        elif response.head_request:
            self._done(keep_alive=self.parser.should_keep_alive(), too_large=False)
        elif coding is None and length is None and status not in (204, 304):
            raise _Malformed("the body would end only with the connection (no Content-Length, not chunked)")

    def on_body(self, body: bytes) -> None:
        response = self.pending
        if response is None:
            self.broken = "bytes after the response"
            return
        response.body += body
        if response.max_bytes is not None and len(response.body) > response.max_bytes:
            self._done(keep_alive=False, too_large=True)

    def on_message_complete(self) -> None:
        response = self.pending
        if response is not None and response.status:   # else a 1xx, or a HEAD answer already taken
            self._done(keep_alive=self.parser.should_keep_alive(), too_large=False)

    def _done(self, keep_alive: bool, too_large: bool) -> None:
        response, self.pending = self.pending, None
        if not keep_alive:
            self.broken = "a body over the limit was not read" if too_large else "the server closes the connection"
            self.transport.close()
        if not response.future.done():
            response.future.set_result((response.status, response.headers,
                                        None if too_large else bytes(response.body)))


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One for every https connection of the process: building one loads the system's CA
    certificates, ~25 ms of CPU and ~1.7 MB each, and a rate limiter's 64 senders opened 128
    connections at start (3 s of its event loop, 200 MB)."""
    return ssl.create_default_context()


class HttpConnection:
    """A keep-alive connection to one base URL (http or https), reopened after any failure."""

    def __init__(self, base_url: str, headers: dict[str, str], connect_timeout: float, read_timeout: float):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"API base URL {base_url!r} must be http(s)://host[:port]")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self._ssl = tls_context() if parts.scheme == "https" else None
        default_port = 443 if parts.scheme == "https" else 80
        host_header = self.host if self.port == default_port else f"{self.host}:{self.port}"
        self._fixed_headers = "".join(f"{name}: {value}\r\n"
                                      for name, value in {"Host": host_header, **headers}.items())
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self._protocol: _Protocol | None = None

    def __repr__(self) -> str:  # never shows the headers (the bearer token)
        return f"HttpConnection({self.host}:{self.port})"

    def _usable(self) -> bool:
        protocol = self._protocol
        return protocol is not None and not protocol.closed and protocol.broken is None \
            and not protocol.transport.is_closing()

    async def _connect(self) -> _Protocol:
        self.close()
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await asyncio.wait_for(
                loop.create_connection(_Protocol, self.host, self.port, ssl=self._ssl,
                                       server_hostname=self.host if self._ssl else None),
                self.connect_timeout)
        except (OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
            reason = str(exc) or type(exc).__name__
            raise ApiConnectionError(f"cannot connect to {self.host}:{self.port}: {reason}", sent=False) from None
        self._protocol = protocol
        return protocol

    async def request(self, method: str, path: str, headers: dict[str, str], body: bytes | None,
                      max_bytes: int | None = None) -> tuple[int, dict[str, str], bytes | None]:
        """Send one request; (status, lower-case headers, body). The body is None when it is larger
        than max_bytes (the connection is then dropped). Raises ApiConnectionError."""
        protocol = self._protocol if self._usable() else await self._connect()
        head = [f"{method} {self.prefix}{path} HTTP/1.1\r\n", self._fixed_headers]
        head += [f"{name}: {value}\r\n" for name, value in headers.items()]
        if body is not None or method in ("POST", "PUT"):
            head.append(f"Content-Length: {len(body or b'')}\r\n")
        head.append("\r\n")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        response = _Response(future, method == "HEAD", max_bytes)
        protocol.send("".join(head).encode("latin-1") + (body or b""), response, self.read_timeout)
        sent_whole = protocol.transport.get_write_buffer_size() == 0   # else it may still be in our buffer
        try:
            status, response_headers, response_body = await future
        except (ConnectionError, OSError, asyncio.TimeoutError) as exc:
            self.close()
            reason = str(exc) or type(exc).__name__
            if isinstance(exc, asyncio.TimeoutError):
                reason = f"no answer within api_read_timeout_s={self.read_timeout:g}"
            raise ApiConnectionError(f"no answer from {self.host}: {reason}",
                                     sent=sent_whole or response.heard) from None
        if protocol.broken is not None:
            self.close()
        return status, response_headers, response_body

    def close(self) -> None:
        if self._protocol is not None:
            if self._protocol.transport is not None:
                self._protocol.transport.close()
            self._protocol = None
