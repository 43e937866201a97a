"""Fake children and a clock the test moves, for the supervision units: what a supervisor sees of a
child process (its pid, its exit, the signals it got, the frames it was sent), and nothing spawned.
supervisor's own tests do the same with a DummyProcess beneath its state machine."""
from __future__ import annotations

import itertools
import subprocess

from frontdesk.protocol import rpc
from frontdesk.protocol.frames import FrameDecoder

_pids = itertools.count(1000)


class FakeProcess:
    """A started child (lifecycle.ChildProcess): it exits when the test says."""

    def __init__(self):
        self.pid = next(_pids)
        self.returncode: int | None = None
        self.signals: list[int] = []
        self.stdin_closed = False

    def exit(self, code: int = 0) -> None:
        self.returncode = code

    def reap(self) -> int | None:
        return self.returncode

    def signal(self, signum: int) -> None:
        self.signals.append(signum)

    def close_stdin(self) -> None:
        self.stdin_closed = True


class FakePipes(FakeProcess):
    """A frame-speaking child on the loop (what protocol/children/framed.py's FramedChild offers its
    owner), built by the same arguments: what it is sent is decoded into `sent`; the test plays the
    child with `say` (a message to its receiver) and `take` (it reads its stdin, or not)."""

    def __init__(self, name, argv, env, loop, receiver, max_frame_bytes, log, **options):
        super().__init__()
        self.name, self.argv, self.env, self.receiver, self.options = name, argv, env, receiver, options
        self.sent: list[rpc.Message] = []
        self.queued = 0            # bytes sent that it has not read
        self.reading = True        # its stdout is read
        self.paused = False
        self.proc = None
        self._decoder = FrameDecoder(max_frame_bytes)

    def spawn(self) -> "FakePipes":
        return self

    # what the owner does to it
    def send(self, message: rpc.Message) -> None:
        self.sent.append(message)

    def send_frame(self, frame: bytes) -> None:
        if self.stdin_closed:
            return
        self.queued += len(frame)
        self.sent += [rpc.parse_message(value) for value in self._decoder.feed(frame)]

    @property
    def unread_bytes(self) -> int:
        return self.queued

    def discard_output(self) -> None:
        self.queued = 0
        self.stdin_closed = True

    def pause_reading(self, paused: bool) -> None:
        self.paused = paused

    def stop_reading(self) -> None:
        self.reading = False

    def wait(self, timeout: float) -> int:
        if self.returncode is None:
            raise subprocess.TimeoutExpired("fake", timeout)
        return self.returncode

    # what the test makes it do
    def say(self, message: rpc.Message) -> None:
        """It writes one message on its stdout (ignored once its stdout is no longer read)."""
        if self.reading and not self.paused:
            self.receiver.on_message(message)

    def take(self) -> None:
        """It reads everything queued for it."""
        before, self.queued = self.queued, 0
        self.receiver.on_flushed(before, 0)

    def hello(self, window: int = 4, name: str = "fake", features: list[str] | None = None) -> None:
        """It answers the handshake (declaring `features`, if given)."""
        answer = {"protocol": 1, "name": name, "max_in_flight": window}
        if features is not None:
            answer["features"] = features
        self.say(rpc.Response(0, None, answer))

    def requests(self, method: str | None = None) -> list[rpc.Request]:
        return [m for m in self.sent if isinstance(m, rpc.Request) and (method is None or m.method == method)]

    def events(self) -> list[rpc.Request]:
        """Every event it was sent, those of batches as if each had come alone."""
        events = []
        for message in self.sent:
            if isinstance(message, rpc.Request) and message.method == "event":
                events.append(message)
            elif isinstance(message, rpc.Notification) and message.method == "batch":
                events += [rpc.Request(msgid, "event", [doc]) for msgid, doc in message.params]
        return events

    def batches(self) -> list[list[str]]:
        """The event ids of each batch it was sent."""
        return [[doc["o"]["_id"] for _, doc in message.params] for message in self.sent
                if isinstance(message, rpc.Notification) and message.method == "batch"]


class PipesFactory:
    """Builds FakePipes as FramedChild would be built, and remembers every one, by name."""

    def __init__(self):
        self.made: list[FakePipes] = []

    def __call__(self, *args, **options) -> FakePipes:
        pipes = FakePipes(*args, **options)
        self.made.append(pipes)
        return pipes

    def of(self, name: str) -> list[FakePipes]:
        """Every process made for `name`, oldest first."""
        return [pipes for pipes in self.made if pipes.name == name]

    def last(self, name: str) -> FakePipes:
        return self.of(name)[-1]
