"""HTTP/1.1 framing shared by frontdesk's own HTTP server (protocol/http_server.py) and client (the
rate limiter): the chunked transfer coding, read from a buffer that fills as bytes arrive."""
from __future__ import annotations


class ChunkError(ValueError):
    """The chunked body is malformed; the message says where."""


def read_chunks(buffer: bytearray, body: bytearray, limit: int | None) -> bool:
    """Move every whole chunk from `buffer` (consumed) to `body`; True once the last chunk and its
    trailer are in. Stops early, returning True with the body cut, once `body` passes `limit`
    (the caller checks the length). Raises ChunkError for a size line that is not hex."""
    while True:
        line_end = buffer.find(b"\r\n")
        if line_end < 0:
            return False
        size_text = bytes(buffer[:line_end]).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise ChunkError(f"bad chunk size {size_text[:20]!r}") from None
        if size == 0:   # the last chunk: then trailer lines, then an empty line
            end = buffer.find(b"\r\n\r\n", line_end)
            if end < 0:
                return False
            del buffer[:end + 4]
            return True
        if limit is not None and len(body) + size > limit:
            body += buffer[line_end + 2:line_end + 2 + size]
            return True
        if len(buffer) < line_end + 2 + size + 2:
            return False
        body += buffer[line_end + 2:line_end + 2 + size]
        del buffer[:line_end + 2 + size + 2]
