"""frontdesk's HTTP server (protocol/http_server.py) and its WSGI bridge (protocol/wsgi.py),
in-process: the server on this test's own event loop, real sockets on 127.0.0.1. The receiver's
behaviour on it is tested through the receiver (tests/test_receiver.py); these are what the
sandbox added: answers that close the connection unanswered, answers that come later (a future)
while other connections are served, and a WSGI app's view of a request."""
from __future__ import annotations

import asyncio
import json
import logging
import re

import h11

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


# --- framing on llhttp: what the connection does around the parser -------------------------------

async def _read_answers(reader: asyncio.StreamReader, count: int) -> list[h11.Response | bytes]:
    """`count` answers read with h11 as a client that sent GETs and, first, a HEAD: each answer's
    head, then its body."""
    client = h11.Connection(h11.CLIENT)
    answers: list = []
    for n in range(count):
        client.send(h11.Request(method="HEAD" if n == 0 else "GET", target="/", headers=[("Host", "x")]))
        client.send(h11.EndOfMessage())
        body = b""
        while True:
            event = client.next_event()
            if event is h11.NEED_DATA:
                client.receive_data(await asyncio.wait_for(reader.read(65536), TIMEOUT_S))
            elif isinstance(event, h11.Response):
                answers.append(event)
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                answers.append(body)
                client.start_next_cycle()
                break
    return answers


def test_a_head_answer_carries_no_body_so_the_next_answer_is_read_right():
    """h11, which knows the request was HEAD, would read a body there as the next answer's start."""
    async def scenario():
        listener, port = await _listening(Server(lambda r: Response(200, b'{"path":"%s"}' % r.path.encode()),
                                                 LIMITS))
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"HEAD /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
            answers = await _read_answers(reader, 2)
            writer.close()
            return answers
        finally:
            listener.close()

    head, head_body, get, get_body = asyncio.run(scenario())
    assert head.status_code == 200 and head_body == b""
    assert (b"content-length", b"13") in head.headers     # what a GET's body would be
    assert get.status_code == 200 and get_body == b'{"path":"/b"}'


def test_a_client_pipelining_without_reading_its_answers_is_not_read_further():
    """400 requests of 60 KB pipelined behind one whose answer waits: the server stops reading
    (the rest waits in the socket) instead of taking in 24 MB; once the answer comes, every
    request is answered, in order."""
    async def scenario():
        held = asyncio.get_running_loop().create_future()
        server = Server(lambda r: held if r.path == "/0" else Response(200, r.path.encode()), LIMITS)
        listener, port = await _listening(server)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            body = b"x" * 60_000
            writer.write(b"".join(b"POST /%d HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n%s" % (n, body)
                                  for n in range(400)))
            await _wait_for(lambda: any(not c.transport.is_reading() for c in server.connections))
            (connection,) = server.connections
            read_ahead = len(connection.queue)
            held.set_result(Response(200, b"/0"))
            answered = await asyncio.wait_for(reader.readexactly(sum(len(encode(b"/%d" % n)) for n in range(400))),
                                              TIMEOUT_S * 3)
            writer.close()
            return read_ahead, answered
        finally:
            listener.close()

    def encode(path: bytes) -> bytes:
        return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\nServer: frontdesk\r\n\r\n%s" \
            % (len(path), path)

    read_ahead, answered = asyncio.run(scenario())
    assert read_ahead < 40           # 4 queued, then what one read held; not 399
    paths = [int(p) for p in re.findall(rb"\r\n\r\n/(\d+)", answered)]
    assert paths == list(range(400))


def test_a_chunk_announced_past_the_limit_is_never_taken_as_complete_and_its_data_is_not_a_request():
    """The chunk's size line and its first bytes arrive; then, inside the chunk, what looks like a
    request. Nothing reaches the handler, the answer is 413."""
    async def scenario():
        seen: list[str] = []
        server = Server(lambda r: seen.append(r.path) or Response(200, b"{}"), LIMITS)
        listener, port = await _listening(server)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /first HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                         + b"%x\r\n" % (LIMITS.max_body_bytes + 4096) + b"0123456789")
            await _wait_for(lambda: any(c.started for c in server.connections))   # those bytes were read
            writer.write(b"POST /hidden HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
                         + b"x" * LIMITS.max_body_bytes)
            answer = await asyncio.wait_for(reader.read(), TIMEOUT_S)
            writer.close()
            return seen, answer
        finally:
            listener.close()

    seen, answer = asyncio.run(scenario())
    assert seen == []
    assert answer.startswith(b"HTTP/1.1 413 ") and answer.count(b"HTTP/1.1 ") == 1


def test_100_continue_for_a_pipelined_request_waits_for_the_answers_before_it():
    async def scenario():
        held = asyncio.get_running_loop().create_future()
        server = Server(lambda r: held if r.path == "/first" else Response(200, r.body), LIMITS)
        listener, port = await _listening(server)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
                         b"POST /second HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
            await _wait_for(lambda: server.busy == 1)
            held.set_result(Response(200, b'"first"'))
            before_body = await asyncio.wait_for(reader.readuntil(b"100 Continue\r\n\r\n"), TIMEOUT_S)
            writer.write(b"hello")
            second = await asyncio.wait_for(reader.readuntil(b"hello"), TIMEOUT_S)
            writer.close()
            return before_body, second
        finally:
            listener.close()

    before_body, second = asyncio.run(scenario())
    assert before_body.startswith(b"HTTP/1.1 200 OK\r\n") and before_body.index(b'"first"') < before_body.index(b"100")
    assert second.startswith(b"HTTP/1.1 200 OK\r\n")


def test_trailer_fields_never_stand_in_for_headers():
    async def scenario():
        seen: list[Request] = []
        listener, port = await _listening(Server(lambda r: seen.append(r) or Response(200), LIMITS))
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                         b"2\r\n{}\r\n0\r\nX-Line-Signature: forged\r\n\r\n")
            await asyncio.wait_for(reader.read(), TIMEOUT_S)
            writer.close()
            return seen
        finally:
            listener.close()

    (request,) = asyncio.run(scenario())
    assert request.body == b"{}" and "x-line-signature" not in request.headers


def test_an_upgrade_is_answered_as_plain_http_and_one_with_a_body_is_refused():
    """llhttp stops at a request asking to switch protocols and would hand its body to the new
    protocol: without a body it is answered and the connection closed; with one, 400."""
    async def scenario():
        seen: list[str] = []
        listener, port = await _listening(Server(lambda r: seen.append(r.path) or Response(200, b"{}"), LIMITS))
        answers = []
        try:
            for request in (b"GET /plain HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
                            b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n",
                            b"POST /body HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
                            b"Content-Length: 2\r\n\r\n{}"):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(request)
                answers.append(await asyncio.wait_for(reader.read(), TIMEOUT_S))   # until it closes
                writer.close()
            return seen, answers
        finally:
            listener.close()

    seen, (plain, with_body) = asyncio.run(scenario())
    assert seen == ["/plain"]
    assert plain.startswith(b"HTTP/1.1 200 OK\r\n") and plain.count(b"HTTP/1.1") == 1
    assert b"Connection: close\r\n" in plain
    assert with_body.startswith(b"HTTP/1.1 400 ") and b"upgrade" in with_body


def test_deadlines_idle_connections_close_after_the_idle_timeout_unfinished_requests_get_408():
    """One timer per connection watches a deadline that each request moves: a request begun on a
    connection that was idle must still time out by its own (shorter) deadline, and an idle
    connection must not be closed early."""
    limits = Limits(max_body_bytes=1 << 20, request_timeout_s=0.5, idle_timeout_s=2.0, max_connections=100)

    async def until_closed(reader: asyncio.StreamReader, since: float) -> tuple[float, bytes]:
        answer = await asyncio.wait_for(reader.read(), TIMEOUT_S)
        return asyncio.get_running_loop().time() - since, answer

    async def scenario():
        listener, port = await _listening(Server(lambda r: Response(200), limits))
        loop = asyncio.get_running_loop()
        try:
            opened = loop.time()   # before the server can have accepted it
            idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
            idle = asyncio.ensure_future(until_closed(idle_reader, opened))
            slow_reader, slow_writer = await asyncio.open_connection("127.0.0.1", port)
            slow_writer.write(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{")
            slow = await until_closed(slow_reader, loop.time())
            idle_result = await idle
            for writer in (idle_writer, slow_writer):
                writer.close()
            return idle_result, slow
        finally:
            listener.close()

    (idle_after, idle_answer), (slow_after, slow_answer) = asyncio.run(scenario())
    assert idle_answer == b"" and idle_after >= 2.0
    assert slow_answer.startswith(b"HTTP/1.1 408 ") and 0.5 <= slow_after < 2.0


def test_a_header_line_that_never_ends_gets_431_before_much_of_it_is_held():
    """httptools hands a header line over only once it is whole; the reads that complete nothing
    are counted instead, so an endless line is refused after about 64 KiB. (The client, still
    writing, may see the close as a reset before it reads the answer: the log says what it was.)"""
    refusals: list[str] = []
    log = logging.getLogger("tests.http_server.endless")
    log.addHandler(type("Keep", (logging.Handler,), {"emit": lambda self, record: refusals.append(
        record.getMessage())})())
    log.setLevel(logging.INFO)

    async def scenario() -> int:
        server = Server(lambda r: Response(200), LIMITS, log)
        listener, port = await _listening(server)
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: ")
            sent = 0
            try:
                while server.connections and sent < 4 << 20:
                    writer.write(b"a" * 8192)
                    sent += 8192
                    await writer.drain()
                    await asyncio.sleep(0)   # let the server read what came (it runs on this loop)
            except ConnectionError:
                pass   # closed while we wrote
            writer.close()
            return sent
        finally:
            listener.close()

    sent = asyncio.run(scenario())
    assert refusals == ["status=431 reason='a header line longer than 64 KiB'"]
    assert sent < 1 << 20   # refused long before the line (or the client) stopped
