"""The rate limiter's HTTP client (ratelimiter/http.py) against a misbehaving server: real sockets
on 127.0.0.1, the server reading each request whole (h11) and answering with scripted bytes.

What must hold whatever the server sends: a 1xx is never taken for the answer, a body is never a
truncated success, malformed framing is an error that says the request was sent (LINE may have
acted on it), and a connection whose framing went wrong is never used again."""
from __future__ import annotations

import asyncio

import h11
import pytest

from frontdesk.ratelimiter.http import ApiConnectionError, HttpConnection

TIMEOUT_S = 10.0
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}"


class ScriptedServer:
    """Answers the n-th request it reads with answers[n]; None closes the connection unanswered.
    Connections stay open after an answer until the test ends, or close at once (`then_close`)."""

    def __init__(self, answers: list[bytes | None], then_close: bool = False, latency_s: float = 0.0):
        self.answers = list(answers)
        self.then_close = then_close
        self.latency_s = latency_s   # before each answer, as a slow API would take
        self.requests: list[h11.Request] = []
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc) -> None:
        for writer in self._writers:
            writer.close()
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        while self.answers:
            if not await self._read_request(reader):
                return
            answer = self.answers.pop(0)
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            if answer is None:
                writer.close()
                return
            writer.write(answer)
            await writer.drain()
            if self.then_close:
                writer.close()
                return

    async def _read_request(self, reader: asyncio.StreamReader) -> bool:
        http = h11.Connection(h11.SERVER)   # a fresh one per request: the answers bypass it
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                if not data:
                    return False
                http.receive_data(data)
            elif isinstance(event, h11.Request):
                self.requests.append(event)
            elif isinstance(event, h11.EndOfMessage):
                return True


def exchange(answers: list[bytes | None], *calls: tuple[str, int | None], then_close: bool = False,
             latency_s: float = 0.0, read_timeout_s: float = 5.0) -> tuple[list, ScriptedServer]:
    """Make `calls` ((method, max_bytes) each) in turn on one HttpConnection; each outcome is the
    (status, headers, body) returned or the ApiConnectionError raised."""
    server = ScriptedServer(answers, then_close, latency_s)

    async def scenario() -> list:
        async with server as url:
            connection = HttpConnection(url, {"Authorization": "Bearer test"}, 2.0, read_timeout_s)
            outcomes = []
            for method, max_bytes in calls:
                body = b"{}" if method == "POST" else None
                try:
                    outcomes.append(await connection.request(method, "/v2/bot/x", {}, body, max_bytes))
                except ApiConnectionError as exc:
                    outcomes.append(exc)
            connection.close()
            return outcomes

    return asyncio.run(asyncio.wait_for(scenario(), TIMEOUT_S)), server


@pytest.mark.parametrize("interim", [b"HTTP/1.1 100 Continue\r\n\r\n",
                                     b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
                                     b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n"])
def test_1xx_answers_before_the_final_one_are_skipped(interim):
    (outcome,), _ = exchange([interim + OK], ("POST", None))
    status, headers, body = outcome
    assert (status, body) == (200, b'{"ok":true}')
    assert "link" not in headers and headers["content-type"] == "application/json"


def test_a_chunked_body_over_the_limit_is_too_large_never_a_truncated_success():
    """A 300-byte chunk against a limit of 150: 'too large' (body None), not 200 with 150 bytes."""
    answer = (b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
              + b"12c\r\n" + b"x" * 300 + b"\r\n0\r\n\r\n")
    (outcome,), _ = exchange([answer], ("GET", 150))
    assert outcome[0] == 200 and outcome[2] is None


def test_a_chunk_cut_short_is_an_error_never_a_truncated_success():
    """The first 100 bytes of a 300-byte chunk, then the connection closes: below the limit of 150
    so far, and still no success."""
    answer = (b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
              + b"12c\r\n" + b"x" * 100)
    (outcome,), _ = exchange([answer], ("GET", 150), then_close=True)
    assert isinstance(outcome, ApiConnectionError) and outcome.sent


def test_a_content_length_over_the_limit_is_refused_from_the_header():
    (outcome,), _ = exchange([b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n"], ("GET", 150))
    assert outcome[0] == 200 and outcome[2] is None


@pytest.mark.parametrize("framing", [
    b"Content-Length: 11\r\nContent-Length: 2\r\n",       # two values
    b"Content-Length: 11\r\nContent-Length: 11\r\n",      # the same one twice
    b"Content-Length: 11, 11\r\n",
])
def test_two_content_lengths_are_an_error_that_says_the_request_was_sent(framing):
    answer = b"HTTP/1.1 200 OK\r\n" + framing + b"\r\n{\"ok\":true}"
    (outcome,), _ = exchange([answer], ("POST", None))
    assert isinstance(outcome, ApiConnectionError) and outcome.sent
    assert "malformed response" in str(outcome)


MALFORMED = {
    "Transfer-Encoding beside Content-Length":
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 11\r\n\r\nb\r\n{\"ok\":true}\r\n0\r\n\r\n",
    "transfer coding not asked for": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "chunk size 0x": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0xb\r\n{\"ok\":true}\r\n0\r\n\r\n",
    "chunk size -1": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n{\"ok\":true}\r\n0\r\n\r\n",
    "chunk data not followed by CRLF":
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nb\r\n{\"ok\":true}XX0\r\n\r\n",
    "Content-Length with a Unicode digit": "HTTP/1.1 200 OK\r\nContent-Length: ²\r\n\r\n{}".encode(),
    "bare LF in a header": b"HTTP/1.1 200 OK\r\nX-A: b\nContent-Length: 11\r\n\r\n{\"ok\":true}",
    "NUL in a header": b"HTTP/1.1 200 OK\r\nX-A: b\x00c\r\nContent-Length: 11\r\n\r\n{\"ok\":true}",
    "not HTTP at all": b"hello there\r\n\r\n",
    "101 nobody asked for": b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n" + OK,
    "body ending only with the connection": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"ok\":true}",
    "headers longer than 64 KiB": b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70_000 + b"\r\nContent-Length: 11\r\n\r\n{\"ok\":true}",
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_framing_is_an_error_and_the_next_call_gets_a_new_connection(case):
    """The second call must not read what is left of the first answer as its own."""
    (first, second), server = exchange([MALFORMED[case], OK], ("POST", None), ("POST", None))
    assert isinstance(first, ApiConnectionError) and first.sent, first
    assert second[:1] == (200,) and second[2] == b'{"ok":true}'
    assert server.connections == 2


def test_a_body_cut_short_by_the_connection_is_an_error_not_a_success():
    (outcome,), _ = exchange([b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"ok\""], ("POST", None),
                             then_close=True)
    assert isinstance(outcome, ApiConnectionError) and outcome.sent


@pytest.mark.parametrize("status", [b"204 No Content", b"304 Not Modified"])
def test_204_and_304_have_no_body_and_the_connection_is_used_again(status):
    answer = b"HTTP/1.1 " + status + b"\r\nContent-Length: 11\r\n\r\n"
    (first, second), server = exchange([answer, OK], ("GET", None), ("GET", None))
    assert first == (int(status[:3]), {"content-length": "11"}, b"")
    assert second[0] == 200 and server.connections == 1


def test_a_head_answer_has_no_body_and_the_connection_is_used_again():
    """Its Content-Length says how long a GET's body would be; no body follows."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n"
    (first, second), server = exchange([head, OK], ("HEAD", None), ("GET", None))
    assert first[0] == 200 and first[2] == b""
    assert second[2] == b'{"ok":true}' and server.connections == 1
    assert [r.method for r in server.requests] == [b"HEAD", b"GET"]


def test_bytes_after_an_answer_are_not_read_as_the_next_ones():
    """A second answer nobody asked for rides behind the first: the next call opens a new
    connection and gets its own answer."""
    smuggled = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n{\"forged\":1}"
    (first, second), server = exchange([OK + smuggled, OK], ("POST", None), ("POST", None))
    assert first[2] == b'{"ok":true}' and second[2] == b'{"ok":true}'
    assert server.connections == 2


def test_no_connection_means_not_sent():
    async def scenario():
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()   # nothing listens on the port now
        connection = HttpConnection(f"http://127.0.0.1:{port}", {}, 2.0, 5.0)
        with pytest.raises(ApiConnectionError) as caught:
            await connection.request("POST", "/v2/bot/x", {}, b"{}")
        return caught.value

    assert asyncio.run(scenario()).sent is False


def test_no_answer_within_the_read_timeout_is_an_error_that_says_the_request_was_sent():
    (outcome,), _ = exchange([OK], ("POST", None), latency_s=30.0, read_timeout_s=0.5)
    assert isinstance(outcome, ApiConnectionError) and outcome.sent
    assert "no answer within api_read_timeout_s=0.5" in str(outcome)


def test_each_call_gets_the_whole_read_timeout_on_a_connection_used_again():
    """Four calls answered after 0.3 s each on one connection with a read timeout of 0.5 s: the
    timeout counts from each call, not from the first."""
    (outcomes, server) = exchange([OK] * 4, *[("POST", None)] * 4, latency_s=0.3, read_timeout_s=0.5)
    assert [outcome[0] for outcome in outcomes] == [200] * 4
    assert server.connections == 1
