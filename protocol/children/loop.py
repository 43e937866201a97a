"""The one event loop of a supervisor: a selector over pipes, sockets and the signal wake-up fd.

Writes are buffered per pipe and flushed once per loop turn, just before sleeping, so that many
frames for one handler go out in one write (a window of frames in flight, not one at a time).
A pipe that is full is watched for writability until its buffer is empty.

Signals only enqueue (SignalQueue); the loop hands each to its owner's `handle_<name>` method
(gunicorn's arbiter does the same), so what a signal does is one short method per signal.
"""
from __future__ import annotations

import enum
import logging
import os
import selectors
import signal
from typing import Protocol

from ..coalesce import CoalescingSelector, WorkRate

# Every supervisor handles these, and no others: TERM/INT stop in order, QUIT at once, HUP, TTIN
# and TTOU are about the handler pool, CHLD means a child may have exited.
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTTIN,
                   signal.SIGTTOU, signal.SIGCHLD)


class SignalHandlers(Protocol):
    """A supervisor's answer to each handled signal: one method per signal, named after it."""

    state: enum.Enum   # logged with each signal received

    def handle_term(self) -> None: ...
    def handle_int(self) -> None: ...
    def handle_quit(self) -> None: ...
    def handle_hup(self) -> None: ...
    def handle_ttin(self) -> None: ...
    def handle_ttou(self) -> None: ...
    def handle_chld(self) -> None: ...


def handler_name(signum: int) -> str:
    """The method that handles a signal: SIGTTIN -> `handle_ttin`."""
    return "handle_" + signal.Signals(signum).name.removeprefix("SIG").lower()


class EventLoop:
    """A selector with buffered writers: what each turn reads is handed to the callbacks
    registered for its descriptor, and every writer marked dirty is flushed before the next look."""

    def __init__(self, coalesce_s: float = 0.0, work: WorkRate | None = None):
        self.selector = CoalescingSelector(coalesce_s, work)
        self._dirty: set = set()

    def add_reader(self, fd: int, callback) -> None:
        self.selector.register(fd, selectors.EVENT_READ, callback)

    def remove(self, fd: int) -> None:
        try:
            self.selector.unregister(fd)
        except (KeyError, ValueError):
            pass

    def watch_writable(self, fd: int, callback) -> None:
        """Call callback when fd can take more bytes (a full pipe); idempotent."""
        try:
            self.selector.register(fd, selectors.EVENT_WRITE, callback)
        except KeyError:
            pass

    def mark_dirty(self, writer) -> None:
        """writer.flush() will run before the loop next sleeps."""
        self._dirty.add(writer)

    def run_once(self, timeout: float | None, pause: bool = True) -> None:
        """Flush what was written, then handle what is ready. pause: the look may wait out what is
        left of the coalescing pause (protocol/coalesce.py)."""
        while self._dirty:
            dirty, self._dirty = self._dirty, set()
            for writer in dirty:
                writer.flush()
        self.selector.pausing = pause
        for key, _ in self.selector.select(timeout):
            key.data()

    def close(self) -> None:
        self.selector.close()


class SignalQueue:
    """Signal handlers that only enqueue: each signal leaves its number as a byte in a self-pipe
    (`signal.set_wakeup_fd`) that the loop watches, and the loop handles it on its next turn.
    Built idle; `open()` installs the handlers, `close()` puts the previous ones back."""

    def __init__(self, loop: EventLoop, signals=HANDLED_SIGNALS):
        self._loop = loop
        self._signals = signals
        self._pending: list[int] = []
        self._read_fd = self._write_fd = -1
        self._previous_wakeup_fd = -1
        self._previous_handlers: dict = {}

    def open(self) -> "SignalQueue":
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        self._previous_wakeup_fd = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        self._previous_handlers = {sig: signal.signal(sig, _enqueue_only) for sig in self._signals}
        self._loop.add_reader(self._read_fd, self._read)
        return self

    def _read(self) -> None:
        try:
            self._pending.extend(os.read(self._read_fd, 4096))
        except BlockingIOError:
            pass

    def pop(self) -> list[int]:
        """The signals received since the last call, oldest first."""
        pending, self._pending = self._pending, []
        return pending

    def dispatch(self, owner: SignalHandlers, log: logging.Logger) -> None:
        """Hand each signal received since the last turn to the owner's `handle_<name>`."""
        for signum in self.pop():
            if signum != signal.SIGCHLD:   # (a child's exit says so itself)
                log.info("event=signal_received signal=%s state=%s", signal.Signals(signum).name, owner.state.value)
            getattr(owner, handler_name(signum))()

    def close(self) -> None:
        if self._read_fd < 0:
            return
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(self._previous_wakeup_fd)
        self._loop.remove(self._read_fd)
        os.close(self._read_fd)
        os.close(self._write_fd)
        self._read_fd = self._write_fd = -1


def _enqueue_only(signum, frame) -> None:
    """The byte in the wake-up pipe is the whole message; the loop does the work."""
