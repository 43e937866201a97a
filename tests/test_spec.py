"""protocol/SPEC.md's byte-level example says what the codec really does."""
import json
import re
from pathlib import Path

from frontdesk.protocol.frames import FrameDecoder, encode_frame
from frontdesk.protocol.rpc import Request, Response, parse_message

SPEC = (Path(__file__).resolve().parents[1] / "protocol" / "SPEC.md").read_text(encoding="utf-8")
EXAMPLE = SPEC[SPEC.index("## 13. Byte-level example"):SPEC.index("## 14.")]
PAIRS = re.findall(r"```json\n(.*?)\n```\s*```hex\n(.*?)\n```", EXAMPLE, re.S)


def test_every_hex_block_decodes_to_the_value_shown_and_is_canonical():
    assert len(PAIRS) == 8
    for shown, hex_text in PAIRS:
        data = bytes.fromhex(hex_text)
        value = json.loads(shown)
        decoder = FrameDecoder()
        assert decoder.feed(data) == [value]
        assert decoder.buffered == 0
        assert encode_frame(value) == data


def test_the_exchange_is_a_consistent_session():
    messages = [parse_message(json.loads(shown)) for shown, _ in PAIRS]
    hello, accept, event, profile, profile_result, reply, reply_result, ack = messages
    assert hello == Request(0, "hello", hello.params) and accept.msgid == 0 and accept.error is None
    assert accept.result["protocol"] in hello.params[0]["protocol"]
    event_id = event.params[0]["o"]["_id"]
    assert [profile.params[0], reply.params[0]] == [event_id, event_id]
    assert (profile_result.msgid, reply_result.msgid) == (profile.msgid, reply.msgid)
    assert ack == Response(event.msgid, None, None)


def test_hand_decoded_frame_matches_frame_1():
    block = EXAMPLE.split("Frame 1 decoded by hand:\n\n```\n", 1)[1].split("```", 1)[0]
    annotated = b"".join(bytes.fromhex(re.match(r"((?:[0-9a-f]{2} )*[0-9a-f]{2})", line).group(1))
                         for line in block.splitlines())
    assert annotated == bytes.fromhex(PAIRS[0][1])
