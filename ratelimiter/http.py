"""One keep-alive HTTP/1.1 connection, driven by the rate limiter's event loop.

Why not http.client (or requests) any more: the rate limiter used to run 16 sender threads, each
blocking on an http.client connection, and profiling showed a fifth of its CPU in thread
hand-offs (Condition.notify and the GIL) and much of the rest in http.client's header parsing
(the email package). One asyncio loop drives every connection here, TLS included (asyncio's
non-blocking TLS), and a response is parsed with a few bytes operations.

What the call journal needs from a connection is kept: `ApiConnectionError.sent` is False when
the request certainly never left whole (no connection, or its bytes were still buffered when the
connection failed) and True when it went out and no complete answer came (LINE may have acted).
One request at a time per connection; no pipelining; HTTP proxies are not supported.
"""
from __future__ import annotations

import asyncio
import socket
import ssl
from urllib.parse import urlsplit

from frontdesk.protocol.http1 import ChunkError, read_chunks

MAX_HEAD_BYTES = 64 * 1024      # status line and headers of one response
NO_BODY_STATUSES = frozenset({204, 304})


class ApiConnectionError(Exception):
    """No complete HTTP answer. `sent` is False when the request certainly never reached the server."""

    def __init__(self, message: str, sent: bool):
        super().__init__(message)
        self.sent = sent


class _Malformed(Exception):
    """The server's bytes are not an HTTP/1.1 response we can read."""


class _Response:
    """The parse state of the one response awaited on a connection."""
    __slots__ = ("future", "head_request", "max_bytes", "status", "headers", "length", "chunked",
                 "body", "keep_alive", "too_large")

    def __init__(self, future: asyncio.Future, head_request: bool, max_bytes: int | None):
        self.future, self.head_request, self.max_bytes = future, head_request, max_bytes
        self.status = 0
        self.headers: dict[str, str] | None = None
        self.length: int | None = None
        self.chunked = False
        self.body = bytearray()
        self.keep_alive = True
        self.too_large = False


class _Protocol(asyncio.Protocol):
    """Bytes in and out of one socket; parses the response that is awaited, nothing else."""

    def __init__(self):
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.pending: _Response | None = None
        self.closed = False
        self.broken: str | None = None   # why the connection cannot be used again

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.pending is None:
            self.broken = "the server sent bytes while no request was outstanding"
            return
        try:
            self._parse(eof=False)
        except _Malformed as exc:
            self._fail(str(exc))

    def eof_received(self):
        self.closed = True
        if self.pending is not None:
            try:
                self._parse(eof=True)
            except _Malformed as exc:
                self._fail(str(exc))
        return False   # close the transport

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.pending is not None:
            self._fail(f"connection lost: {exc}" if exc else "connection closed before the answer was complete")

    def _fail(self, reason: str) -> None:
        pending, self.pending = self.pending, None
        self.broken = reason
        if pending is not None and not pending.future.done():
            pending.future.set_exception(ConnectionError(reason))
        if self.transport is not None:
            self.transport.close()

    def _parse(self, eof: bool) -> None:
        response = self.pending
        if response.headers is None and not self._parse_head(response):
            if eof:
                raise _Malformed("connection closed before the response headers")
            return
        body = self._parse_body(response, eof)
        if body is None:
            return
        self.pending = None
        if not response.keep_alive or eof or self.buffer:
            self.broken = "the server closes the connection" if not self.buffer else "bytes after the response"
        if not response.future.done():
            response.future.set_result((response.status, response.headers, None if response.too_large else body))

    def _parse_head(self, response: _Response) -> bool:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEAD_BYTES:
                raise _Malformed("response headers larger than 64 KiB")
            return False
        lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        del self.buffer[:end + 4]
        version, _, rest = lines[0].partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise _Malformed(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        response.status = int(code)
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise _Malformed(f"malformed header line: {line[:80]!r}")
            headers[name.strip().lower()] = value.strip()
        response.headers = headers
        connection = headers.get("connection", "").lower()
        response.keep_alive = "close" not in connection and version != "HTTP/1.0"
        if response.head_request or response.status in NO_BODY_STATUSES or 100 <= response.status < 200:
            response.length = 0
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            response.chunked = True
        elif "content-length" in headers:
            value = headers["content-length"]
            if not value.isdigit():
                raise _Malformed(f"bad Content-Length {value[:40]!r}")
            response.length = int(value)
        else:
            response.keep_alive = False   # the body ends with the connection
        if response.max_bytes is not None and response.length is not None and response.length > response.max_bytes:
            response.too_large, response.length, response.keep_alive = True, 0, False
        return True

    def _parse_body(self, response: _Response, eof: bool) -> bytes | None:
        """The complete body (b"" for none; None: not complete yet)."""
        if response.too_large:
            return b""
        if response.length is not None:
            if len(self.buffer) < response.length:
                if eof:
                    raise _Malformed("connection closed inside the response body")
                return None
            body = bytes(self.buffer[:response.length])
            del self.buffer[:response.length]
            return body
        if response.chunked:
            return self._parse_chunks(response, eof)
        response.body += self.buffer      # delimited by the end of the connection
        self.buffer.clear()
        if response.max_bytes is not None and len(response.body) > response.max_bytes:
            response.too_large = True
            return b""
        return bytes(response.body) if eof else None

    def _parse_chunks(self, response: _Response, eof: bool) -> bytes | None:
        try:
            complete = read_chunks(self.buffer, response.body, response.max_bytes)
        except ChunkError as exc:
            raise _Malformed(str(exc)) from None
        if response.max_bytes is not None and len(response.body) > response.max_bytes:
            response.too_large, response.keep_alive = True, False
            return b""
        if complete:
            return bytes(response.body)
        if eof:
            raise _Malformed("connection closed inside a chunked body")
        return None


class HttpConnection:
    """A keep-alive connection to one base URL (http or https), reopened after any failure."""

    def __init__(self, base_url: str, headers: dict[str, str], connect_timeout: float, read_timeout: float):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"API base URL {base_url!r} must be http(s)://host[:port]")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
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
        data = "".join(head).encode("latin-1") + (body or b"")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        protocol.pending = _Response(future, method == "HEAD", max_bytes)
        transport = protocol.transport
        transport.write(data)
        sent_whole = transport.get_write_buffer_size() == 0   # else it may still be in our buffer
        # a timer on the future itself: asyncio.wait_for adds two futures and a callback per call
        timer = loop.call_later(self.read_timeout, _time_out, future)
        try:
            status, response_headers, response_body = await future
        except (ConnectionError, OSError, asyncio.TimeoutError) as exc:
            self.close()
            reason = str(exc) or type(exc).__name__
            if isinstance(exc, asyncio.TimeoutError):
                reason = f"no answer within api_read_timeout_s={self.read_timeout:g}"
            raise ApiConnectionError(f"no answer from {self.host}: {reason}",
                                     sent=sent_whole or bool(protocol.buffer)) from None
        finally:
            timer.cancel()
        if protocol.broken is not None:
            self.close()
        return status, response_headers, response_body

    def close(self) -> None:
        if self._protocol is not None:
            if self._protocol.transport is not None:
                self._protocol.transport.close()
            self._protocol = None


def _time_out(future: asyncio.Future) -> None:
    if not future.done():
        future.set_exception(asyncio.TimeoutError())
