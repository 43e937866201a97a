"""Restart policy (growing backoff, Erlang-style restart intensity) and plain supervised services.

A `Service` is a child that speaks no frames (the receiver, the sandbox): its stdin is a pipe
from us that it watches for EOF (`lifeline.exit_with_parent`), its output goes to our stderr, it
stops on SIGTERM. It is restarted with backoff whenever it exits while we still want it.
"""
from __future__ import annotations

import logging
import signal
import time
from collections import deque

from .lifeline import spawn
from .workers import describe_exit

log = logging.getLogger("frontdesk.dispatcher")

FIRST_RESTART_DELAY_S = 0.1


class RestartPolicy:
    """Delays before restarting crashed members of one group, and the group's degraded state.

    The delay doubles with every crash still inside the last restart_period_s, up to
    restart_backoff_max_s. More than restart_intensity crashes inside that window marks the
    group degraded (with the reason) and every restart waits the maximum; the mark clears when
    a whole window passes without a crash. Nothing is ever given up: restarts go on.
    """

    def __init__(self, settings, group: str):
        self.settings = settings
        self.group = group
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
                log.error("pool_degraded group=%s crashes=%d period_s=%g last_reason=%s", self.group,
                          count, self.settings.restart_period_s, reason)
            return self.settings.restart_backoff_max_s
        return min(FIRST_RESTART_DELAY_S * 2 ** (count - 1), self.settings.restart_backoff_max_s)

    def refresh(self) -> None:
        """Clear the degraded mark once a whole window has passed without a crash."""
        self._forget_old(time.monotonic())
        if self.degraded is not None and not self._recent:
            log.info("pool_recovered group=%s", self.group)
            self.degraded = None

    def _forget_old(self, now: float) -> None:
        while self._recent and now - self._recent[0] > self.settings.restart_period_s:
            self._recent.popleft()


class Service:
    """One supervised child without a frame protocol (receiver, sandbox)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], settings, address: str = ""):
        self.name = name
        self.argv = argv
        self.env = env
        self.settings = settings
        self.address = address
        self.policy = RestartPolicy(settings, name)
        self.proc = None
        self.wanted = True
        self._timer: float | None = None   # restart (when not running) or KILL (when stopping)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else None

    def start(self) -> None:
        try:
            self.proc = spawn(self.argv, self.env, stdout=None, stderr=None)
        except OSError as exc:
            self.proc = None
            self._timer = time.monotonic() + self.policy.crashed(f"cannot start: {exc}")
            log.error("service_start_failed name=%s error=%s", self.name, exc)
            return
        self._timer = None
        log.info("service_started name=%s pid=%d", self.name, self.proc.pid)

    def reap(self) -> None:
        if self.proc is None or self.proc.returncode is not None or self.proc.poll() is None:
            return
        how = describe_exit(self.proc.returncode)
        self.proc.stdin.close()
        if self.wanted:
            delay = self.policy.crashed(how)
            self._timer = time.monotonic() + delay
            log.warning("service_exited name=%s pid=%d how=%s restart_in_s=%.2f", self.name,
                        self.proc.pid, how, delay)
        else:
            self._timer = None
            log.info("service_stopped name=%s pid=%d how=%s", self.name, self.proc.pid, how)

    def next_timer(self) -> float | None:
        return self._timer

    def check_timers(self, now: float) -> None:
        if self._timer is None or now < self._timer:
            return
        if self.wanted and self.pid is None:
            self.start()
        elif not self.wanted and self.pid is not None:
            log.warning("service_killed name=%s pid=%d signal=KILL", self.name, self.proc.pid)
            self.proc.kill()
            self._timer = None

    def stop(self) -> None:
        """SIGTERM now, SIGKILL after kill_grace_s."""
        if not self.wanted:
            return
        self.wanted = False
        if self.pid is not None:
            self.proc.send_signal(signal.SIGTERM)
            self._timer = time.monotonic() + self.settings.kill_grace_s
        else:
            self._timer = None

    @property
    def stopped(self) -> bool:
        return self.pid is None

    def status(self) -> dict:
        return {"pid": self.pid, "address": self.address, "restarts": self.policy.crashes,
                "degraded": self.policy.degraded}
