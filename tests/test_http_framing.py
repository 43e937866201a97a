"""Request smuggling and malformed framing against a real `frontdesk receiver` process: raw bytes on
127.0.0.1, a real SQLite file.

Each case is a signed webhook whose framing is ambiguous or malformed, with a second signed
webhook pipelined behind it (the request a proxy that reads the framing the other way would not
see). Each must get exactly one 4xx, the connection closed, and neither event stored. Then a
differential property: whatever h11 (a strict HTTP/1.1 parser written independently of llhttp)
refuses, the receiver refuses and stores nothing."""
from __future__ import annotations

import re
import socket
import uuid

import h11
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from frontdesk.store import open_store
from tests.helpers import sign
from tests.test_receiver import MAX_BODY, SECRET, Receiver, make_body, make_event

TIMEOUT_S = 10.0
REFUSALS = {400, 411, 413, 431, 501, 505}   # statuses of a request the server could not read


@pytest.fixture(scope="module")
def receiver(tmp_path_factory):
    running = Receiver(tmp_path_factory.mktemp("framing"))
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def store(receiver):
    opened = open_store(receiver.store_url)
    try:
        yield opened
    finally:
        opened.close()


def stored_now(store) -> set[str]:
    """Event ids stored since the last call (claimed, so each is seen once)."""
    return {doc["o"]["_id"] for doc in store.claim("framing-test", 10_000, 3600.0)}


def exchange(port: int, data: bytes) -> tuple[list[int], bytes]:
    """Send `data`, then end our side; the statuses of every answer until the server closed, and
    the raw answer. Fails the test if the server does not close within TIMEOUT_S."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass   # closed with our bytes unread: what it answered is in `answer`
        except TimeoutError:
            raise AssertionError(f"the connection was still open after {TIMEOUT_S}s: {answer[:300]!r}")
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)], answer


def webhook() -> tuple[str, bytes, str]:
    """A new event's id, a webhook body holding it, and that body's signature."""
    event = make_event()
    body = make_body(event)
    return event["webhookEventId"], body, sign(body, SECRET)


def plain(body: bytes, signature: str) -> bytes:
    """A signed webhook with nothing wrong in it."""
    return (f"POST /callback HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"X-Line-Signature: {signature}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def head(signature: str, *fields: str, line: str = "POST /callback HTTP/1.1") -> bytes:
    lines = [line, "Host: x", "Content-Type: application/json", f"X-Line-Signature: {signature}", *fields]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunk(data: bytes, size: str | None = None, end: bytes = b"\r\n") -> bytes:
    return (size if size is not None else f"{len(data):x}").encode() + b"\r\n" + data + end


LAST = b"0\r\n\r\n"

# name -> (the first request's bytes from (body, signature), the status it must get)
CASES = {
    "two Content-Lengths, the second 0": (
        lambda b, s: head(s, f"Content-Length: {len(b)}", "Content-Length: 0") + b, 400),
    "two Content-Lengths, the same": (
        lambda b, s: head(s, f"Content-Length: {len(b)}", f"Content-Length: {len(b)}") + b, 400),
    "chunked and Content-Length": (
        lambda b, s: head(s, "Transfer-Encoding: chunked", f"Content-Length: {len(b)}") + chunk(b) + LAST, 400),
    "Transfer-Encoding: gzip": (lambda b, s: head(s, "Transfer-Encoding: gzip", f"Content-Length: {len(b)}") + b, 400),
    "Transfer-Encoding: identity": (
        lambda b, s: head(s, "Transfer-Encoding: identity", f"Content-Length: {len(b)}") + b, 400),
    "Transfer-Encoding: xchunked": (
        lambda b, s: head(s, "Transfer-Encoding: xchunked", f"Content-Length: {len(b)}") + b, 400),
    "Transfer-Encoding: chunked, gzip": (
        lambda b, s: head(s, "Transfer-Encoding: chunked, gzip") + chunk(b) + LAST, 400),
    "Transfer-Encoding: gzip, chunked": (
        lambda b, s: head(s, "Transfer-Encoding: gzip, chunked") + chunk(b) + LAST, 501),
    "two Transfer-Encodings, chunked first": (
        lambda b, s: head(s, "Transfer-Encoding: chunked", "Transfer-Encoding: gzip") + chunk(b) + LAST, 400),
    "two Transfer-Encodings, chunked last": (
        lambda b, s: head(s, "Transfer-Encoding: identity", "Transfer-Encoding: chunked") + chunk(b) + LAST, 501),
    "chunked in HTTP/1.0": (
        lambda b, s: head(s, "Transfer-Encoding: chunked", line="POST /callback HTTP/1.0") + chunk(b) + LAST, 400),
    **{f"chunk size {size!r}": (lambda b, s, size=size: head(s, "Transfer-Encoding: chunked")
                                + chunk(b, size.replace("N", f"{len(b):x}")) + LAST, 400)
       for size in ("0xN", "N_0", "+N", " N ", "N ", "-0", "-1")},
    "chunk data not followed by CRLF": (
        lambda b, s: head(s, "Transfer-Encoding: chunked") + chunk(b, end=b"XX") + LAST, 400),
    "bare LF inside a header value": (
        lambda b, s: head(s, "X-A: b\nTransfer-Encoding: chunked", f"Content-Length: {len(b)}") + b, 400),
    "CR inside a header value": (lambda b, s: head(s, "X-A: b\rc", f"Content-Length: {len(b)}") + b, 400),
    "NUL inside a header value": (lambda b, s: head(s, "X-A: b\x00c", f"Content-Length: {len(b)}") + b, 400),
    "control character inside a header value": (
        lambda b, s: head(s, "X-A: b\x01c", f"Content-Length: {len(b)}") + b, 400),
    "NUL inside a header name": (lambda b, s: head(s, "X-\x00A: b", f"Content-Length: {len(b)}") + b, 400),
    "space before the colon": (lambda b, s: head(s, f"Content-Length : {len(b)}") + b, 400),
    "folded header line": (lambda b, s: head(s, "X-A: b", " c", f"Content-Length: {len(b)}") + b, 400),
    "control character in the method": (
        lambda b, s: head(s, f"Content-Length: {len(b)}", line="PO\x01ST /callback HTTP/1.1") + b, 400),
    "NUL in the target": (
        lambda b, s: head(s, f"Content-Length: {len(b)}", line="POST /call\x00back HTTP/1.1") + b, 400),
    "Content-Length: ² (a Unicode digit)": (lambda b, s: head(s, "Content-Length: ²") + b, 400),
    "Content-Length: +N": (lambda b, s: head(s, f"Content-Length: +{len(b)}") + b, 400),
    "Content-Length: 0xN": (lambda b, s: head(s, f"Content-Length: 0x{len(b):x}") + b, 400),
    "two X-Line-Signatures, the forged one first": (
        lambda b, s: head(s, f"Content-Length: {len(b)}").replace(
            b"X-Line-Signature", b"X-Line-Signature: AAAA\r\nX-Line-Signature", 1) + b, 400),
    "two X-Line-Signatures, the forged one last": (
        lambda b, s: head(s, "X-Line-Signature: AAAA", f"Content-Length: {len(b)}") + b, 400),
    "two Hosts": (lambda b, s: head(s, "Host: y", f"Content-Length: {len(b)}") + b, 400),
    "HTTP/1.1 without Host": (
        lambda b, s: head(s, f"Content-Length: {len(b)}").replace(b"Host: x\r\n", b"") + b, 400),
    "HTTP/2.0": (lambda b, s: head(s, f"Content-Length: {len(b)}", line="POST /callback HTTP/2.0") + b, 505),
    "HTTP/1.2": (lambda b, s: head(s, f"Content-Length: {len(b)}", line="POST /callback HTTP/1.2") + b, 505),
    "HTTP/0.9": (lambda b, s: head(s, f"Content-Length: {len(b)}", line="POST /callback HTTP/0.9") + b, 505),
    "a chunk larger than the body limit": (
        lambda b, s: head(s, "Transfer-Encoding: chunked") + f"{MAX_BODY + 1000:x}\r\n".encode() + b
        + b"x" * MAX_BODY, 413),
    "chunks adding up past the body limit": (
        lambda b, s: head(s, "Transfer-Encoding: chunked") + chunk(b"x" * 1000) * (MAX_BODY // 1000 + 1), 413),
    "a header section over 64 KiB": (
        lambda b, s: head(s, *[f"X-{i}: {'a' * 1000}" for i in range(70)], f"Content-Length: {len(b)}") + b, 431),
    "one header line over 64 KiB": (
        lambda b, s: head(s, f"X-Long: {'a' * 70_000}", f"Content-Length: {len(b)}") + b, 431),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_ambiguous_framing_gets_one_4xx_the_connection_closes_and_nothing_is_stored(receiver, store, case):
    build, status = CASES[case]
    first_id, body, signature = webhook()
    second_id, second_body, second_signature = webhook()
    stored_now(store)
    statuses, answer = exchange(receiver.port, build(body, signature) + plain(second_body, second_signature))
    assert statuses == [status], answer[:300]
    assert b"\r\nConnection: close\r\n" in answer
    assert not stored_now(store) & {first_id, second_id}


def test_a_valid_webhook_with_one_behind_it_stores_both(receiver, store):
    """The cases above fail for their framing, not for the way they are sent."""
    first_id, body, signature = webhook()
    second_id, second_body, second_signature = webhook()
    stored_now(store)
    statuses, _ = exchange(receiver.port, plain(body, signature) + plain(second_body, second_signature))
    assert statuses == [200, 200]
    assert stored_now(store) == {first_id, second_id}


def test_the_log_names_each_refusal_and_shows_no_traceback(receiver):
    _, body, signature = webhook()
    exchange(receiver.port, head(signature, "Content-Length: ²") + body)
    log = receiver.log()
    assert "status=400 reason='malformed request: Invalid character in Content-Length'" in log
    assert "Traceback" not in log


# --- the differential property --------------------------------------------------------------------

def _reference(data: bytes) -> tuple[bool, list[bytes]]:
    """What h11 makes of `data` as a server: (refused, the bodies of the requests it read whole
    before refusing or running out of bytes). One leniency of llhttp's is granted first, as RFC
    9112 section 3 lets a recipient: runs of spaces between the request line's three parts (no
    framing depends on them)."""
    line, crlf, rest = data.partition(b"\r\n")
    http = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
    http.receive_data(re.sub(rb"(?<=\S) {2,}(?=\S)", b" ", line) + crlf + rest)
    bodies: list[bytes] = []
    body = b""
    try:
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                if http.their_state is not h11.DONE or http.our_state is not h11.SEND_RESPONSE:
                    return False, bodies
                http.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
                http.send(h11.EndOfMessage())
                if http.their_state is not h11.DONE or http.our_state is not h11.DONE:
                    return False, bodies   # the connection ends here (Connection: close, HTTP/1.0)
                http.start_next_cycle()
            elif isinstance(event, h11.Request):
                body = b""
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                bodies.append(body)
                if http.their_state is h11.MUST_CLOSE:
                    return False, bodies   # the last request of the connection (HTTP/1.0, close)
    except h11.RemoteProtocolError:
        return True, bodies


def _mostly(valid, *others) -> st.SearchStrategy:
    """`valid` four times in five, else one of `others`: a request holds a fault or two, or none."""
    return st.integers(1, 5).flatmap(lambda roll: st.just(valid) if roll < 5 else st.sampled_from(others))


_text = st.text(st.sampled_from("ab0 \t,;=\r\n\x00\x01\x7fé"), max_size=4)


@st.composite
def requests_to_try(draw, body: bytes, signature: str) -> bytes:
    """A signed webhook sent with framing drawn from valid to malformed."""
    n = len(body)
    line = draw(_mostly("POST /callback HTTP/1.1", "POST /callback HTTP/1.0", "POST /callback HTTP/2.0",
                        "GET /callback HTTP/1.1", "POST  /callback HTTP/1.1", "POST /callback HTTP/1.1 "))
    fields = [f"X-Line-Signature: {signature}", "Content-Type: application/json"]
    fields += ["Host: x"] * draw(_mostly(1, 0, 2))
    fields += draw(_mostly([], [f"X-Line-Signature: {signature}"], ["X-Line-Signature: AAAA"]))
    framing = draw(_mostly("length", "chunked", "chunked", "both", "coding", "none"))
    if framing in ("length", "both"):
        fields += [f"Content-Length: {value}" for value in draw(_mostly(
            [str(n)], [str(n - 1)], [str(n + 1)], ["0"], [f"+{n}"], [f" {n} "], ["²"], [f"{n}, {n}"], [str(n)] * 2,
            [str(n), "0"]))]
    if framing in ("chunked", "both"):
        fields.append("Transfer-Encoding: chunked")
    if framing == "coding":
        fields += [f"Transfer-Encoding: {value}" for value in draw(st.sampled_from(
            [["Chunked"], ["gzip"], ["identity"], ["gzip, chunked"], ["chunked, gzip"], ["xchunked"], [" chunked"],
             ["chunked", "chunked"], ["gzip", "chunked"], ["chunked", "gzip"]]))]
    if draw(_mostly(False, True)):
        name = draw(st.text(st.sampled_from("Xa- :\x00é"), min_size=1, max_size=4))
        fields.insert(draw(st.integers(0, len(fields))), f"{name}: {draw(_text)}")
    fields = draw(st.permutations(fields))
    data = (line + "\r\n" + draw(_mostly("\r\n", "\n")).join(fields) + "\r\n\r\n").encode("utf-8")
    if framing not in ("chunked", "both", "coding"):
        return data + body
    cut = draw(st.integers(0, n))
    for part in (body[:cut], body[cut:]):
        if part:
            size = draw(_mostly("N", "n", "0N", "0xN", "N_0", "+N", "-N", " N", "N ", "N;ext=1", "N;", "-0", "ffffffff"))
            data += size.replace("N", f"{len(part):x}").replace("n", f"{len(part):X}").encode() + b"\r\n" + part
            data += draw(_mostly(b"\r\n", b"\n", b"", b"XX", b"\r"))
    trailer = draw(_mostly(b"", b"X-Line-Signature: AAAA\r\n"))
    return data + b"0\r\n" + trailer + draw(_mostly(b"\r\n", b"\n", b"", b"XX"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                    HealthCheck.too_slow])
@given(data=st.data())
def test_whatever_a_strict_parser_refuses_the_receiver_refuses_and_stores_nothing(receiver, store, data):
    first_id, body, signature = webhook()
    second_id, second_body, second_signature = webhook()
    first = data.draw(requests_to_try(body, signature), label="first request")
    sent = first + plain(second_body, second_signature)
    refused, read_whole = _reference(sent)
    stored_now(store)
    statuses, answer = exchange(receiver.port, sent)
    stored = stored_now(store)
    bodies = {first_id: body, second_id: second_body}
    # nothing is stored that the reference did not read as a whole request with that very body
    assert all(bodies[event_id] in read_whole for event_id in stored), (stored, answer[:300])
    if refused:
        assert statuses and statuses[-1] in REFUSALS, answer[:300]
        assert statuses.count(200) <= len(read_whole), answer[:300]
