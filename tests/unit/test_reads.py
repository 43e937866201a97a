"""Every reader of the hot path asks for at most READ_SIZE (protocol/reads.py): above glibc's mmap
threshold each read maps and unmaps its buffer. Checked on real transports over loopback and
pipes: the HTTP server's (receiver, sandbox), the rate limiter's HTTP client and its stdin; and
that asyncio honours the attribute it is set through."""
from __future__ import annotations

import asyncio
import fcntl
import os
import socket

from frontdesk.protocol.http_server import Limits, Response, Server
from frontdesk.protocol.reads import READ_SIZE, read_small
from frontdesk.ratelimiter.http import HttpConnection
from frontdesk.ratelimiter.pipe import FramePipe

GLIBC_MMAP_THRESHOLD = 128 * 1024   # its starting value; reads at or above it allocate a mapping


def test_read_size_is_under_the_mmap_threshold():
    assert READ_SIZE < GLIBC_MMAP_THRESHOLD


def test_the_http_server_and_client_read_at_most_read_size_at_a_time():
    async def scenario():
        loop = asyncio.get_running_loop()
        server = Server(lambda request: Response(204), Limits(1024, 5.0, 5.0, 10))
        listener = await loop.create_server(server.protocol, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        client = HttpConnection(f"http://127.0.0.1:{port}", {}, 5.0, 5.0)
        try:
            status, _, _ = await client.request("GET", "/", {}, None)
            (connection,) = server.connections
            return status, connection.transport.max_size, client._protocol.transport.max_size
        finally:
            client.close()
            listener.close()

    assert asyncio.run(scenario()) == (204, READ_SIZE, READ_SIZE)


def test_the_rate_limiters_stdin_reads_at_most_read_size_at_a_time():
    async def scenario():
        pipe_in, to_limiter = os.pipe()
        from_limiter, pipe_out = os.pipe()
        pipe = FramePipe(pipe_in, pipe_out, 1 << 20, lambda message: None)
        pipe.open(asyncio.get_running_loop())
        await pipe.start_reading()
        try:
            return pipe._transport.max_size
        finally:
            pipe._transport.close()
            for fd in (to_limiter, from_limiter, pipe_out):
                os.close(fd)

    assert asyncio.run(scenario()) == READ_SIZE


class _Chunks(asyncio.Protocol):
    """Records the size of every read a transport hands over."""

    def __init__(self, total: int, done: asyncio.Future):
        self.sizes: list[int] = []
        self.total, self.done = total, done

    def connection_made(self, transport) -> None:
        read_small(transport)

    def data_received(self, data: bytes) -> None:
        self.sizes.append(len(data))
        if sum(self.sizes) >= self.total and not self.done.done():
            self.done.set_result(None)


def test_asyncio_honours_the_read_size_on_sockets_and_pipes():
    """`max_size` is asyncio's own attribute, not public API: this pins that its socket and pipe
    transports read no more than it asks, whatever is waiting (128 KiB on a socket, 300 KiB in a
    widened pipe; asyncio's own size would take either in one read)."""
    payload = b"x" * (300 * 1024)

    async def sizes_through(make_transport, total: int = len(payload)) -> list[int]:
        done = asyncio.get_running_loop().create_future()
        protocol = _Chunks(total, done)
        transport = await make_transport(lambda: protocol)
        await asyncio.wait_for(done, 10)
        transport.close()
        return protocol.sizes

    async def over_a_socket() -> list[int]:
        ours, theirs = socket.socketpair()
        theirs.sendall(payload[:READ_SIZE * 2])   # (a socket pair buffers this much unread)

        async def connect(factory):
            transport, _ = await asyncio.get_running_loop().connect_accepted_socket(factory, ours)
            return transport
        try:
            return await sizes_through(connect, READ_SIZE * 2)
        finally:
            theirs.close()

    async def over_a_pipe() -> list[int]:
        read_end, write_end = os.pipe()
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, len(payload) * 2)
        os.write(write_end, payload)

        async def connect(factory):
            transport, _ = await asyncio.get_running_loop().connect_read_pipe(factory, os.fdopen(read_end, "rb", 0))
            return transport
        try:
            return await sizes_through(connect)
        finally:
            os.close(write_end)

    assert asyncio.run(over_a_socket()) == [READ_SIZE, READ_SIZE]
    assert asyncio.run(over_a_pipe()) == [READ_SIZE] * 4 + [len(payload) - 4 * READ_SIZE]
