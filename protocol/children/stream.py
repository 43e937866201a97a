"""Bytes in, msgpack-rpc messages out: the layer under every frame-speaking client of a child.

The frame codec (protocol/frames.py) and the message shapes (protocol/rpc.py) in one step, as
pynvim's msgpack_stream is under its sessions: the dispatcher's loop-driven children
(framed.py) and the blocking client of the conformance kit and the tests (client.py) both read
their child's stdout through it.
"""
from __future__ import annotations

from typing import Iterator

from .. import rpc
from ..frames import DEFAULT_MAX_FRAME_BYTES, FrameDecoder, ProtocolError


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
