"""The rate limiter's pipes to its dispatcher: messages read from stdin, answers written to stdout.

Frames in both directions (SPEC.md section 15). Answers queued in one loop turn go out in one
write. Reading stops while more than OUT_HIGH_WATER bytes of answers wait for the dispatcher to
take them, and what was read then waits in `inbox`: a handler asking for big answers (user data,
content) faster than it reads them once grew this process to 2 GB; now its calls wait in the pipe
and in the dispatcher, which bounds them per handler.
"""
from __future__ import annotations

import asyncio
import os
from collections import deque
from typing import Callable

from frontdesk.protocol.frames import FrameDecoder, ProtocolError, encode_frame
from frontdesk.protocol.reads import read_small
from frontdesk.protocol.rpc import parse_message

OUT_HIGH_WATER = 8 * 1024 * 1024   # answers not yet taken by the dispatcher: read no more calls past it


class _Reader(asyncio.Protocol):
    """Frames from the dispatcher; EOF (or broken framing) settles `ended`."""

    def __init__(self, pipe: "FramePipe", max_frame_bytes: int):
        self.pipe = pipe
        self.decoder = FrameDecoder(max_frame_bytes)
        self.ended: asyncio.Future = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        read_small(transport)
        self.pipe.reading(transport)

    def data_received(self, data: bytes) -> None:
        if self.ended.done():
            return
        try:
            for value in self.decoder.feed(data):
                self.pipe.inbox.append(parse_message(value))
        except ProtocolError as exc:
            self.ended.set_result(exc)
        self.pipe.take_input()

    def eof_received(self):
        if not self.ended.done():
            self.ended.set_result(ProtocolError(f"stdin ended inside a frame ({self.decoder.buffered} bytes "
                                                "buffered)") if self.decoder.buffered else None)
        return False

    def connection_lost(self, exc) -> None:
        if not self.ended.done():
            self.ended.set_result(None)


class FramePipe:
    """Reads messages from `in_fd` and hands each to `on_message`; writes messages to `out_fd`.

    Built, then `open(loop)` to write and `start_reading()`; `ended()` waits for the end of the
    input (None, or the ProtocolError that ended it); `close()` writes what is left, blocking."""

    def __init__(self, in_fd: int, out_fd: int, max_frame_bytes: int, on_message: Callable[[object], None],
                 high_water: int = OUT_HIGH_WATER):
        self._in_fd, self._out_fd = in_fd, out_fd
        self._max_frame_bytes = max_frame_bytes
        self._on_message = on_message
        self._high_water = high_water
        self._out = bytearray()
        self.inbox: deque = deque()            # messages read, not yet handled (take_input)
        self._reader: _Reader | None = None
        self._transport: asyncio.ReadTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flush_scheduled = False

    @property
    def unsent(self) -> int:
        """Bytes of answers the dispatcher has not taken yet."""
        return len(self._out)

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        """Ready to write on `loop` (reading starts with start_reading)."""
        self._loop = loop
        os.set_blocking(self._out_fd, False)

    async def start_reading(self) -> None:
        _, self._reader = await self._loop.connect_read_pipe(
            lambda: _Reader(self, self._max_frame_bytes), os.fdopen(self._in_fd, "rb", 0))

    def reading(self, transport: asyncio.ReadTransport) -> None:
        """The input's transport (it pauses and resumes reading)."""
        self._transport = transport

    async def ended(self) -> ProtocolError | None:
        """Wait for the input's end; then hand on what was read before it, whatever is unsent."""
        ended = await self._reader.ended
        self._transport.close()
        while self.inbox:
            self._on_message(self.inbox.popleft())
        return ended

    # --- output ---------------------------------------------------------------------------------------
    def write(self, message) -> None:
        """Queue a frame (raises EncodeError for a value msgpack cannot carry); everything queued
        in one loop turn goes out in one write."""
        self._out += encode_frame(message.to_wire())
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        while self._out:
            try:
                written = os.write(self._out_fd, self._out)
            except BlockingIOError:
                self._loop.add_writer(self._out_fd, self._writable)
                return
            except (BrokenPipeError, OSError):
                self._out.clear()   # the dispatcher is gone; its calls are re-made from the journal
                return
            del self._out[:written]
            if self.inbox:
                self.take_input()

    def _writable(self) -> None:
        self._loop.remove_writer(self._out_fd)
        self._flush()

    def close(self) -> None:
        """Write what is left, waiting for the dispatcher to take it (the last stats)."""
        self._flush()
        os.set_blocking(self._out_fd, True)
        if self._out:
            try:
                os.write(self._out_fd, self._out)
            except OSError:
                pass   # the dispatcher is gone
            self._out.clear()

    # --- input ----------------------------------------------------------------------------------------
    def take_input(self) -> None:
        """Hand on the messages read while the dispatcher takes our answers: past the high water
        of them unread, stop reading until it has taken them."""
        while self.inbox and len(self._out) < self._high_water:
            self._on_message(self.inbox.popleft())
        transport = self._transport
        if transport is not None and not transport.is_closing():
            if self.inbox:
                transport.pause_reading()
            else:
                transport.resume_reading()
