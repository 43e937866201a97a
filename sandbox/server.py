"""`frontdesk sandbox`: the LINE Messaging API emulator (sandbox/app.py, a falcon WSGI app) on
frontdesk's own HTTP server (protocol/http_server.py), one asyncio event loop, until SIGTERM or
SIGINT.

Why not waitress: an API call's own work is tens of microseconds, and at 1,000 events/s py-spy
found ~60 % of the sandbox's busy samples in waitress's machinery (its I/O thread, the hand-off of
each request to a worker thread and back, GIL hand-offs) and ~20 % in the app. Here the app runs
inline on the loop (docs/benchmarks.md has the figures). Three things must not stall the loop:

- injected latency (sandbox_latency_ms): the call is run when its latency has passed, by a timer
  on the loop, so every other connection is answered meanwhile;
- calls that block — the webhook test (it posts to the bot's endpoint) and long polls of
  /sandbox/deliveries — run on one of `sandbox_threads` threads;
- dropped connections (sandbox_drop_rate): the app marks the request
  (wsgi.CLOSE_WITHOUT_ANSWER) and the server closes the connection without writing a byte.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import re
from concurrent.futures import ThreadPoolExecutor

from frontdesk.protocol import http_server
from frontdesk.protocol.config import (SANDBOX_ACCESS_TOKEN, SANDBOX_CHANNEL_ID, SANDBOX_CHANNEL_SECRET, Settings,
                                       sandbox_credentials)
from frontdesk.protocol.http_server import Limits, Request, Response, Server
from frontdesk.protocol.wsgi import WsgiBridge

from .app import SandboxState, create_app

log = logging.getLogger("frontdesk.sandbox")

# (method, path) of the calls that may block: run on threads, not on the loop. The chat page's
# history long-polls and its events wait for the receiver (sandbox/chatpage.py).
BLOCKING_CALLS = frozenset({("POST", "/v2/bot/channel/webhook/test"), ("GET", "/sandbox/deliveries")})
BLOCKING_CHAT_CALLS = re.compile(r"(GET /sandbox/chats/[^/]+/history|POST /sandbox/chats/[^/]+/events)/?")
# The largest body the API takes is a rich menu image (1 MB; the app answers LINE's 413 above
# it, which it can only do for a body the server has read): room for that, and for a chunked
# upload that runs past it.
LIMITS = Limits(max_body_bytes=16 * 1024 * 1024, request_timeout_s=30.0, idle_timeout_s=120.0,
                max_connections=1000)
BACKLOG = 2048
STOP_TIMEOUT_S = 5.0   # at shutdown, longest wait for the answers of calls already read


class SandboxHandler:
    """Answers each request inline on the loop, after its injected latency, or on a thread."""

    def __init__(self, bridge: WsgiBridge, latency_s: float, threads: ThreadPoolExecutor):
        self.bridge = bridge
        self.latency_s = latency_s
        self.threads = threads

    def __call__(self, request: Request) -> Response | asyncio.Future:
        if self.latency_s and not request.path.startswith(("/sandbox/", "/chat")):   # only the API is delayed
            loop = asyncio.get_running_loop()
            later = loop.create_future()
            loop.call_later(self.latency_s, self._after_latency, request, later)
            return later
        return self._answer(request)

    def _after_latency(self, request: Request, later: asyncio.Future) -> None:
        """Run by a timer, not a task: a task (asyncio.sleep) ran every call whose latency was up
        before answering any (16 connections at 20 ms: 650 calls/s; with the timer 700, as on
        waitress)."""
        answer = self._answer(request)
        if isinstance(answer, Response):
            later.set_result(answer)
        else:
            answer.add_done_callback(functools.partial(_pass_on, later))

    def _answer(self, request: Request) -> Response | asyncio.Future:
        if (request.method, request.path.rstrip("/")) in BLOCKING_CALLS or \
                BLOCKING_CHAT_CALLS.fullmatch(f"{request.method} {request.path}"):
            return asyncio.get_running_loop().run_in_executor(self.threads, self.bridge, request)
        return self.bridge(request)


def _pass_on(later: asyncio.Future, done: asyncio.Future) -> None:
    """Give `later` the outcome of `done`."""
    if done.cancelled():
        later.cancel()
    elif done.exception() is not None:
        later.set_exception(done.exception())
    else:
        later.set_result(done.result())


def main(settings: Settings) -> int:
    secret, token = sandbox_credentials(settings)
    if not settings.channel_access_token:
        print(f"sandbox: no channel access token configured; accepting the dev token {SANDBOX_ACCESS_TOKEN!r} "
              f"(Authorization: Bearer {SANDBOX_ACCESS_TOKEN})", flush=True)
    if not settings.channel_secret:
        print(f"sandbox: no channel secret configured; reply tokens are sealed with the dev secret "
              f"{SANDBOX_CHANNEL_SECRET!r}", flush=True)
    if not settings.channel_id:
        print(f"sandbox: no channel ID configured; the channel access token API answers for channel "
              f"{SANDBOX_CHANNEL_ID}", flush=True)
    try:
        asyncio.run(serve(settings, secret, token))
    except (OSError, ValueError) as exc:
        log.error("event=listen_failed address=%s reason=%s", settings.sandbox_listen,
                  getattr(exc, "strerror", None) or exc)
        return 1
    log.info("event=stopped")
    return 0


def sandbox_server(settings: Settings, secret: str, token: str,
                   threads: ThreadPoolExecutor) -> tuple[Server, SandboxState]:
    """The emulator's HTTP server (not yet listening) and the state its app keeps."""
    state = SandboxState(settings, secret, token)
    bridge = WsgiBridge(create_app(settings, secret, token, state), settings.sandbox_listen, log)
    return Server(SandboxHandler(bridge, settings.sandbox_latency_ms / 1000.0, threads), LIMITS, log), state


async def serve(settings: Settings, secret: str, token: str) -> None:
    """The emulator on settings.sandbox_listen until SIGTERM or SIGINT."""
    threads = ThreadPoolExecutor(settings.sandbox_threads, thread_name_prefix="sandbox-blocking")
    server, state = sandbox_server(settings, secret, token, threads)

    def listening() -> None:
        log.info("event=serving threads=%d latency_ms=%g fault_rate=%g drop_rate=%g",
                 settings.sandbox_threads, settings.sandbox_latency_ms, settings.sandbox_fault_rate,
                 settings.sandbox_drop_rate)
        print(f"sandbox: LINE Messaging API emulator on http://{settings.sandbox_listen} "
              f"(deliveries: http://{settings.sandbox_listen}/sandbox/deliveries)", flush=True)

    try:
        await http_server.serve(server, settings.sandbox_listen, BACKLOG, STOP_TIMEOUT_S,
                                on_listening=listening, on_stop=state.stop_waiting)
    finally:
        threads.shutdown(wait=False, cancel_futures=True)
