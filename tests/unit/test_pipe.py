"""The rate limiter's frame I/O (ratelimiter/pipe.py) over real OS pipes: messages in order, the
end of the input (clean, or inside a frame, or broken framing), answers out, and the output bound:
no more calls are read while the dispatcher leaves answers unread."""
from __future__ import annotations

import asyncio
import os

from frontdesk.protocol.frames import FrameDecoder, encode_frame
from frontdesk.protocol.rpc import Notification, Request, Response, parse_message
from frontdesk.ratelimiter.pipe import FramePipe

TIMEOUT_S = 10.0


class Ends:
    """The dispatcher's ends of the two pipes."""

    def __init__(self):
        self.pipe_in, self.to_limiter = os.pipe()
        self.from_limiter, self.pipe_out = os.pipe()
        os.set_blocking(self.from_limiter, False)
        self.decoder = FrameDecoder()

    def send(self, *messages) -> None:
        os.write(self.to_limiter, b"".join(encode_frame(m.to_wire()) for m in messages))

    def end_input(self) -> None:
        os.close(self.to_limiter)

    async def answers(self, count: int) -> list:
        """Read until `count` messages came from the rate limiter."""
        loop, got = asyncio.get_running_loop(), []
        ready = asyncio.Event()

        def readable():
            try:
                while data := os.read(self.from_limiter, 1 << 16):
                    got.extend(parse_message(value) for value in self.decoder.feed(data))
            except BlockingIOError:
                pass
            if len(got) >= count:
                ready.set()
        loop.add_reader(self.from_limiter, readable)
        try:
            await asyncio.wait_for(ready.wait(), TIMEOUT_S)
        finally:
            loop.remove_reader(self.from_limiter)
        return got

    def close(self) -> None:
        for fd in (self.to_limiter, self.from_limiter, self.pipe_out):
            try:
                os.close(fd)
            except OSError:
                pass


def run(scenario, high_water: int = 8 * 1024 * 1024, answer_bytes: int = 0):
    """scenario(pipe, ends, handled) with a pipe that answers each request it is handed."""
    ends, handled = Ends(), []

    async def main():
        def on_message(message):
            handled.append(message)
            if isinstance(message, Request):
                pipe.write(Response(message.msgid, None, "x" * answer_bytes))
        pipe = FramePipe(ends.pipe_in, ends.pipe_out, 1 << 20, on_message, high_water)
        pipe.open(asyncio.get_running_loop())
        await pipe.start_reading()
        return await scenario(pipe, ends, handled)
    try:
        return asyncio.run(main())
    finally:
        ends.close()


def test_messages_are_handed_on_in_order_and_answers_go_back():
    async def scenario(pipe, ends, handled):
        ends.send(Request(1, "call", []), Notification("cancel", [[1]]), Request(2, "call", []))
        answers = await ends.answers(2)
        assert [a.msgid for a in answers] == [1, 2]
        assert [type(m).__name__ for m in handled] == ["Request", "Notification", "Request"]
        ends.end_input()
        assert await asyncio.wait_for(pipe.ended(), TIMEOUT_S) is None
    run(scenario)


def test_the_input_ending_inside_a_frame_is_a_protocol_error():
    async def scenario(pipe, ends, handled):
        os.write(ends.to_limiter, encode_frame(Request(1, "call", []).to_wire())[:-2])
        ends.end_input()
        ended = await asyncio.wait_for(pipe.ended(), TIMEOUT_S)
        assert "stdin ended inside a frame" in str(ended) and handled == []
    run(scenario)


def test_broken_framing_ends_the_input_after_the_messages_before_it():
    async def scenario(pipe, ends, handled):
        ends.send(Request(1, "call", []))
        await ends.answers(1)
        os.write(ends.to_limiter, (2 ** 31).to_bytes(4, "big"))     # a length no frame may have
        ended = await asyncio.wait_for(pipe.ended(), TIMEOUT_S)
        assert "exceeds the maximum" in str(ended) and [m.msgid for m in handled] == [1]
    run(scenario)


def test_no_calls_are_read_while_the_dispatcher_leaves_answers_unread():
    async def scenario(pipe, ends, handled):
        ends.send(*(Request(n, "call", []) for n in range(1, 4)))
        while not handled:
            await asyncio.sleep(0)
        for _ in range(20):                      # loop turns in which nothing more may be handled
            await asyncio.sleep(0)
        assert len(handled) == 1 and pipe.unsent > 1000 and len(pipe.inbox) == 2
        answers = await ends.answers(3)          # the dispatcher reads: the rest are handled
        assert [a.msgid for a in answers] == [1, 2, 3] and pipe.inbox == type(pipe.inbox)()
        ends.end_input()
        await asyncio.wait_for(pipe.ended(), TIMEOUT_S)
    run(scenario, high_water=1000, answer_bytes=200_000)   # more than a pipe holds


def test_answers_to_a_dispatcher_that_is_gone_are_dropped():
    async def scenario(pipe, ends, handled):
        os.close(ends.from_limiter)
        pipe.write(Response(1, None, "x"))
        await asyncio.sleep(0)
        assert pipe.unsent == 0
        pipe.close()      # the last stats: nowhere to go, and no exception
        ends.end_input()
        await asyncio.wait_for(pipe.ended(), TIMEOUT_S)
    run(scenario)
