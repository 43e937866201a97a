"""Blocking frame I/O on a file-like stream, for the tests' raw-protocol handlers
(tests/handlers/scripted.py, tests/handlers/broken.py): one frame read or written at a time,
where frontdesk's own processes decode whatever arrives with protocol/frames.py's FrameDecoder."""
from __future__ import annotations

from frontdesk.protocol.frames import DEFAULT_MAX_FRAME_BYTES, HEADER, ProtocolError, encode_frame, unpack


def read_exactly(stream, count: int) -> bytes | None:
    """Read count bytes from a binary stream; None at a clean EOF before the first byte."""
    chunks = []
    remaining = count
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            if remaining == count:
                return None
            raise ProtocolError(f"stream ended inside a frame ({count - remaining} of {count} bytes)")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_frame(stream, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES):
    """Blocking read of one value from a binary stream. Raises EOFError at a clean end."""
    header = read_exactly(stream, HEADER.size)
    if header is None:
        raise EOFError("stream closed")
    (length,) = HEADER.unpack(header)
    if length > max_frame_bytes:
        raise ProtocolError(
            f"frame length {length} exceeds the maximum {max_frame_bytes} bytes "
            f"(header bytes: {header.hex(' ')})"
        )
    body = read_exactly(stream, length)
    if body is None:
        raise ProtocolError(f"stream ended after a frame header announcing {length} bytes")
    return unpack(body)


def write_frame(stream, value) -> None:
    stream.write(encode_frame(value))
    stream.flush()
