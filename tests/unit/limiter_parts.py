"""Real parts of the rate limiter for its unit tests: a store in a temporary SQLite file, its
writer thread started on the test's event loop, and LINE's side of one connection, scripted."""
from __future__ import annotations

import asyncio
import contextlib

from frontdesk.ratelimiter.http import ApiConnectionError
from frontdesk.ratelimiter.line_api import HttpRequest, HttpResponse
from frontdesk.ratelimiter.storewriter import StoreWriter
from frontdesk.store import open_store

TEXT = [{"type": "text", "text": "hi"}]


@contextlib.contextmanager
def sqlite_store(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/rl.db")
    try:
        yield store
    finally:
        store.close()


@contextlib.asynccontextmanager
async def started_writer(store, linger_s: float = 0.02):
    """A StoreWriter started on the running loop, closed (every write done) at the end."""
    writer = StoreWriter(store, linger_s)
    writer.start(asyncio.get_running_loop())
    try:
        yield writer
    finally:
        await writer.close()


async def settled(writer: StoreWriter) -> None:
    """Wait until every write handed to the writer so far is in the store."""
    await writer.call(lambda store: None)


def json_answer(status: int, body=None, headers=None) -> HttpResponse:
    return HttpResponse(status, {} if body is None else body, "application/json", headers or {})


class ScriptedLine:
    """One sender's connections (line_api.LineApi's `send`), answering from a script: each
    entry an HttpResponse, or an ApiConnectionError raised. Records what was sent."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.sent: list[tuple[HttpRequest, int | None, str | None]] = []
        self.closed = False

    async def send(self, request: HttpRequest, max_bytes: int | None = None, trace: str | None = None):
        self.sent.append((request, max_bytes, trace))
        answer = self.answers.pop(0) if self.answers else json_answer(200)
        if isinstance(answer, ApiConnectionError):
            raise answer
        return answer

    def close(self) -> None:
        self.closed = True
