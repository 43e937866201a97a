"""The frame codec: round trips, split and merged reads, size limits, garbage, blocking reads."""
import io

import msgpack
import pytest
from hypothesis import given, settings, strategies as st

from frontdesk.protocol.frames import HEADER, FrameDecoder, ProtocolError, encode_frame, pack, unpack
from tests.frame_stream import read_frame, write_frame

# Every value the pinned options can carry: nil, bool, 64-bit ints, floats, str, bin, arrays, str-keyed maps.
values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats(allow_nan=False)
    | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=20,
)


@given(values)
def test_round_trip_keeps_type_and_value(value):
    assert unpack(pack(value)) == value
    assert FrameDecoder().feed(encode_frame(value)) == [value]


def test_str_is_msgpack_str_and_bytes_is_bin():
    assert pack("é") == b"\xa2\xc3\xa9"   # fixstr, UTF-8
    assert pack(b"\x01") == b"\xc4\x01\x01"  # bin8
    assert encode_frame([1, 2]) == b"\x00\x00\x00\x03\x92\x01\x02"


@settings(max_examples=50)
@given(st.lists(values, min_size=1, max_size=8), st.data())
def test_frames_split_anywhere_and_merged_decode_the_same(items, data):
    stream = b"".join(encode_frame(v) for v in items)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder, decoded = FrameDecoder(), []
    for start, end in zip([0, *cuts], [*cuts, len(stream)]):
        decoded += decoder.feed(stream[start:end])
    assert decoded == items
    assert decoder.buffered == 0


def test_byte_by_byte_and_partial_frame_buffered():
    frame = encode_frame({"k": "v"})
    decoder = FrameDecoder()
    for byte in frame[:-1]:
        assert decoder.feed(bytes([byte])) == []
    assert decoder.buffered == len(frame) - 1
    assert decoder.feed(frame[-1:]) == [{"k": "v"}]


def test_oversize_length_rejected_from_the_header_alone():
    decoder = FrameDecoder(max_frame_bytes=100)
    with pytest.raises(ProtocolError, match="frame length 101 exceeds the maximum 100"):
        decoder.feed(HEADER.pack(101))  # no body sent: nothing was waited for or allocated
    assert FrameDecoder(max_frame_bytes=100).feed(encode_frame(b"x" * 90)) == [b"x" * 90]


def test_text_on_the_stream_is_named_as_such():
    with pytest.raises(ProtocolError, match=r"first bytes: 68 65 6c 6c.*writing text"):
        FrameDecoder().feed(b"hello world\n")


@pytest.mark.parametrize("body, reason", [
    (b"\xc1", "not valid msgpack"),
    (b"\xa2\xff\xfe", "not valid msgpack: 'utf-8' codec"),
    (b"\x92\x01", "not valid msgpack"),               # truncated array
    (b"\x01\x02", "more than one msgpack value"),
    (b"\x81\x01\x02", "not valid msgpack: int is not allowed for map key"),
    (b"\xd4\x05\x00", "ext type 5 is not allowed"),
    (b"\x91" * 100_000, "not valid msgpack: StackError"),
    (b"", "not valid msgpack"),
])
def test_garbage_is_a_clear_protocol_error(body, reason):
    with pytest.raises(ProtocolError, match=reason):
        FrameDecoder().feed(HEADER.pack(len(body)) + body)


def test_read_frame_and_write_frame_over_a_stream():
    stream = io.BytesIO()
    write_frame(stream, [0, 1, "event", []])
    write_frame(stream, {"x": b"\x00"})
    stream.seek(0)
    assert read_frame(stream) == [0, 1, "event", []]
    assert read_frame(stream) == {"x": b"\x00"}
    with pytest.raises(EOFError):
        read_frame(stream)


@pytest.mark.parametrize("data, reason", [
    (b"\x00\x00", "stream ended inside a frame"),
    (b"\x00\x00\x00\x05\x01", "stream ended inside a frame"),
    (HEADER.pack(1 << 30), "exceeds the maximum"),
])
def test_read_frame_truncated_or_oversize(data, reason):
    with pytest.raises(ProtocolError, match=reason):
        read_frame(io.BytesIO(data))


def test_decoder_refuses_ext_even_when_packed_by_msgpack():
    body = msgpack.packb(msgpack.ExtType(1, b"x"))
    with pytest.raises(ProtocolError, match="ext type 1"):
        unpack(body)
