"""Frame codec: a 4-byte big-endian length, then exactly one msgpack value.

Framing is kept apart from sessions (who sends what, msgids, handshakes) so that the same
codec serves handler pipes, the rate limiter pipe and the conformance kit. The msgpack
options are pinned here and in SPEC.md: strings are msgpack str (UTF-8), byte strings are
msgpack bin, map keys must be strings, ext types are refused.
"""
from __future__ import annotations

import struct
from typing import Callable

import msgpack

HEADER = struct.Struct(">I")
DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024
# Room in a frame around the payload it carries (an event document's fields around the LINE event,
# an API answer's around downloaded content): settings keep their payload limits this far below
# max_frame_bytes (protocol/config.py).
FRAME_ENVELOPE_BYTES = 1024


class ProtocolError(Exception):
    """The peer broke the wire protocol; the message says how. The stream cannot be trusted after it."""


def _refuse_ext(code, data):
    raise ProtocolError(f"msgpack ext type {code} is not allowed in frontdesk frames")


class EncodeError(ValueError):
    """A value msgpack cannot carry (an integer outside int64/uint64, nesting deeper than msgpack's
    limit, a lone surrogate, a type it does not know); the message says which."""


def pack(value) -> bytes:
    """One msgpack value with the pinned options (str as str, bytes as bin); EncodeError when
    msgpack refuses it (msgpack's own C encoder checks, so this costs nothing per frame)."""
    try:
        return msgpack.packb(value, use_bin_type=True)
    except (OverflowError, ValueError, TypeError) as exc:
        raise EncodeError(f"cannot be encoded as msgpack: {exc}") from None


_ARRAY_HEADERS = msgpack.Packer()


def pack_array_header(count: int) -> bytes:
    """The msgpack header of an array of `count` values: packed values appended to it make the
    array, so a frame can be built from values packed once (a batch of events)."""
    return _ARRAY_HEADERS.pack_array_header(count)


def unpack(payload: bytes):
    """Decode exactly one msgpack value with the pinned options, or raise ProtocolError."""
    try:
        return msgpack.unpackb(
            payload, raw=False, strict_map_key=True, use_list=True, ext_hook=_refuse_ext
        )
    except ProtocolError:
        raise
    except msgpack.ExtraData:
        raise ProtocolError("frame holds more than one msgpack value") from None
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        reason = str(exc) or type(exc).__name__  # msgpack's StackError (nesting too deep) has no text
        raise ProtocolError(f"frame body is not valid msgpack: {reason}") from None


def encode_frame(value) -> bytes:
    body = pack(value)
    return HEADER.pack(len(body)) + body


class FrameDecoder:
    """Turns a byte stream into values; accepts frames split across reads and many per read.

    The length is checked against max_frame_bytes as soon as the 4 header bytes are in, so an
    oversize or garbage length never causes a large allocation.
    """

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES):
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete frame (non-zero at EOF = truncated)."""
        return len(self._buffer)

    def feed(self, data: bytes, decode: Callable[[memoryview], object] = unpack) -> list:
        """The values of every frame completed by `data`. Frames are decoded in place (a view, not
        a copy), and `data` is only buffered when a frame is left incomplete, as it rarely is.
        `decode` turns a frame's body into its value (a relay reads only a body's header)."""
        if self._buffer:
            self._buffer += data
            source = self._buffer
        else:
            source = data
        values = []
        offset = 0
        size = len(source)
        with memoryview(source) as view:
            while size - offset >= HEADER.size:
                (length,) = HEADER.unpack_from(source, offset)
                if length > self.max_frame_bytes:
                    preview = bytes(view[offset : offset + 16]).hex(" ")
                    raise ProtocolError(
                        f"frame length {length} exceeds the maximum {self.max_frame_bytes} bytes "
                        f"(first bytes: {preview}); is something writing text into the frame stream?"
                    )
                end = offset + HEADER.size + length
                if size < end:
                    break
                values.append(decode(view[offset + HEADER.size : end]))
                offset = end
        if source is data:
            self._buffer += data[offset:]
        elif offset:
            del self._buffer[:offset]
        return values
