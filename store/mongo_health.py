"""The MongoDB store's health and the server's clock, learnt on a thread of its own.

`health()` is asked on the receiver's event loop (every /healthz poll). Asking the server there
would block the loop for up to serverSelectionTimeoutMS (5 s) while a replica set has no primary
(an election), while the TLS proxy polls every 5 s. So a thread asks (`hello`, which needs the
primary) at most once per CHECK_INTERVAL_S while health is being asked, and at least every
REFRESH_S for the clock; `problem()` answers at once from the last check, and a check that has
had no answer for STALL_S is itself the problem.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

log = logging.getLogger("frontdesk.store.mongo")

CHECK_INTERVAL_S = 1.0   # a health answer is at most this old while someone asks
REFRESH_S = 30.0         # the server's clock is read at least this often
STALL_S = 2.0            # a check unanswered this long means the store cannot take writes now
MAX_ROUND_TRIP_S = 0.5   # a clock reading that took longer tells too little


class ServerClock:
    """The server's wall clock as seen from this host: leases, backoffs, done times, statuses and
    rate-budget slices are the server's time, so hosts whose clocks differ still agree on them.

    `now()` is this host's clock plus the offset measured from the server's `hello.localTime`
    (milliseconds), taken at the middle of the round trip: right to within half the round trip
    and a millisecond."""

    def __init__(self, local_clock: Callable[[], float] = time.time):
        self._local_clock = local_clock
        self.offset = 0.0   # server minus local, seconds

    def observe(self, server_time: float, sent_at: float, answered_at: float) -> None:
        """One reading: the server said `server_time` between sent_at and answered_at (local)."""
        if answered_at - sent_at > MAX_ROUND_TRIP_S:
            return
        self.offset = server_time - (sent_at + answered_at) / 2

    def local(self) -> float:
        """This host's clock (readings of the server's are taken against it)."""
        return self._local_clock()

    def now(self) -> float:
        return self._local_clock() + self.offset

    def to_local(self, server_time: float) -> float:
        return server_time - self.offset

    def to_server(self, local_time: float) -> float:
        return local_time + self.offset


class HealthCheck:
    """Runs `check()` (raises when the store cannot take writes) on its own thread; `problem()`
    never blocks. Built idle: `start()` starts the thread, `stop()` ends it."""

    def __init__(self, check: Callable[[], None], interval_s: float = CHECK_INTERVAL_S,
                 refresh_s: float = REFRESH_S, stall_s: float = STALL_S,
                 clock: Callable[[], float] = time.monotonic):
        self._check = check
        self._interval_s = interval_s
        self._refresh_s = refresh_s
        self._stall_s = stall_s
        self._clock = clock
        self._problem: str | None = None
        self._checked_at = clock()
        self._checking_since: float | None = None
        self._asked = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="store-health", daemon=True)

    def start(self) -> "HealthCheck":
        self._thread.start()
        return self

    def problem(self) -> str | None:
        """Why the store cannot take writes, by the last check; None when it can."""
        now = self._clock()
        since = self._checking_since
        if since is not None and now - since >= self._stall_s:
            return f"no answer from MongoDB for {now - since:.1f} s (no primary?)"
        if now - self._checked_at >= self._interval_s:
            self._asked.set()
        return self._problem

    def _run(self) -> None:
        while True:
            self._asked.wait(self._refresh_s)
            if self._stopped.is_set():
                return
            self._asked.clear()
            self._checking_since = self._clock()
            try:
                self._check()
                problem = None
            except Exception as exc:   # whatever it is, it is the answer to "can it take writes?"
                problem = str(exc)
            if problem != self._problem:
                if problem:
                    log.error("event=store_health_failed reason=%s", problem)
                else:
                    log.info("event=store_healthy_again")
            self._problem, self._checked_at, self._checking_since = problem, self._clock(), None

    def stop(self) -> None:
        """Stop the thread (a check under way finishes on its own: the thread is a daemon)."""
        self._stopped.set()
        self._asked.set()
