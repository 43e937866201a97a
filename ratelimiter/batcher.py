"""Push -> multicast batching: the original design's "reduce API calls" step.

Pushes of the same messages (same JSON apart from `to`) to different users that arrive within
`batch_window_ms` of the first become one multicast of up to 500 users. A batch closes when
its window ends or it is full; a batch of one goes out as the plain push it was. Groups and
rooms (ids not starting with "U") cannot be multicast targets and are never batched.

The window slides: a batch stays open while members keep coming less than a window apart,
for at most MAX_AGE_WINDOWS windows. A burst is therefore one batch however long the reader
takes to decode it (measured: ~100 us per push, so 1,000 pushes take longer than 20 ms), and
no push waits longer than MAX_AGE_WINDOWS x window.

The batcher only groups; what a closed batch becomes (journal entries, the multicast request,
its retry key) is the rate limiter's business, through the `on_close` callback, called on the
rate limiter's event loop (from a batch's timer, or from `add` when a batch fills).
"""
from __future__ import annotations

import asyncio
import json
import time

from .line_api import MAX_MULTICAST_TO

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
        self.timer: asyncio.TimerHandle | None = None


class Batcher:
    """Open batches by key, each closed by a timer on the rate limiter's event loop."""

    def __init__(self, window_s: float, on_close, max_size: int = MAX_MULTICAST_TO):
        self.window_s = window_s
        self.max_size = max_size
        self._on_close = on_close          # on_close(members: list) — members in arrival order
        self._open: dict[str, _Batch] = {}

    def add(self, key: str, user: str, member) -> None:
        """Add one push (to `user`, grouped by `key` from batch_key) to its open batch."""
        now = time.monotonic()
        batch = self._open.get(key)
        if batch is not None and user in batch.users:  # one user twice: that batch goes now
            self._close(key)
            batch = None
        if batch is None:
            batch = self._open[key] = _Batch(now, now + self.window_s * MAX_AGE_WINDOWS)
            batch.timer = asyncio.get_running_loop().call_at(
                _loop_time(now + self.window_s), self._due, key, batch)
        batch.deadline = min(now + self.window_s, batch.oldest_deadline)
        batch.members.append(member)
        batch.users.add(user)
        if len(batch.members) >= self.max_size:
            self._close(key)

    def _due(self, key: str, batch: _Batch) -> None:
        """The batch's timer: close it, or look again at its (slid) deadline."""
        if self._open.get(key) is not batch:
            return
        now = time.monotonic()
        if now >= batch.deadline:
            self._close(key)
        else:
            batch.timer = asyncio.get_running_loop().call_at(_loop_time(batch.deadline), self._due, key, batch)

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
        return sum(len(b.members) for b in self._open.values())


def _loop_time(monotonic: float) -> float:
    """A time.monotonic() value on the running loop's clock (the same clock on Linux; kept apart)."""
    loop = asyncio.get_running_loop()
    return loop.time() + (monotonic - time.monotonic())
