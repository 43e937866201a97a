"""msgpack-rpc message shapes: typed round trips and clear errors for every malformed shape."""
import pytest

from frontdesk.protocol.frames import FrameDecoder, ProtocolError, encode_frame
from frontdesk.protocol.rpc import MAX_MSGID, MsgIds, Notification, Request, Response, error_value, parse_message


@pytest.mark.parametrize("message", [
    Request(0, "hello", [{"protocol": [1]}]),
    Request(MAX_MSGID, "event", [{}]),
    Response(7, None, {"ok": True}),
    Response(7, {"message": "nope", "retry": False}, None),
    Notification("progress", ["01H"]),
])
def test_messages_round_trip_through_frames(message):
    (value,) = FrameDecoder().feed(encode_frame(message.to_wire()))
    assert parse_message(value) == message


@pytest.mark.parametrize("value, reason", [
    ("hello", "must be a non-empty array"),
    ([], "must be a non-empty array"),
    ([0, 1, "m"], "unknown message shape"),
    ([3, 1, "m", []], "unknown message shape"),
    ([True, 1, None, None], "unknown message shape: type 'True'"),
    ([0, -1, "m", []], "msgid must be an unsigned 32-bit integer"),
    ([0, MAX_MSGID + 1, "m", []], "msgid must be an unsigned 32-bit integer"),
    ([1, "1", None, None], "msgid must be"),
    ([0, 1, "", []], "method must be a non-empty string"),
    ([2, 5, []], "method must be a non-empty string"),
    ([0, 1, "m", {}], "params must be an array, got dict"),
])
def test_malformed_messages_are_named(value, reason):
    with pytest.raises(ProtocolError, match=reason):
        parse_message(value)


def test_msgids_wrap_at_32_bits():
    ids = MsgIds(start=MAX_MSGID - 1)
    assert [ids.next() for _ in range(3)] == [MAX_MSGID - 1, MAX_MSGID, 0]


def test_error_value():
    assert error_value("x") == {"message": "x"}
    assert error_value("x", retry=False, status=400) == {"message": "x", "retry": False, "status": 400}
