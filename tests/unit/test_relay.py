"""The rate limiter's answers relayed without decoding (protocol/children/stream.py, RelayStream):
only a response's header is read; its error and result go on to the handler as the bytes they
came in, under the handler's msgid."""
from __future__ import annotations

import pytest

from frontdesk.protocol import rpc
from frontdesk.protocol.children.stream import RawResponse, RelayStream
from frontdesk.protocol.frames import ProtocolError, encode_frame
from tests.unit.dispatcher_world import World
from tests.unit.test_arbiter import call, responses, running

PROFILE = {"userId": "U4af4980629a0c4b5e6c3f1b6d6b7a8c9", "displayName": "Ann", "cached": True}


@pytest.mark.parametrize("msgid", [0, 127, 128, 65535, 65536, rpc.MAX_MSGID])
@pytest.mark.parametrize("error, result", [(None, PROFILE), ({"message": "Invalid reply token", "status": 400,
                                                              "retryable": False}, None), (None, b"\x00\xff" * 10)])
def test_a_response_is_read_to_its_msgid_and_passed_on_as_the_same_bytes(msgid, error, result):
    (answer,) = RelayStream().feed(encode_frame([1, msgid, error, result]))
    assert type(answer) is RawResponse and answer.msgid == msgid
    for handler_msgid in (0, 9, 300, rpc.MAX_MSGID):
        assert answer.frame_for(handler_msgid) == encode_frame([1, handler_msgid, error, result])


def test_other_messages_are_decoded_whole_and_frames_may_come_split():
    stats = encode_frame([2, "stats", [{"calls": 3}]])
    answer = encode_frame([1, 5, None, {"ok": True}])
    stream = RelayStream()
    data = stats + answer
    seen = [*stream.feed(data[:7]), *stream.feed(data[7:len(stats) + 3]), *stream.feed(data[len(stats) + 3:])]
    assert seen[0] == rpc.Notification("stats", [{"calls": 3}])
    assert seen[1] == RawResponse(5, bytes.fromhex("c0") + encode_frame({"ok": True})[4:])


@pytest.mark.parametrize("body, problem", [
    (bytes([0x94, 0x01, 0xa1, 0x35, 0xc0, 0xc0]), "msgid must be an unsigned 32-bit integer, got str '5'"),
    (bytes([0x94, 0x01, 0xcd, 0x01]), "frame body is not a valid response"),
])
def test_a_response_whose_header_is_broken_is_a_protocol_error(body, problem):
    with pytest.raises(ProtocolError, match=problem):
        list(RelayStream().feed(len(body).to_bytes(4, "big") + body))


def test_a_relayed_answer_reaches_the_handler_under_its_own_msgid(tmp_path):
    world = World(tmp_path).open()
    try:
        running(world)
        (event,) = world.append({"U1": ["a"]})
        world.turn()
        pipes = call(world, event, msgid=41)
        (request,) = world.ratelimiter.requests("call")
        (raw,) = RelayStream().feed(encode_frame([1, request.msgid, None, PROFILE]))
        world.ratelimiter.say(raw)
        assert [(r.msgid, r.error, r.result) for r in responses(pipes)] == [(41, None, PROFILE)]
        assert world.arbiter.apilink.pending == {}
    finally:
        world.close()
