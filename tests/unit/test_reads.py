"""Every reader of the hot path asks for at most READ_SIZE (protocol/reads.py): above glibc's mmap
threshold each read maps and unmaps its buffer. Checked on real transports over loopback and
pipes: the HTTP server's (receiver, sandbox), the rate limiter's HTTP client and its stdin."""
from __future__ import annotations

import asyncio
import os

from frontdesk.protocol.http_server import Limits, Response, Server
from frontdesk.protocol.reads import READ_SIZE
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
