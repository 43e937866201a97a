"""The one event loop of a supervisor: a selector over pipes, sockets and the signal wake-up fd.

Writes are buffered per pipe and flushed once per loop turn, just before sleeping, so that many
frames for one handler go out in one write (a window of frames in flight, not one at a time).
A pipe that is full is watched for writability until its buffer is empty.
"""
from __future__ import annotations

import os
import selectors
import signal

from frontdesk.protocol.coalesce import CoalescingSelector


class EventLoop:
    def __init__(self, coalesce_s: float = 0.0):
        self.selector = CoalescingSelector(coalesce_s)
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
    (`signal.set_wakeup_fd`) that the loop watches, and the loop handles it on its next turn."""

    def __init__(self, loop: EventLoop, signals):
        self._loop = loop
        self._pending: list[int] = []
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        self._previous_wakeup_fd = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        self._previous_handlers = {sig: signal.signal(sig, _enqueue_only) for sig in signals}
        loop.add_reader(self._read_fd, self._read)

    def _read(self) -> None:
        try:
            self._pending.extend(os.read(self._read_fd, 4096))
        except BlockingIOError:
            pass

    def pop(self) -> list[int]:
        """The signals received since the last call, oldest first."""
        pending, self._pending = self._pending, []
        return pending

    def close(self) -> None:
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(self._previous_wakeup_fd)
        self._loop.remove(self._read_fd)
        os.close(self._read_fd)
        os.close(self._write_fd)


def _enqueue_only(signum, frame) -> None:
    """The byte in the wake-up pipe is the whole message; the loop does the work."""
