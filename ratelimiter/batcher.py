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
its retry key) is the rate limiter's business, through the `on_close` callback, called from
the batcher's own thread.
"""
from __future__ import annotations

import json
import threading
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
    __slots__ = ("deadline", "oldest_deadline", "members", "users")

    def __init__(self, deadline: float, oldest_deadline: float):
        self.deadline = deadline
        self.oldest_deadline = oldest_deadline
        self.members: list = []
        self.users: set[str] = set()


class Batcher:
    def __init__(self, window_s: float, on_close, max_size: int = MAX_MULTICAST_TO):
        self.window_s = window_s
        self.max_size = max_size
        self._on_close = on_close          # on_close(members: list) — members in arrival order
        self._open: dict[str, _Batch] = {}
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="batcher", daemon=True)
        self._thread.start()

    def add(self, key: str, user: str, member) -> None:
        """Add one push (to `user`, grouped by `key` from batch_key) to its open batch."""
        full = []
        now = time.monotonic()
        with self._cond:
            batch = self._open.get(key)
            if batch is not None and user in batch.users:  # one user twice: that batch goes now
                full.append(self._open.pop(key))
                batch = None
            if batch is None:
                batch = self._open[key] = _Batch(now, now + self.window_s * MAX_AGE_WINDOWS)
                self._cond.notify()
            batch.deadline = min(now + self.window_s, batch.oldest_deadline)
            batch.members.append(member)
            batch.users.add(user)
            if len(batch.members) >= self.max_size:
                full.append(self._open.pop(key))
        for closed in full:
            self._on_close(closed.members)

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    due = [k for k, b in self._open.items() if b.deadline <= now or self._closing]
                    if due:
                        break
                    if self._closing:
                        return
                    wait = min((b.deadline for b in self._open.values()), default=None)
                    self._cond.wait(None if wait is None else wait - now)
                closed = [self._open.pop(k) for k in due]
            for batch in closed:
                self._on_close(batch.members)

    def close(self) -> None:
        """Send every open batch now and stop (stdin closed: finish what is queued)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()

    def open_members(self) -> int:
        with self._cond:
            return sum(len(b.members) for b in self._open.values())
