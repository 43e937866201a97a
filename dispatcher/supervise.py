"""Restart policy: growing backoff and Erlang-style restart intensity, for every supervised group
(the handler pool, the rate limiter, and `frontdesk run`'s services)."""
from __future__ import annotations

import logging
import time
from collections import deque

FIRST_RESTART_DELAY_S = 0.1


class RestartPolicy:
    """Delays before restarting crashed members of one group, and the group's degraded state.

    The delay doubles with every crash still inside the last restart_period_s, up to
    restart_backoff_max_s. More than restart_intensity crashes inside that window marks the
    group degraded (with the reason) and every restart waits the maximum; the mark clears when
    a whole window passes without a crash. Nothing is ever given up: restarts go on.
    """

    def __init__(self, settings, group: str, log: logging.Logger):
        self.settings = settings
        self.group = group
        self.log = log          # the supervising process's logger
        self.degraded: str | None = None
        self.crashes = 0
        self._recent: deque[float] = deque()

    def crashed(self, reason: str) -> float:
        """Record a crash; returns the delay before the restart."""
        now = time.monotonic()
        self.crashes += 1
        self._recent.append(now)
        self._forget_old(now)
        count = len(self._recent)
        if count > self.settings.restart_intensity:
            if self.degraded is None:
                self.degraded = (f"{self.group}: {count} crashes within restart_period_s="
                                 f"{self.settings.restart_period_s:g} (restart_intensity="
                                 f"{self.settings.restart_intensity}); last: {reason}")
                self.log.error("pool_degraded group=%s crashes=%d period_s=%g last_reason=%s", self.group,
                          count, self.settings.restart_period_s, reason)
            return self.settings.restart_backoff_max_s
        return min(FIRST_RESTART_DELAY_S * 2 ** (count - 1), self.settings.restart_backoff_max_s)

    def refresh(self) -> None:
        """Clear the degraded mark once a whole window has passed without a crash."""
        self._forget_old(time.monotonic())
        if self.degraded is not None and not self._recent:
            self.log.info("pool_recovered group=%s", self.group)
            self.degraded = None

    def _forget_old(self, now: float) -> None:
        while self._recent and now - self._recent[0] > self.settings.restart_period_s:
            self._recent.popleft()
