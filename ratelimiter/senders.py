"""The HTTP sender pool: `api_connections` senders on the event loop, each driving its own
keep-alive connections (ratelimiter/line_api.py LineApi) with what the scheduler hands it.

A call holds its connection for a whole round trip, so at 20 ms of latency one connection carries
~45 calls/s and the default 64 ~2,900 (more than LINE's 2,000 replies/s: at 1,000 events/s and
20 ms, 16 connections held the path to ~800/s; docs/ratelimiter.md).
"""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Protocol


class Connection(Protocol):
    """What a sender needs of its connections (line_api.LineApi)."""

    def close(self) -> None: ...


class Queue(Protocol):
    """What a sender takes its work from (buckets.Scheduler): None once closed and empty."""

    async def take(self): ...


class SenderPool:
    """`count` senders, each with a connection from `connect()`, taking items from `queue` and
    handing each to `serve(connection, item)` until the queue is closed and empty.

    Built, then `start()` on the event loop; `join()` waits for every sender to finish."""

    def __init__(self, count: int, connect: Callable[[], Connection], queue: Queue,
                 serve: Callable[[Connection, object], Awaitable[None]]):
        self._count = count
        self._connect = connect
        self._queue = queue
        self._serve = serve
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        self._tasks = [asyncio.get_running_loop().create_task(self._sender()) for _ in range(self._count)]

    async def join(self) -> None:
        await asyncio.gather(*self._tasks)

    async def _sender(self) -> None:
        connection = self._connect()
        try:
            while (item := await self._queue.take()) is not None:
                await self._serve(connection, item)
        finally:
            connection.close()
