"""The sandbox's serving on one event loop (sandbox/server.py), in-process: the real app and server
on this test's loop, real sockets on 127.0.0.1. What must not stall the loop does not: a call
waiting out its injected latency, a call that blocks (the webhook test) on a thread, a long poll
when the server stops."""
from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor

from frontdesk.protocol import config
from frontdesk.protocol.http_server import Limits, Request, Response, Server
from frontdesk.sandbox.app import SandboxState
from frontdesk.sandbox.server import sandbox_server
from frontdesk.sandbox.webhooks import user_id
from tests.sandbox_harness import SECRET, TOKEN

TIMEOUT_S = 10.0


def _settings(**knobs):
    return config.load(environ={f"FRONTDESK_{name.upper()}": str(value) for name, value in knobs.items()})


def _request(method: str, path: str, body: dict | None = None) -> bytes:
    data = json.dumps(body).encode() if body is not None else b""
    return (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n").encode() + data


async def _answer(reader: asyncio.StreamReader) -> tuple[int, dict]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT_S)
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    body = await asyncio.wait_for(reader.readexactly(length), TIMEOUT_S)
    return int(head.split(b" ")[1]), json.loads(body)


async def _wait_for(predicate) -> None:
    async def poll():
        while not predicate():
            await asyncio.sleep(0.005)   # yield to the server: it runs on this loop
    await asyncio.wait_for(poll(), TIMEOUT_S)


def test_a_call_waiting_out_its_latency_does_not_hold_up_other_connections():
    async def scenario():
        threads = ThreadPoolExecutor(2)
        server, state = sandbox_server(_settings(sandbox_latency_ms=60_000), SECRET, TOKEN, threads)
        listener = await asyncio.get_running_loop().create_server(server.protocol, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        try:
            _, delayed = await asyncio.open_connection("127.0.0.1", port)
            delayed.write(_request("POST", "/v2/bot/message/push",
                                   {"to": user_id(1), "messages": [{"type": "text", "text": "later"}]}))
            await _wait_for(lambda: server.busy == 1)    # read; its minute of latency has begun
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(_request("GET", "/sandbox/stats"))
            answered = await _answer(reader)
            for w in (delayed, writer):
                w.close()
            return answered, server.busy, state.stats()
        finally:
            listener.close()
            threads.shutdown()

    (status, stats), busy, after = asyncio.run(scenario())
    assert status == 200 and stats["api_calls"] == 0   # the push is not done: latency comes first
    assert busy == 1 and after["deliveries"] == 0


class _HeldEndpoint:
    """A bot's webhook endpoint that receives the sandbox's verify request and answers only when
    the test lets it."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.received = asyncio.Event()
        self.answer = loop.create_future()
        self.server = Server(self.handle, Limits(4096, 30.0, 30.0, 10))

    def handle(self, request: Request):
        self.received.set()
        return self.answer


def test_the_webhook_test_posts_from_a_thread_while_the_loop_answers_other_calls():
    async def scenario():
        loop = asyncio.get_running_loop()
        threads = ThreadPoolExecutor(2)
        server, _ = sandbox_server(_settings(), SECRET, TOKEN, threads)
        listener = await loop.create_server(server.protocol, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        bot = _HeldEndpoint(loop)
        bot_listener = await loop.create_server(bot.server.protocol, "127.0.0.1", 0)
        bot_url = f"http://127.0.0.1:{bot_listener.sockets[0].getsockname()[1]}/callback"
        try:
            test_reader, test_writer = await asyncio.open_connection("127.0.0.1", port)
            test_writer.write(_request("POST", "/v2/bot/channel/webhook/test", {"endpoint": bot_url}))
            await asyncio.wait_for(bot.received.wait(), TIMEOUT_S)   # the sandbox is in the middle of it
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(_request("GET", "/v2/bot/info"))
            info = await _answer(reader)
            bot.answer.set_result(Response(200, b"{}"))
            tested = await _answer(test_reader)
            for w in (test_writer, writer):
                w.close()
            return info, tested
        finally:
            listener.close()
            bot_listener.close()
            threads.shutdown()

    (info_status, info), (test_status, tested) = asyncio.run(scenario())
    assert info_status == 200 and info["basicId"] == "@frontdesk"
    assert test_status == 200 and tested["success"] is True and tested["statusCode"] == 200


def test_a_long_poll_returns_what_there_is_when_the_server_stops():
    state = SandboxState(_settings(), SECRET, TOKEN)
    answers = []
    poll = threading.Thread(target=lambda: answers.append(state.deliveries_since(0, 100, wait_s=30)),
                            daemon=True)
    poll.start()
    state.stop_waiting()
    poll.join(timeout=TIMEOUT_S)
    assert not poll.is_alive() and answers == [(b"[]", 1)]
