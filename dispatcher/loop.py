"""The one event loop of a dispatcher: a selector over pipes, sockets and the signal wake-up fd.

Writes are buffered per pipe and flushed once per loop turn, just before sleeping, so that many
frames for one handler go out in one write (a window of frames in flight, not one at a time).
A pipe that is full is watched for writability until its buffer is empty.
"""
from __future__ import annotations

import selectors


class EventLoop:
    def __init__(self):
        self.selector = selectors.DefaultSelector()
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

    def run_once(self, timeout: float | None) -> None:
        while self._dirty:
            dirty, self._dirty = self._dirty, set()
            for writer in dirty:
                writer.flush()
        for key, _ in self.selector.select(timeout):
            key.data()

    def close(self) -> None:
        self.selector.close()
