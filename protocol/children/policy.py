"""Restart policy for every supervised group (the handler pool, the rate limiter, and `frontdesk
run`'s services): per-member backoff that grows only while a member dies young, gunicorn- and
supervisord-style, and the group's degraded mark."""
from __future__ import annotations

import logging
import time
from collections import deque
from typing import Callable

from ..backoff import doubling_delay

FIRST_RESTART_DELAY_S = 0.1   # after a death before serving; doubles with each one in a row
SERVED_AFTER_S = 10.0   # a member that lived this long has served, whatever it did


class RestartPolicy:
    """Delays before restarting crashed members of one group, and the group's degraded state.

    Each member (a handler slot, the rate limiter, a service) has its own delay: 0.1 s, doubling
    with each consecutive death before it served, up to restart_backoff_max_s (protocol/backoff.py's
    one rule); a member that has served (lived SERVED_AFTER_S, or — the caller says — did its work,
    e.g. a handler that answered an event, or died holding events: that crash is theirs) restarts
    at once, like a gunicorn worker, and its next early death starts the backoff over from 0.1 s.
    So a handler that crashes on one event in ten restarts at once every time, while one that
    cannot start backs off. Deaths before serving are the ones that count towards the degraded
    mark: more than restart_intensity of them inside restart_period_s marks the group degraded
    (with the reason, for `frontdesk status`); the mark clears when a whole window passes without
    one. Nothing is ever given up. `clock` (monotonic seconds) is injected for the unit tests.
    """

    def __init__(self, settings, group: str, log: logging.Logger, clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self.group = group
        self.log = log          # the supervising process's logger
        self.clock = clock
        self.degraded: str | None = None
        self.crashes = 0
        self._recent: deque[float] = deque()       # young deaths inside the window
        self._started: dict[str, float] = {}
        self._young: dict[str, int] = {}           # member -> consecutive deaths before serving

    def started(self, member: str) -> None:
        """A member's process was started (its age decides whether it served)."""
        self._started[member] = self.clock()

    def crashed(self, reason: str, member: str = "", served: bool = False) -> float:
        """Record a crash (or a failed start) of one member.

        Returns:
            The delay in seconds before its restart: 0 when it served, else the backoff.
        """
        now = self.clock()
        self.crashes += 1
        started = self._started.pop(member, None)
        if served or (started is not None and now - started >= SERVED_AFTER_S):
            self._young[member] = 0
            return 0.0
        young = self._young[member] = self._young.get(member, 0) + 1
        self._recent.append(now)
        self._forget_old(now)
        count = len(self._recent)
        if count > self.settings.restart_intensity and self.degraded is None:
            self.degraded = (f"{self.group}: {count} crashes within restart_period_s="
                             f"{self.settings.restart_period_s:g} (restart_intensity="
                             f"{self.settings.restart_intensity}); last: {reason}")
            self.log.error("event=pool_degraded group=%s crashes=%d period_s=%g last_reason=%r", self.group,
                           count, self.settings.restart_period_s, reason)
        return doubling_delay(FIRST_RESTART_DELAY_S, young, self.settings.restart_backoff_max_s)

    def refresh(self) -> None:
        """Clear the degraded mark once a whole window has passed without a young death."""
        self._forget_old(self.clock())
        if self.degraded is not None and not self._recent:
            self.log.info("event=pool_recovered group=%s", self.group)
            self.degraded = None

    def _forget_old(self, now: float) -> None:
        while self._recent and now - self._recent[0] > self.settings.restart_period_s:
            self._recent.popleft()
