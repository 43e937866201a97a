"""A child process that speaks frames over its pipes, driven by the supervisor's EventLoop.

`FramedChild` owns one process's pipes: buffered non-blocking writes to its stdin, a
MessageStream on its stdout, its stderr collected line by line into the log with its name and
pid. It knows nothing about events or calls: what it reads goes to its receiver (a small
Protocol: the dispatcher's HandlerProcess and its rate limiter child), which decides.
"""
from __future__ import annotations

import fcntl
import logging
import os
import subprocess
from typing import Protocol

from .. import rpc
from ..frames import ProtocolError, encode_frame
from ..reads import READ_SIZE
from .lifeline import Identity, spawn
from .loop import EventLoop
from .stream import MessageStream

STDERR_LINE_MAX = 4096


class FrameReceiver(Protocol):
    """What a FramedChild tells the one who speaks with its process."""

    def on_message(self, message: rpc.Message) -> None: ...

    def on_stdout_closed(self) -> None:
        """Its stdout reached EOF (it is exiting, or broke the protocol)."""

    def on_violation(self, reason: str) -> None:
        """It broke the protocol (its stdout is no longer read): `reason` says how."""

    def on_flushed(self, before: int, after: int) -> None:
        """A write went out: `before` bytes were queued, `after` still are."""


class FramedChild:
    """One child with frames on stdin/stdout on an EventLoop. Built idle; `spawn()` starts it."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], loop: EventLoop,
                 receiver: FrameReceiver, max_frame_bytes: int, log: logging.Logger, *,
                 collect_stderr: bool = True, identity: Identity | None = None, pass_fds: tuple[int, ...] = (),
                 stdout_pipe_bytes: int = 0, stream: type[MessageStream] = MessageStream):
        self.name = name
        self.argv, self.env = argv, env
        self.loop = loop
        self.receiver = receiver
        self.log = log
        self.collect_stderr, self.identity, self.pass_fds = collect_stderr, identity, pass_fds
        self.stdout_pipe_bytes = stdout_pipe_bytes   # 0: the system's default size
        self.proc: subprocess.Popen | None = None
        self.pid = 0
        self.returncode: int | None = None
        self._stream = stream(max_frame_bytes)   # RelayStream: responses passed on undecoded
        self._out = bytearray()
        self._close_after_flush = False
        self._stdin: int | None = None
        self._stdout: int | None = None
        self._stderr: int | None = None
        self._stderr_buffer = bytearray()
        self._reading = True     # False: its stdout is not read for now (back-pressure)

    def spawn(self) -> "FramedChild":
        """Start the process (OSError when it cannot be) and watch its pipes."""
        self.proc = spawn(self.argv, self.env, stderr=subprocess.PIPE if self.collect_stderr else None,
                          identity=self.identity, pass_fds=self.pass_fds)
        self.pid = self.proc.pid
        self._stdin = self.proc.stdin.fileno()
        self._stdout = self.proc.stdout.fileno()
        self._stderr = self.proc.stderr.fileno() if self.collect_stderr else None
        if self.stdout_pipe_bytes:
            self._widen_stdout()
        for fd in (self._stdin, self._stdout, self._stderr):
            if fd is not None:
                os.set_blocking(fd, False)
        self.loop.add_reader(self._stdout, self._on_stdout)
        if self._stderr is not None:
            self.loop.add_reader(self._stderr, self._on_stderr)
        return self

    def _widen_stdout(self) -> None:
        """A bigger stdout pipe (up to /proc/sys/fs/pipe-max-size): one loop turn can take that much."""
        try:
            fcntl.fcntl(self._stdout, fcntl.F_SETPIPE_SZ, self.stdout_pipe_bytes)
        except (AttributeError, OSError) as exc:   # not Linux, or a lower pipe-max-size: the default stays
            self.log.debug("event=pipe_size_kept name=%s reason=%r", self.name, str(exc))

    # --- to the child ---------------------------------------------------------------------------
    def send(self, message: rpc.Message) -> None:
        self.send_frame(encode_frame(message.to_wire()))

    def send_frame(self, frame: bytes) -> None:
        """Queue one frame; the loop writes everything queued for this child in one go."""
        if self._stdin is None or self._close_after_flush:
            return
        self._out += frame
        self.loop.mark_dirty(self)

    def flush(self) -> None:
        if self._stdin is None:
            return
        before = len(self._out)
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
        self.receiver.on_flushed(before, len(self._out))

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
        """Read what is there (until EAGAIN), decode messages, hand them to the receiver."""
        while self._stdout is not None and self._reading:
            try:
                data = os.read(self._stdout, READ_SIZE)
            except BlockingIOError:
                return
            except OSError as exc:
                data = b""
                self.log.debug("event=stdout_read_failed name=%s pid=%d error=%s", self.name, self.pid, exc)
            if not data:
                self.stop_reading()
                try:
                    self._stream.end()
                except ProtocolError as exc:
                    self.receiver.on_violation(str(exc))
                self.receiver.on_stdout_closed()
                return
            try:
                for message in self._stream.feed(data):
                    self.receiver.on_message(message)
                    if self._stdout is None:    # the message made us give up on this child
                        return
            except ProtocolError as exc:
                self.stop_reading()
                self.receiver.on_violation(f"stdout is not frontdesk frames: {exc}")
                return
            if len(data) < READ_SIZE:
                return

    def stop_reading(self) -> None:
        """Ignore its stdout from now on (it broke the protocol, or is being stopped)."""
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
            self.log.info("event=child_stderr name=%s pid=%d text=%s", self.name, self.pid, text)

    def wait(self, timeout: float) -> int:
        """Its exit status, waiting up to `timeout` (subprocess.TimeoutExpired after that)."""
        return self.proc.wait(timeout=timeout)

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
        self.stop_reading()
        self._close_stdin_now()
        self.returncode = self.proc.returncode
        return self.returncode
