"""The chunked transfer coding shared by the receiver's server and the rate limiter's client."""
import pytest
from hypothesis import given, strategies as st

from frontdesk.protocol.http1 import ChunkError, read_chunks


def chunked(parts: list[bytes], trailer: bytes = b"") -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts if p) + b"0\r\n" + trailer + b"\r\n"


@given(st.lists(st.binary(min_size=1, max_size=50), max_size=6), st.data())
def test_a_body_fed_in_any_pieces_comes_out_whole(parts, data):
    encoded = chunked(parts, trailer=b"X-Check: 1\r\n") + b"NEXT"
    cuts = sorted(data.draw(st.lists(st.integers(0, len(encoded)), max_size=5)))
    buffer, body, complete = bytearray(), bytearray(), False
    for start, end in zip([0, *cuts], [*cuts, len(encoded)]):
        buffer += encoded[start:end]
        complete = complete or read_chunks(buffer, body, None)
    assert complete and bytes(body) == b"".join(parts)
    assert bytes(buffer) == b"NEXT"    # the next request's bytes are left alone


def test_a_body_past_the_limit_stops_the_reading():
    buffer, body = bytearray(chunked([b"a" * 10, b"b" * 10])), bytearray()
    assert read_chunks(buffer, body, limit=15) and len(body) > 15


def test_a_size_that_is_not_hex_is_an_error():
    with pytest.raises(ChunkError, match="bad chunk size"):
        read_chunks(bytearray(b"zz\r\nhello\r\n"), bytearray(), None)
