"""Bytes in, msgpack-rpc messages out: the layer under every frame-speaking client of a child.

The frame codec (protocol/frames.py) and the message shapes (protocol/rpc.py) in one step, as
pynvim's msgpack_stream is under its sessions: the dispatcher's loop-driven children
(framed.py) and the blocking client of the conformance kit and the tests (client.py) both read
their child's stdout through it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import msgpack

from .. import rpc
from ..frames import DEFAULT_MAX_FRAME_BYTES, FrameDecoder, ProtocolError, pack, unpack


class MessageStream:
    """Decodes one child's stdout: frames as they complete, each checked as an rpc message."""

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES):
        self._decoder = FrameDecoder(max_frame_bytes)

    def feed(self, data: bytes) -> Iterator[rpc.Message]:
        """The messages `data` completes, one at a time: a consumer that stops early (the child
        broke the protocol) leaves the rest unread. Raises ProtocolError, naming the problem,
        at the first frame or message that is not one."""
        for value in self._decoder.feed(data):
            yield rpc.parse_message(value)

    def end(self) -> None:
        """The stream ended. Raises ProtocolError when it ended inside a frame."""
        if self._decoder.buffered:
            raise ProtocolError(f"stdout ended inside a frame ({self._decoder.buffered} bytes)")


RESPONSE_HEADER = bytes([0x94, rpc.RESPONSE])   # fixarray of 4, then the kind 1: a response


@dataclass(frozen=True, slots=True)
class RawResponse:
    """A response read only as far as its msgid: `tail` holds its error and result exactly as
    they came (packed), to be passed on under another msgid without decoding and encoding them."""
    msgid: int
    tail: bytes

    def frame_for(self, msgid: int) -> bytes:
        """The same response as a frame answering `msgid`."""
        body = RESPONSE_HEADER + pack(msgid) + self.tail
        return len(body).to_bytes(4, "big") + body


def read_relayed(body: memoryview):
    """A response's header (msgpack's own Unpacker reads it) and the rest as bytes; any other
    message decoded whole."""
    if body[:2] != RESPONSE_HEADER:
        return unpack(body)
    reader = msgpack.Unpacker(max_buffer_size=len(body))
    reader.feed(body)
    try:
        reader.read_array_header()
        reader.skip()                # the kind
        msgid = reader.unpack()
    except (ValueError, msgpack.UnpackException) as exc:
        raise ProtocolError(f"frame body is not a valid response: {str(exc) or type(exc).__name__}") from None
    return RawResponse(rpc.check_msgid(msgid), bytes(body[reader.tell():]))


class RelayStream(MessageStream):
    """A MessageStream whose responses stay packed (RawResponse): the dispatcher's end of the rate
    limiter pipe, where an answer is only passed on to the handler that asked."""

    def feed(self, data: bytes) -> Iterator[rpc.Message | RawResponse]:
        for value in self._decoder.feed(data, read_relayed):
            yield value if type(value) is RawResponse else rpc.parse_message(value)
