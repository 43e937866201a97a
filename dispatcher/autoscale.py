"""`handlers = auto`: the handler pool follows the load between handlers_min and handlers_max.

Celery's autoscaler is the anchor: grow when work waits, shrink after a quiet spell. Here "work
waits" is measured, not guessed: the queue's oldest event is older than autoscale_backlog_s AND
the handlers were busy (at least one event in flight) for GROW_BUSY of the last interval — an old
event behind idle handlers is waiting for its conversation's previous event, and more processes
would not help it. Growth is by half the pool (at least one), and only once every handler of the
last step is ready. The pool shrinks by one after autoscale_idle_s in which the handlers stayed
under SHRINK_BUSY busy with no backlog, then waits another quiet spell before the next step.
The gap between GROW_BUSY and SHRINK_BUSY and the quiet spell are the hysteresis: a pool does not
flap between sizes. Decisions happen on the status cadence (once a second), never per event.
"""
from __future__ import annotations

import logging
import time

GROW_BUSY = 0.75
SHRINK_BUSY = 0.3

log = logging.getLogger("frontdesk.dispatcher")


class Autoscaler:
    """Decides the handler target from once-a-second measurements; `now` is injected (tests)."""

    def __init__(self, minimum: int, maximum: int, backlog_s: float, idle_s: float):
        self.minimum, self.maximum = minimum, maximum
        self.backlog_s, self.idle_s = backlog_s, idle_s
        self.last_change: str | None = None
        self._quiet_since: float | None = None

    def decide(self, now: float, target: int, ready: int, busy_share: float, oldest_pending_s: float) -> int:
        """The new target (the same when nothing should change).

        Args:
            now: monotonic seconds.
            target: the pool's current target.
            ready: handler processes ready now (less than target while some start).
            busy_share: mean share of the last interval the handlers had an event in flight.
            oldest_pending_s: age of the oldest event not yet delivered (store.stats()).
        """
        if target < self.minimum or target > self.maximum:
            return self._change(now, target, min(self.maximum, max(self.minimum, target)),
                                "outside handlers_min..handlers_max")
        backlog = oldest_pending_s >= self.backlog_s
        if backlog and busy_share >= GROW_BUSY:
            self._quiet_since = None
            if ready >= target and target < self.maximum:
                return self._change(now, target, min(self.maximum, target + max(1, target // 2)),
                                    f"oldest event {oldest_pending_s:.1f} s old, handlers "
                                    f"{busy_share * 100:.0f} % busy")
            return target
        if backlog or busy_share >= SHRINK_BUSY:
            self._quiet_since = None
            return target
        if self._quiet_since is None:
            self._quiet_since = now
        if now - self._quiet_since >= self.idle_s and target > self.minimum:
            return self._change(now, target, target - 1, f"handlers {busy_share * 100:.0f} % busy for "
                                f"autoscale_idle_s={self.idle_s:g} with nothing waiting")
        return target

    def _change(self, now: float, target: int, new: int, why: str) -> int:
        self._quiet_since = None if new > target else now   # a shrink starts the next quiet spell
        self.last_change = f"{time.strftime('%H:%M:%S')} {target} -> {new}: {why}"
        log.info("event=autoscale from=%d to=%d reason=%r", target, new, why)
        return new

    def status(self) -> dict:
        return {"min": self.minimum, "max": self.maximum, "last_change": self.last_change}


class BusyMeter:
    """The handlers' busy share since the last measurement: the seconds each ready handler process
    had an event in flight (keyed by pid: a new process starts from nothing), over the time passed
    times their number. The first measurement only sets the start."""

    def __init__(self):
        self._before: dict[int, float] = {}
        self._at: float | None = None

    def share(self, now: float, busy_totals: dict[int, float]) -> float:
        """Mean busy share (0..1) of the processes in `busy_totals` (pid -> busy seconds until now)."""
        elapsed = now - self._at if self._at is not None else 0.0
        busy = sum(total - self._before.get(pid, 0.0) for pid, total in busy_totals.items())
        self._before, self._at = busy_totals, now
        return min(1.0, busy / (len(busy_totals) * elapsed)) if busy_totals and elapsed > 0 else 0.0
