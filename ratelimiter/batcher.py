"""Push -> multicast batching: the original design's "reduce API calls" step.

Pushes of the same messages (same JSON apart from `to`) to different users that arrive within
`batch_window_ms` of the first become one multicast of up to 500 users. A batch closes when
its window ends or it is full; a batch of one goes out as the plain push it was. Groups and
rooms (ids not starting with "U") cannot be multicast targets and are never batched.

The window slides: a batch stays open while members keep coming less than a window apart,
for at most MAX_AGE_WINDOWS windows. A burst is therefore one batch however long the reader
takes to decode it (measured: ~100 us per push, so 1,000 pushes take longer than 20 ms), and
no push waits longer than MAX_AGE_WINDOWS x window.

The batcher only groups; what a closed batch becomes (the multicast request and its retry key:
calls.Send.of_batch) is its owner's business, through the `on_close` callback, called on the
rate limiter's event loop (from a batch's timer, or from `add` when a batch fills). The clock and
the timers are injected (the event loop's in the process), so the unit tests move time themselves.
"""
from __future__ import annotations

import asyncio
import json
import time
from typing import Callable

from frontdesk.protocol.line_endpoints import MAX_MULTICAST_TO

MAX_AGE_WINDOWS = 10


def batch_key(args: dict) -> str | None:
    """What must be identical for pushes to share a multicast, or None if this push cannot."""
    to = args.get("to")
    if not isinstance(to, str) or not to.startswith("U"):
        return None
    rest = {k: v for k, v in args.items() if k != "to"}
    return json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class _Batch:
    __slots__ = ("deadline", "oldest_deadline", "members", "users", "timer")

    def __init__(self, deadline: float, oldest_deadline: float):
        self.deadline = deadline
        self.oldest_deadline = oldest_deadline
        self.members: list = []
        self.users: set[str] = set()
        self.timer = None   # its timer's handle (cancel())


def loop_call_at(when: float, callback: Callable, *args) -> asyncio.TimerHandle:
    """Run callback at `when`, a time.monotonic() value, on the running event loop (the same clock
    on Linux; converted all the same)."""
    loop = asyncio.get_running_loop()
    return loop.call_at(loop.time() + (when - time.monotonic()), callback, *args)


class Batcher:
    """Open batches by key, each closed by a timer; `clock()` says the time, `call_at(when,
    callback, *args)` sets a timer on that clock and returns a handle with cancel()."""

    def __init__(self, window_s: float, on_close: Callable[[list], None], max_size: int = MAX_MULTICAST_TO,
                 clock: Callable[[], float] = time.monotonic, call_at: Callable = loop_call_at):
        self.window_s = window_s
        self.max_size = max_size
        self._on_close = on_close          # on_close(members: list) — members in arrival order
        self._clock = clock
        self._call_at = call_at
        self._open: dict[str, _Batch] = {}

    def add(self, key: str, user: str, member) -> None:
        """Add one push (to `user`, grouped by `key` from batch_key) to its open batch."""
        now = self._clock()
        batch = self._open.get(key)
        if batch is not None and user in batch.users:  # one user twice: that batch goes now
            self._close(key)
            batch = None
        if batch is None:
            batch = self._open[key] = _Batch(now, now + self.window_s * MAX_AGE_WINDOWS)
            batch.timer = self._call_at(now + self.window_s, self._due, key, batch)
        batch.deadline = min(now + self.window_s, batch.oldest_deadline)
        batch.members.append(member)
        batch.users.add(user)
        if len(batch.members) >= self.max_size:
            self._close(key)

    def _due(self, key: str, batch: _Batch) -> None:
        """The batch's timer: close it, or look again at its (slid) deadline."""
        if self._open.get(key) is not batch:
            return
        if self._clock() >= batch.deadline:
            self._close(key)
        else:
            batch.timer = self._call_at(batch.deadline, self._due, key, batch)

    def _close(self, key: str) -> None:
        batch = self._open.pop(key)
        if batch.timer is not None:
            batch.timer.cancel()
        self._on_close(batch.members)

    def close(self) -> None:
        """Send every open batch now (stdin closed: finish what is queued)."""
        for key in list(self._open):
            self._close(key)

    def open_members(self) -> int:
        """Pushes waiting in open batches."""
        return sum(len(b.members) for b in self._open.values())
