"""The Python SDK's session for `async def` handlers: one thread, one asyncio loop, no hand-offs.

The threaded session (handlers/sdk.py) wakes a worker thread for each event and again for each
API answer: three thread wake-ups per echo event. Here the loop reads stdin when it is readable,
runs each event (or batch) as a task, and an API call is a future that the reader completes: the
handler's code and the frames meet on one thread. The answers of one loop turn go out in one
write; what the pipe cannot take now waits for it to be writable while stdin is still read, so
neither side blocks the other (SPEC.md section 2).
"""
from __future__ import annotations

import asyncio
import logging
import os

from frontdesk.protocol.frames import DEFAULT_MAX_FRAME_BYTES, FrameDecoder, ProtocolError, encode_frame
from frontdesk.protocol.reads import READ_SIZE
from frontdesk.protocol.rpc import MsgIds, Notification, Request, Response, error_value, parse_message

from .sdk import (BATCH, EXIT_OK, EXIT_PROTOCOL_ERROR, EXIT_UNSUPPORTED, SKIPPED, Api, ApiError, Event,
                  batch_entries, nack_value, answer_hello)

log = logging.getLogger("frontdesk.sdk")
GONE = {"message": "dispatcher gone: stdin closed", "status": 0, "retryable": True}


class LoopSession:
    """One protocol session on an asyncio loop over two private descriptors; `run()` serves until
    stdin ends and returns the exit status (SPEC.md section 12)."""

    def __init__(self, bot, in_fd: int, out_fd: int):
        self.bot = bot
        self.in_fd, self.out_fd = in_fd, out_fd
        self.max_frame_bytes = DEFAULT_MAX_FRAME_BYTES
        self.decoder = FrameDecoder(self.max_frame_bytes)
        self.calls: dict[int, asyncio.Future] = {}
        self.msgids = MsgIds()
        self.dispatcher_gone = False
        self.problem = ""                      # why the session ended with a protocol error
        self.loop: asyncio.AbstractEventLoop | None = None
        self._out = bytearray()
        self._flush_queued = False
        self._watching_out = False
        self._tasks: set[asyncio.Task] = set()
        self._ended: asyncio.Future | None = None
        self._greeted = False

    # --- writing -------------------------------------------------------------------------------
    def send(self, message) -> None:
        """Queue one frame; the loop writes what the turn queued in one go."""
        frame = encode_frame(message.to_wire())
        if len(frame) - 4 > self.max_frame_bytes:
            raise ValueError(f"frame of {len(frame) - 4} bytes exceeds max_frame_bytes {self.max_frame_bytes}")
        self._out += frame
        if not self._flush_queued and not self._watching_out:
            self._flush_queued = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_queued = False
        try:
            written = os.write(self.out_fd, self._out) if self._out else 0
        except BlockingIOError:
            written = 0
        except OSError as exc:        # EPIPE: the dispatcher is gone, stdin reaches EOF next
            log.warning("event=answer_failed error=%r", str(exc))
            self._out.clear()
            return
        del self._out[:written]
        if self._out and not self._watching_out:
            self._watching_out = True
            self.loop.add_writer(self.out_fd, self._on_writable)

    def _on_writable(self) -> None:
        self.loop.remove_writer(self.out_fd)
        self._watching_out = False
        self._flush()

    def notify(self, method: str, params: list) -> None:
        self.send(Notification(method, params))

    async def call(self, method: str, params: list):
        """An API call: a future the reader completes with the dispatcher's answer."""
        if self.dispatcher_gone:
            raise ApiError(GONE["message"])
        msgid = self.msgids.next()
        answer = self.loop.create_future()
        self.calls[msgid] = answer
        try:
            self.send(Request(msgid, method, params))
        except BaseException:
            del self.calls[msgid]
            raise
        error, result = await answer
        if error is not None:
            raise ApiError.from_wire(error)
        return result

    # --- events --------------------------------------------------------------------------------
    async def _handle_events(self, entries: list) -> None:
        """One event, or a batch of one conversation's events in order (handlers/sdk.py's rules)."""
        nacked = False
        for msgid, params in entries:
            if nacked:
                self._answer(msgid, SKIPPED)
                continue
            error = None
            try:
                event = Event(params[0])
                await self.bot.dispatch_async(event, Api(self, event.id))
            except BaseException as exc:  # noqa: BLE001 - user code: every failure becomes a nack
                error = nack_value(exc, params)
                nacked = True
            self._answer(msgid, error)

    def _answer(self, msgid: int, error) -> None:
        try:
            self.send(Response(msgid, error, None))
        except ValueError as exc:
            log.warning("event=answer_failed msgid=%s error=%r", msgid, str(exc))

    # --- reading -------------------------------------------------------------------------------
    def run(self) -> int:
        return asyncio.run(self._main())

    async def _main(self) -> int:
        self.loop = asyncio.get_running_loop()
        os.set_blocking(self.in_fd, False)
        os.set_blocking(self.out_fd, False)
        self._ended = self.loop.create_future()
        self.loop.add_reader(self.in_fd, self._on_readable)
        status = await self._ended
        self.loop.remove_reader(self.in_fd)
        if status == EXIT_OK:   # stdin closed: waiting calls fail, the events in hand finish
            self.dispatcher_gone = True
            calls, self.calls = self.calls, {}
            for answer in calls.values():
                answer.set_result((GONE, None))
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if status != EXIT_PROTOCOL_ERROR:
            os.set_blocking(self.out_fd, True)   # the last answers (the hello's refusal too)
            self._flush()
        return status

    def _on_readable(self) -> None:
        try:
            data = os.read(self.in_fd, READ_SIZE)
        except BlockingIOError:
            return
        if not data:
            if self.decoder.buffered:
                self._end(EXIT_PROTOCOL_ERROR, f"stdin ended inside a frame ({self.decoder.buffered} bytes)")
            else:
                self._end(EXIT_OK)
            return
        try:
            for value in self.decoder.feed(data):
                if not self._greeted:
                    self._greeted = True
                    if not answer_hello(self, self.bot, value):
                        self._end(EXIT_UNSUPPORTED)
                        return
                    continue
                self._on_message(parse_message(value))
        except ProtocolError as exc:
            self._end(EXIT_PROTOCOL_ERROR, str(exc))

    def _on_message(self, message) -> None:
        if isinstance(message, Response):
            answer = self.calls.pop(message.msgid, None)
            if answer is None:
                log.warning("event=unknown_response_ignored msgid=%s", message.msgid)
            else:
                answer.set_result((message.error, message.result))
        elif isinstance(message, Request):
            if message.method == "event":
                self._start([(message.msgid, message.params)])
            else:
                self.send(Response(message.msgid, error_value(f"unknown method {message.method}"), None))
        elif message.method == BATCH:
            self._start(batch_entries(message.params))
        # Other notifications from the dispatcher: none are defined in version 1; ignored.

    def _start(self, entries: list) -> None:
        task = self.loop.create_task(self._handle_events(entries))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _end(self, status: int, problem: str = "") -> None:
        if not self._ended.done():
            self.problem = problem
            self._ended.set_result(status)
