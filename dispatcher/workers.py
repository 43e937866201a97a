"""Child processes that speak frames over their pipes: handler processes (and the rate limiter).

`FramedChild` owns one child's pipes: buffered non-blocking writes to its stdin, a FrameDecoder
on its stdout, its stderr collected line by line into our log with its name and pid. It knows
nothing about events; `HandlerProcess` adds the handshake, the events in flight with their
deadlines, and the numbering of API calls per event delivery. Decisions (what to do when a
handler fails, where events go) belong to the arbiter, which these objects call back.
"""
from __future__ import annotations

import bisect
import logging
import math
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field

from frontdesk.protocol import PROTOCOL_VERSION, VERSION, rpc
from frontdesk.protocol.frames import FrameDecoder, ProtocolError, encode_frame

from .lifeline import Identity, spawn

log = logging.getLogger("frontdesk.dispatcher")

PROTOCOL_VERSIONS = [PROTOCOL_VERSION]   # offered in the hello, newest first
STDERR_LINE_MAX = 4096
EXIT_AFTER_EOF_WAIT_S = 0.1   # failure path only: how long the loop waits for an exit after stdout EOF
READ_SIZE = 256 * 1024
# Handling-time histogram bounds (seconds) for `frontdesk top` and the status page: one bisect and
# one list increment per answered event, published as cumulative counts on the status cadence.
HANDLING_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
              "error": logging.ERROR}


class FramedChild:
    """One child process with frames on stdin/stdout; subclasses handle the messages."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], loop, max_frame_bytes: int,
                 collect_stderr: bool = True, identity: Identity | None = None, pass_fds: tuple[int, ...] = ()):
        self.name = name
        self.loop = loop
        self.proc = spawn(argv, env, stderr=subprocess.PIPE if collect_stderr else None, identity=identity,
                          pass_fds=pass_fds)
        self.pid = self.proc.pid
        self.returncode: int | None = None
        self._decoder = FrameDecoder(max_frame_bytes)
        self._out = bytearray()
        self._close_after_flush = False
        self._stdin = self.proc.stdin.fileno()
        self._stdout = self.proc.stdout.fileno()
        self._stderr = self.proc.stderr.fileno() if collect_stderr else None
        self._stderr_buffer = bytearray()
        self._reading = True     # False: its stdout is not read for now (back-pressure)
        for fd in (self._stdin, self._stdout, self._stderr):
            if fd is not None:
                os.set_blocking(fd, False)
        loop.add_reader(self._stdout, self._on_stdout)
        if self._stderr is not None:
            loop.add_reader(self._stderr, self._on_stderr)

    # --- to the child ---------------------------------------------------------------------------
    def send(self, message) -> None:
        self.send_wire(message.to_wire())

    def send_wire(self, value) -> None:
        """Queue one frame; the loop writes everything queued for this child in one go. Raises
        EncodeError (and queues nothing) for a value msgpack cannot carry."""
        self.send_frame(encode_frame(value))

    def send_frame(self, frame: bytes) -> None:
        if self._stdin is None or self._close_after_flush:
            return
        self._out += frame
        self.loop.mark_dirty(self)

    def flush(self) -> None:
        if self._stdin is None:
            return
        if self._out:
            try:
                written = os.write(self._stdin, self._out)
                del self._out[:written]
            except BlockingIOError:
                pass
            except OSError:          # the child closed its stdin or died: its exit is reaped later
                self._out.clear()
        if self._out:
            self.loop.watch_writable(self._stdin, self._on_writable)
        elif self._close_after_flush:
            self._close_stdin_now()

    @property
    def unread_bytes(self) -> int:
        """Bytes queued for the child that its stdin has not taken yet."""
        return len(self._out)

    def discard_output(self) -> None:
        """Drop everything queued and close the child's stdin: it will be sent nothing more."""
        self._out.clear()
        self._close_stdin_now()

    def _on_writable(self) -> None:
        self.loop.remove(self._stdin)
        self.flush()

    def close_stdin(self) -> None:
        """EOF for the child once everything queued has been written."""
        self._close_after_flush = True
        self.loop.mark_dirty(self)

    def _close_stdin_now(self) -> None:
        if self._stdin is not None:
            self.loop.remove(self._stdin)
            self.proc.stdin.close()
            self._stdin = None

    def signal(self, signum: int) -> None:
        if self.returncode is None:
            try:
                self.proc.send_signal(signum)
            except ProcessLookupError:
                pass

    # --- from the child ---------------------------------------------------------------------------
    def pause_reading(self, paused: bool) -> None:
        """Stop (or resume) reading the child's stdout: once its pipe is full, its writes block."""
        if self._stdout is None or self._reading is not paused:
            return   # closed, or already so
        self._reading = not paused
        if paused:
            self.loop.remove(self._stdout)
        else:
            self.loop.add_reader(self._stdout, self._on_stdout)

    def _on_stdout(self) -> None:
        """Read what is there (until EAGAIN), decode frames, hand messages to the subclass."""
        while self._stdout is not None and self._reading:
            try:
                data = os.read(self._stdout, READ_SIZE)
            except BlockingIOError:
                return
            except OSError as exc:
                data = b""
                log.debug("stdout_read_failed name=%s pid=%d error=%s", self.name, self.pid, exc)
            if not data:
                self._close_stdout()
                if self._decoder.buffered:
                    self.violation(f"stdout ended inside a frame ({self._decoder.buffered} bytes)")
                self.on_stdout_closed()
                return
            try:
                for value in self._decoder.feed(data):
                    self.on_message(rpc.parse_message(value))
                    if self._stdout is None:    # the message made us give up on this child
                        return
            except ProtocolError as exc:
                self.violation(f"stdout is not frontdesk frames: {exc}")
                return
            if len(data) < READ_SIZE:
                return

    def _close_stdout(self) -> None:
        if self._stdout is not None:
            self.loop.remove(self._stdout)
            self.proc.stdout.close()
            self._stdout = None

    def _on_stderr(self) -> bool:
        """Log the complete lines read; returns whether more may be waiting."""
        try:
            data = os.read(self._stderr, READ_SIZE) if self._stderr is not None else b""
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            self._on_stderr_eof()
            return False
        self._stderr_buffer += data
        *lines, rest = self._stderr_buffer.split(b"\n")
        for line in lines:
            self._log_stderr_line(line)
        while len(rest) > STDERR_LINE_MAX:
            self._log_stderr_line(rest[:STDERR_LINE_MAX])
            rest = rest[STDERR_LINE_MAX:]
        self._stderr_buffer = bytearray(rest)
        return True

    def _on_stderr_eof(self) -> None:
        self._log_stderr_line(self._stderr_buffer)
        self._stderr_buffer.clear()
        if self._stderr is not None:
            self.loop.remove(self._stderr)
            self.proc.stderr.close()
            self._stderr = None

    def _log_stderr_line(self, line: bytes) -> None:
        text = bytes(line[:STDERR_LINE_MAX]).decode("utf-8", "replace").rstrip()
        if text:
            log.info("[%s pid=%d] %s", self.name, self.pid, text)

    def reap(self) -> int | None:
        """The exit status if the child has exited (its remaining output read first), else None."""
        if self.returncode is not None:
            return self.returncode
        if self.proc.poll() is None:
            return None
        self._reading = True
        self._on_stdout()          # acks written just before exiting still count
        while self._stderr is not None and self._on_stderr():
            pass
        if self._stderr is not None:  # a grandchild may hold it open: stop listening anyway
            self._on_stderr_eof()
        self._close_stdout()
        self._close_stdin_now()
        self.returncode = self.proc.returncode
        return self.returncode

    # --- for subclasses -------------------------------------------------------------------------
    def on_message(self, message) -> None:
        raise NotImplementedError

    def on_stdout_closed(self) -> None:
        """stdout reached EOF (the child is exiting or broke the protocol)."""

    def violation(self, reason: str) -> None:
        """The child broke the protocol; its stdout can no longer be trusted."""
        self._close_stdout()


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"


class ReadWatch:
    """Since when a child has taken nothing from its stdin while bytes waited for it: a handler
    that takes nothing for event_deadline_s is stuck, whatever it does on its stdout."""
    __slots__ = ("since",)

    def __init__(self):
        self.since: float | None = None

    def flushed(self, before: int, after: int, now: float) -> bool:
        """After a write: `before` bytes were queued, `after` still are. Whether it took any."""
        took = after < before
        if not after:
            self.since = None
        elif took or self.since is None:
            self.since = now
        return took

    def due(self, limit_s: float) -> float | None:
        """When it is stuck if it takes nothing more (None: nothing waits for it)."""
        return None if self.since is None else self.since + limit_s


@dataclass
class Delivery:
    """One event handed to one handler: its deadline moves on every sign of progress."""
    msgid: int
    doc: dict
    event_id: str
    key: str
    deadline: float
    calls: int = 0
    waiting: int = 0     # its API calls not answered yet: the deadline is paused meanwhile
    started: float = field(default_factory=time.monotonic)


STARTING, READY, DRAINING, CLOSING, STOPPING, EXITED = (
    "starting", "ready", "draining", "closing", "stopping", "exited")


class HandlerProcess(FramedChild):
    """A handler: handshake, a window of events in flight, API calls relayed through the arbiter.

    States: starting (hello sent) -> ready (takes events) -> draining (takes none, waits for acks)
    -> closing (stdin closed, waiting for exit 0) -> exited; `fail` jumps to stopping (TERM, then
    KILL after kill_grace_s) from anywhere.
    """

    def __init__(self, name: str, argv: list[str], env: dict[str, str], loop, settings, arbiter):
        super().__init__(name, argv, env, loop, settings.max_frame_bytes, identity=arbiter.handler_identity)
        self.settings = settings
        self.arbiter = arbiter
        self.state = STARTING
        self.failure: str | None = None
        self.handler_name = ""
        self.max_in_flight = 0
        self.handled = 0
        self.died_holding = 0   # events it held when it failed
        self.handling_counts = [0] * (len(HANDLING_BUCKETS_S) + 1)   # the last one is beyond 30 s
        self.handling_s = 0.0     # summed handling time: mean events in flight = its rate
        self.busy_s = 0.0         # time with at least one event in flight, until _busy_since
        self._busy_since: float | None = None
        self.in_flight: dict[int, Delivery] = {}
        self._by_event: dict[str, Delivery] = {}
        self.reserved: Delivery | None = None   # a suspect event waiting to run here alone
        self.solo = False                       # the one event in flight must run alone
        self._msgids = rpc.MsgIds(start=1)
        self._reads = ReadWatch()
        self._timer = time.monotonic() + settings.handler_start_timeout_s
        self.send(rpc.Request(0, "hello", [{"protocol": PROTOCOL_VERSIONS,
                                            "dispatcher": f"frontdesk/{VERSION}",
                                            "max_frame_bytes": settings.max_frame_bytes}]))
        log.info("handler_started name=%s pid=%d", name, self.pid)

    # --- capacity and events -------------------------------------------------------------------------
    @property
    def free_slots(self) -> int:
        if self.state != READY or self.solo or self.reserved is not None:
            return 0
        return self.max_in_flight - len(self.in_flight)

    def reserve(self, doc: dict) -> None:
        """Take a suspect event (one that was in flight beside a crash): no new events come here
        until the ones in flight are answered, then this one runs alone, so that if it crashes
        the handler the crash is its own."""
        o = doc["o"]
        self.reserved = Delivery(0, doc, o["_id"], o["key"], math.inf)
        self._deliver_reserved_if_idle()

    def _deliver_reserved_if_idle(self) -> None:
        if self.reserved is not None and not self.in_flight and self.state == READY:
            doc, self.reserved = self.reserved.doc, None
            self.solo = True
            self.deliver(doc)

    def take_reserved(self) -> list[Delivery]:
        """The reserved event, if any, removed (never sent: the arbiter gives it back untouched)."""
        reserved, self.reserved = self.reserved, None
        return [reserved] if reserved is not None else []

    def deliver(self, doc: dict) -> Delivery:
        """Send one event; raises EncodeError (and sends nothing) if it cannot be framed."""
        msgid = self._msgids.next()
        frame = encode_frame([rpc.REQUEST, msgid, "event", [doc]])
        o = doc["o"]
        delivery = Delivery(msgid, doc, o["_id"], o["key"],
                            time.monotonic() + self.settings.event_deadline_s)
        if not self.in_flight:
            self._busy_since = delivery.started
        self.in_flight[msgid] = delivery
        self._by_event[delivery.event_id] = delivery
        self.send_frame(frame)
        return delivery

    def delivery_for(self, event_id) -> Delivery | None:
        return self._by_event.get(event_id) if isinstance(event_id, str) else None

    def touch(self, delivery: Delivery) -> None:
        """A sign of progress: the deadline starts over, or stays paused while a call is out."""
        delivery.deadline = (time.monotonic() + self.settings.event_deadline_s if not delivery.waiting
                             else math.inf)

    def call_waiting(self, delivery: Delivery) -> None:
        """An API call of this event went to the rate limiter: the handler now waits on frontdesk."""
        delivery.waiting += 1
        delivery.deadline = math.inf

    def call_answered(self, delivery: Delivery) -> None:
        delivery.waiting -= 1
        self.touch(delivery)

    def take_in_flight(self) -> list[Delivery]:
        """Every unanswered delivery, removed (the arbiter gives them back to the store)."""
        deliveries = list(self.in_flight.values())
        self.in_flight.clear()
        self._by_event.clear()
        self._idle(time.monotonic())
        return deliveries

    def send_frame(self, frame: bytes) -> None:
        """Queue a frame; a handler that lets more than handler_outbound_max_bytes pile up (it
        stopped reading its stdin) is stuck: killed, its queue dropped, its events retried."""
        super().send_frame(frame)
        if len(self._out) > self.settings.handler_outbound_max_bytes:
            queued = len(self._out)
            self.discard_output()
            self.fail(f"stuck: stopped reading its stdin with {queued} bytes queued "
                      f"(handler_outbound_max_bytes={self.settings.handler_outbound_max_bytes})")

    def flush(self) -> None:
        """Write what is queued; note when it last read anything (ReadWatch), and tell the
        arbiter when it read some (calls held back for its unread bytes may go now)."""
        before = len(self._out)
        super().flush()
        if self._reads.flushed(before, len(self._out), time.monotonic()):
            self.arbiter.handler_read(self)

    def _idle(self, now: float) -> None:
        if self._busy_since is not None:
            self.busy_s += now - self._busy_since
            self._busy_since = None

    def respond(self, msgid: int, error, result) -> None:
        """Answer one of the handler's requests (an API call)."""
        self.send(rpc.Response(msgid, error, result))

    # --- life cycle ------------------------------------------------------------------------------------
    def drain(self) -> None:
        """Take no new events; close stdin once the in-flight ones are answered."""
        if self.state in (STARTING, READY):
            self.state = DRAINING
            log.info("handler_draining name=%s pid=%d in_flight=%d", self.name, self.pid,
                     len(self.in_flight))
        self._close_when_idle()

    def _close_when_idle(self) -> None:
        if self.state == DRAINING and not self.in_flight:
            self.state = CLOSING
            self._timer = time.monotonic() + self.settings.kill_grace_s
            self.close_stdin()

    def fail(self, reason: str, blamed: set[int] | None = None) -> None:
        """Give up on this process: TERM now, KILL after kill_grace_s; the arbiter retries its
        events (`blamed`: the msgids of the events the failure is known to be about)."""
        if self.state in (STOPPING, EXITED):
            return
        self.failure = reason
        log.warning("handler_failed name=%s pid=%d reason=%s", self.name, self.pid, reason)
        self.terminate()
        self.arbiter.handler_lost_events(self, reason, blamed)

    def terminate(self) -> None:
        """TERM now, KILL after kill_grace_s; its output is ignored from now on."""
        if self.state in (STOPPING, EXITED):
            return
        self.state = STOPPING
        self._timer = time.monotonic() + self.settings.kill_grace_s
        self._close_stdout()
        self.signal(signal.SIGTERM)

    def next_timer(self) -> float | None:
        """The monotonic time at which `check_timers` has something to do."""
        times = [d.deadline for d in self.in_flight.values()]
        if self.state in (STARTING, CLOSING, STOPPING):
            times.append(self._timer)
        stuck_at = self._reads.due(self.settings.event_deadline_s)
        if stuck_at is not None and self.state != STOPPING:
            times.append(stuck_at)
        return min(times) if times else None

    def check_timers(self, now: float) -> None:
        if self.state == STARTING and now >= self._timer:
            self.fail(f"no handshake within handler_start_timeout_s={self.settings.handler_start_timeout_s:g}")
        elif self.state == CLOSING and now >= self._timer:
            self.fail(f"did not exit within kill_grace_s={self.settings.kill_grace_s:g} after stdin closed")
        elif self.state == STOPPING and now >= self._timer and self.returncode is None:
            log.warning("handler_killed name=%s pid=%d signal=KILL", self.name, self.pid)
            self.signal(signal.SIGKILL)
            self._timer = float("inf")
        elif self.state != STOPPING and now >= (self._reads.due(self.settings.event_deadline_s) or math.inf):
            queued = len(self._out)
            self.discard_output()
            self.fail(f"stuck: read nothing of its stdin for event_deadline_s="
                      f"{self.settings.event_deadline_s:g} with {queued} bytes waiting")
        else:
            late = [d for d in self.in_flight.values() if now >= d.deadline]
            if late:
                self.fail(f"event {late[0].event_id} got no answer or progress within "
                          f"event_deadline_s={self.settings.event_deadline_s:g}", {d.msgid for d in late})

    def exited(self) -> None:
        self.state = EXITED

    # --- from the handler ------------------------------------------------------------------------
    def violation(self, reason: str) -> None:
        super().violation(reason)
        self.fail(f"protocol violation: {reason}")

    def on_stdout_closed(self) -> None:
        if self.state in (CLOSING, STOPPING, EXITED):
            return
        # A handler whose stdout ends is nearly always exiting: wait a moment so that the reason
        # is its exit status (a race here made the pool's degraded reason vary run to run).
        try:
            self.fail(describe_exit(self.proc.wait(timeout=EXIT_AFTER_EOF_WAIT_S)))
        except subprocess.TimeoutExpired:
            self.fail("closed its stdout")

    def on_message(self, message) -> None:
        if self.state == STARTING:
            self._on_handshake(message)
        elif isinstance(message, rpc.Response):
            delivery = self.in_flight.pop(message.msgid, None)
            if delivery is None:
                self.violation(f"response to msgid {message.msgid}, which is no event in flight")
                return
            del self._by_event[delivery.event_id]
            self.handled += 1
            self.solo = False
            now = time.monotonic()
            took = now - delivery.started
            self.handling_s += took
            self.handling_counts[bisect.bisect_left(HANDLING_BUCKETS_S, took)] += 1
            if not self.in_flight:
                self._idle(now)
            self.arbiter.event_answered(self, delivery, message.error)
            self._deliver_reserved_if_idle()
            self._close_when_idle()
        elif isinstance(message, rpc.Request):
            self.arbiter.api_call(self, message)
        elif message.method == "progress":
            delivery = self.delivery_for(message.params[0] if message.params else None)
            if delivery is not None:
                self.touch(delivery)
        elif message.method == "log":
            self._on_log(message.params)

    def _on_handshake(self, message) -> None:
        if not isinstance(message, rpc.Response) or message.msgid != 0:
            self.violation(f"sent {type(message).__name__.lower()} before answering the hello")
            return
        if message.error is not None:
            self.fail(f"refused the handshake: {_error_text(message.error)}")
            return
        result = message.result if isinstance(message.result, dict) else {}
        window = result.get("max_in_flight")
        if result.get("protocol") not in PROTOCOL_VERSIONS:
            self.violation(f"handshake names protocol {result.get('protocol')!r}, offered {PROTOCOL_VERSIONS}")
        elif not isinstance(window, int) or isinstance(window, bool) or window < 1:
            self.violation(f"handshake max_in_flight must be an integer >= 1, got {window!r}")
        else:
            self.max_in_flight = window
            self.handler_name = str(result.get("name", ""))[:100]
            self.state = READY
            log.info("handler_ready name=%s pid=%d handler=%s max_in_flight=%d", self.name, self.pid,
                     self.handler_name, window)
            self.arbiter.handler_ready(self)

    def _on_log(self, params: list) -> None:
        entry = params[0] if params and isinstance(params[0], dict) else {}
        level = LOG_LEVELS.get(entry.get("level"), logging.INFO)
        log.log(level, "[%s pid=%d] %s", self.name, self.pid, str(entry.get("message", ""))[:STDERR_LINE_MAX])

    def busy_total(self, now: float) -> float:
        """Seconds with at least one event in flight, until now."""
        return self.busy_s + (now - self._busy_since if self._busy_since is not None else 0.0)

    def status(self) -> dict:
        """Cumulative counters; readers turn two of them into rates (command/observe.py)."""
        busy = self.busy_total(time.monotonic())
        return {"name": self.name, "pid": self.pid, "state": self.state, "in_flight": len(self.in_flight),
                "max_in_flight": self.max_in_flight, "handled": self.handled, "busy_s": round(busy, 4),
                "handling_s": round(self.handling_s, 4), "handling_counts": list(self.handling_counts)}


def _error_text(error) -> str:
    if isinstance(error, dict) and "message" in error:
        return str(error["message"])[:200]
    return repr(error)[:200]
