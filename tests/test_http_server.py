"""frontdesk's HTTP server (protocol/http_server.py) and its WSGI bridge (protocol/wsgi.py),
in-process: the server on this test's own event loop, real sockets on 127.0.0.1. The receiver's
behaviour on it is tested through the receiver (tests/test_receiver.py); these are what the
sandbox added: answers that close the connection unanswered, answers that come later (a future)
while other connections are served, and a WSGI app's view of a request."""
from __future__ import annotations

import asyncio
import json
import logging

from frontdesk.protocol.http_server import Limits, Request, Response, Server
from frontdesk.protocol.wsgi import CLOSE_WITHOUT_ANSWER, WsgiBridge

LIMITS = Limits(max_body_bytes=1 << 20, request_timeout_s=30.0, idle_timeout_s=30.0, max_connections=100)
TIMEOUT_S = 10.0
LOG = logging.getLogger("tests.http_server")


async def _listening(server: Server):
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(server.protocol, "127.0.0.1", 0)
    return listener, listener.sockets[0].getsockname()[1]


async def _wait_for(predicate) -> None:
    """Yield to the server (it runs on this loop) until predicate() holds."""
    async def poll():
        while not predicate():
            await asyncio.sleep(0.005)
    await asyncio.wait_for(poll(), TIMEOUT_S)


def test_a_response_that_closes_without_answer_sends_no_bytes_after_the_earlier_answers():
    def handle(request: Request) -> Response:
        if request.path == "/drop":
            return Response(0, close_without_answer=True)
        return Response(200, b'{"ok":true}')

    async def scenario() -> bytes:
        listener, port = await _listening(Server(handle, LIMITS))
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            # three pipelined requests: answered, dropped, never read
            writer.write(b"GET /fine HTTP/1.1\r\nHost: x\r\n\r\n"
                         b"POST /drop HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
                         b"GET /fine HTTP/1.1\r\nHost: x\r\n\r\n")
            received = await asyncio.wait_for(reader.read(), TIMEOUT_S)   # until the server closes
            writer.close()
            return received
        finally:
            listener.close()

    received = asyncio.run(scenario())
    assert received.count(b"HTTP/1.1 ") == 1
    assert received.startswith(b"HTTP/1.1 200 OK\r\n") and received.endswith(b'{"ok":true}')


def test_an_answer_still_coming_on_one_connection_does_not_hold_up_another():
    async def scenario():
        later = asyncio.get_running_loop().create_future()

        def handle(request: Request):
            return later if request.path == "/slow" else Response(200, b'"fast"')

        server = Server(handle, LIMITS)
        listener, port = await _listening(server)
        try:
            slow_reader, slow_writer = await asyncio.open_connection("127.0.0.1", port)
            slow_writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            await _wait_for(lambda: server.busy == 1)   # read, waiting for its answer
            fast_reader, fast_writer = await asyncio.open_connection("127.0.0.1", port)
            fast_writer.write(b"GET /fast HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            fast = await asyncio.wait_for(fast_reader.read(), TIMEOUT_S)
            still_busy = server.busy
            later.set_result(Response(200, b'"slow"'))
            slow = await asyncio.wait_for(slow_reader.readuntil(b'"slow"'), TIMEOUT_S)
            for writer in (slow_writer, fast_writer):
                writer.close()
            return fast, still_busy, slow
        finally:
            listener.close()

    fast, still_busy, slow = asyncio.run(scenario())
    assert fast.startswith(b"HTTP/1.1 200 OK\r\n") and fast.endswith(b'"fast"')
    assert still_busy == 1     # the slow one was still waiting when the fast one was answered
    assert slow.startswith(b"HTTP/1.1 200 OK\r\n")


def _echo_app(environ, start_response):
    """What a WSGI app sees of the request, as JSON."""
    seen = {key: environ[key] for key in ("REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "CONTENT_TYPE",
                                          "CONTENT_LENGTH", "SERVER_PROTOCOL", "HTTP_X_LINE_RETRY_KEY")
            if key in environ}
    seen["body"] = environ["wsgi.input"].read().decode()
    seen["framing_headers"] = sorted(k for k in environ
                                     if k in ("HTTP_CONTENT_LENGTH", "HTTP_TRANSFER_ENCODING"))
    if environ["PATH_INFO"] == "/drop":
        environ[CLOSE_WITHOUT_ANSWER] = True
    if environ["PATH_INFO"] == "/bug":
        raise RuntimeError("a bug in the app")
    start_response("201 Created", [("Content-Type", "application/json"), ("Content-Length", "999"),
                                   ("X-Line-Request-Id", "abc")])
    return [json.dumps(seen).encode(), b""]


def test_the_wsgi_bridge_gives_the_app_the_whole_request_and_the_server_its_answer():
    async def scenario() -> bytes:
        listener, port = await _listening(Server(WsgiBridge(_echo_app, "127.0.0.1:0", LOG), LIMITS))
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /v2/bot/%E3%81%82/x?since=3&wait=1 HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Type: application/json\r\nX-Line-Retry-Key: k-1\r\n"
                         b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                         b"4\r\n{\"a\"\r\n3\r\n: 1\r\n1\r\n}\r\n0\r\n\r\n")
            received = await asyncio.wait_for(reader.read(), TIMEOUT_S)
            writer.close()
            return received
        finally:
            listener.close()

    received = asyncio.run(scenario())
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 201 Created\r\n")
    assert b"\r\nContent-Type: application/json\r\n" in head and b"\r\nX-Line-Request-Id: abc" in head
    assert f"\r\nContent-Length: {len(body)}\r\n".encode() in head   # the body's own length, not the app's
    assert json.loads(body) == {
        "REQUEST_METHOD": "POST", "PATH_INFO": "/v2/bot/\u00e3\u0081\u0082/x",   # PEP 3333: bytes as latin-1
        "QUERY_STRING": "since=3&wait=1", "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": "8",
        "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_X_LINE_RETRY_KEY": "k-1", "body": '{"a": 1}',
        "framing_headers": []}   # the body came chunked; the app gets it whole


def test_the_wsgi_bridge_turns_a_drop_mark_into_no_answer_and_an_app_bug_into_500():
    bridge = WsgiBridge(_echo_app, "127.0.0.1:8100", LOG)

    def request(path: str) -> Request:
        return Request("GET", path, {}, b"", 0.0)

    assert bridge(request("/drop")).close_without_answer
    failed = bridge(request("/bug"))
    assert failed.status == 500 and not failed.close_without_answer
    assert json.loads(failed.body)["title"] == "Internal Server Error"
    assert bridge(request("/fine")).status == 201
