"""The one life cycle of a supervised child, in the manner of supervisor's process.py: named
states, every change through one method that checks the state it leaves, and two deadlines that
never mean each other (when to start again, when to kill).

```
            start()                 ready()              drain()             close()
 STOPPED ----------> STARTING ----------------> READY -----------> DRAINING ----------> CLOSING
 BACKOFF --'            |                         |                    |                   |
    ^                   '----------------- terminate() / kill() -------+-------------------'
    |                                             v
    '---- exits while wanted (restart_at) ---- STOPPING (kill_at: SIGKILL)
 STOPPED <-- exits when not wanted (retire()) ------'   (any state with a process may exit)
```

`frontdesk run`'s services (command/supervisor.py), the dispatcher's rate limiter
(dispatcher/apilink.py) and each handler slot (dispatcher/workers.py) are SupervisedChild
subclasses: they say how a process is spawned and what a life adds; reaping, restarting with
backoff, and the TERM-then-KILL escalation are here, once.
"""
from __future__ import annotations

import enum
import logging
import signal
import time
from typing import Callable, Protocol

from .lifeline import describe_exit
from .policy import RestartPolicy


class ChildState(enum.Enum):
    """Where a supervised child is; the values are what status documents show."""
    STOPPED = "stopped"            # no process and none to start (before the first, after a stop)
    BACKOFF = "waiting_restart"    # no process; the next one starts at restart_at
    STARTING = "starting"          # spawned, not serving yet (a handler before its handshake)
    READY = "ready"                # serving
    DRAINING = "draining"          # finishing what it has, taking nothing new
    CLOSING = "closing"            # its stdin closed: it finishes and exits by kill_at
    STOPPING = "stopping"          # told to stop (TERM); killed at kill_at


STOPPED, BACKOFF, STARTING, READY, DRAINING, CLOSING, STOPPING = ChildState
WITH_PROCESS = (STARTING, READY, DRAINING, CLOSING, STOPPING)


class StateError(AssertionError):
    """A transition the life cycle does not have: a bug in the caller, named with both states."""


class ChildProcess(Protocol):
    """One process of a supervised child, as its life cycle needs it."""
    pid: int

    def reap(self) -> int | None:
        """Its exit status once it has exited (its remaining output read first), else None."""

    def signal(self, signum: int) -> None: ...

    def close_stdin(self) -> None:
        """EOF on its stdin once what is queued is written: "finish and exit"."""


def field(value) -> str:
    """A log field's value: as it is, or quoted (%r) when it has spaces."""
    text = str(value)
    return repr(text) if " " in text or not text else text


class SupervisedChild:
    """One supervised child across its processes.

    It owns its state, its current process, the restart deadline (`restart_at`, in BACKOFF) and
    the kill deadline (`kill_at`, in CLOSING and STOPPING), and whether it is wanted: a wanted child
    that exits is restarted after the delay its group's RestartPolicy gives; one retired (drained,
    stopped, a replaced handler) ends STOPPED. Every change of state goes through `_to`, which checks
    the state it leaves and logs `event=child_state name=… pid=… from=… to=…`. Subclasses spawn the
    process (`_spawn`) and may add to a life: `_started` (after a spawn), `_exiting` (before the
    restart decision), `_served` (its work counts as served), `_closing_overdue` (CLOSING past
    kill_at: KILL by default). `clock` (monotonic seconds) is injected for the unit tests.
    """

    def __init__(self, name: str, policy: RestartPolicy, log: logging.Logger, *,
                 clock: Callable[[], float] = time.monotonic, wanted: bool = True):
        self.name = name
        self.policy = policy
        self.log = log
        self.clock = clock
        self.wanted = wanted
        self.state = STOPPED
        self.process: ChildProcess | None = None
        self.pid: int | None = None          # the current process's, or the last one's
        self.restart_at: float | None = None
        self.kill_at: float | None = None
        self.restarts = 0

    # --- transitions ------------------------------------------------------------------------------
    def _to(self, new: ChildState, *allowed: ChildState, level: int = logging.INFO, **fields) -> None:
        """The one way to change state: from one of `allowed` only, logged with `fields`."""
        old = self.state
        if old not in allowed:
            raise StateError(f"{self.name}: {old.value} -> {new.value} is no transition of its life cycle "
                             f"(only from {', '.join(state.value for state in allowed)})")
        self.state = new
        extra = "".join(f" {key}={field(value)}" for key, value in fields.items())
        self.log.log(level, "event=child_state name=%s pid=%s from=%s to=%s%s", self.name, self.pid,
                     old.value, new.value, extra)

    def start(self) -> bool:
        """Spawn its next process: STOPPED or BACKOFF -> STARTING. A spawn that fails is a crash
        (BACKOFF -> a later try). Returns whether a process started."""
        if self.state not in (STOPPED, BACKOFF):   # checked before anything is spawned
            self._to(STARTING, STOPPED, BACKOFF)
        self.restart_at = None
        try:
            process = self._spawn()
        except OSError as exc:
            self._crashed(f"cannot start: {exc.strerror or exc}", logging.ERROR, (STOPPED, BACKOFF))
            return False
        self.process, self.pid = process, process.pid
        self.policy.started(self.name)
        self._to(STARTING, STOPPED, BACKOFF)
        self._started()
        return True

    def ready(self, **fields) -> None:
        """It serves now (a handler answered the handshake; a service at once): STARTING -> READY."""
        self._to(READY, STARTING, **fields)

    def drain(self, **fields) -> None:
        """Take nothing new, finish what it has (and exit once closed): not restarted any more."""
        self.retire()
        if self.state in (STARTING, READY):
            self._to(DRAINING, STARTING, READY, **fields)

    def close(self, grace_s: float) -> None:
        """Close its stdin (it finishes and exits); past grace_s, `_closing_overdue`."""
        self._to(CLOSING, STARTING, READY, DRAINING)
        self.kill_at = self.clock() + grace_s
        self.process.close_stdin()

    def terminate(self, grace_s: float, signum: int = signal.SIGTERM, level: int = logging.INFO, **fields) -> None:
        """Signal it to stop (TERM) and KILL it after grace_s; a no-op once stopping or gone."""
        if self.state not in (STARTING, READY, DRAINING, CLOSING):
            return
        self._to(STOPPING, STARTING, READY, DRAINING, CLOSING, level=level, **fields)
        self.kill_at = self.clock() + grace_s
        self.process.signal(signum)

    def kill(self, **fields) -> None:
        """SIGKILL now (a fast stop)."""
        if self.state in (STARTING, READY, DRAINING, CLOSING):
            self._to(STOPPING, STARTING, READY, DRAINING, CLOSING, **fields)
        if self.process is not None:
            self.kill_at = None
            self.process.signal(signal.SIGKILL)

    def retire(self) -> None:
        """Not wanted any more: it is not restarted when it exits, and a pending restart is off."""
        self.wanted = False
        if self.state is BACKOFF:
            self.restart_at = None
            self._to(STOPPED, BACKOFF)

    def reap(self) -> int | None:
        """Its exit status if its process has just exited, else None. A wanted child goes to
        BACKOFF (restart after its group's delay, at once if it served), another one to STOPPED."""
        if self.process is None:
            return None
        returncode = self.process.reap()
        if returncode is None:
            return None
        self._exiting(returncode)
        self.process, self.kill_at = None, None
        how = describe_exit(returncode)
        if self.wanted:
            self._crashed(self._crash_reason(returncode), logging.WARNING, WITH_PROCESS, how=how)
        else:
            self._to(STOPPED, *WITH_PROCESS, how=how)
        return returncode

    def _crashed(self, reason: str, level: int, allowed, **fields) -> None:
        delay = self.policy.crashed(reason, self.name, served=self._served())
        self.restarts += 1
        self.restart_at = self.clock() + delay
        fields = fields or {"reason": reason}
        self._to(BACKOFF, *allowed, level=level, restart_in_s=f"{delay:.2f}", **fields)

    # --- timers -----------------------------------------------------------------------------------
    def next_timer(self) -> float | None:
        """The monotonic time at which `check_timers` has something to do."""
        if self.state is BACKOFF:
            return self.restart_at
        if self.state in (CLOSING, STOPPING):
            return self.kill_at
        return None

    def check_timers(self, now: float) -> None:
        if self.state is BACKOFF and now >= self.restart_at:
            self.start()
        elif self.kill_at is not None and now >= self.kill_at:
            if self.state is STOPPING:
                self.log.warning("event=child_killed name=%s pid=%s signal=KILL", self.name, self.pid)
                self.kill_at = None
                self.process.signal(signal.SIGKILL)
            elif self.state is CLOSING:
                self._closing_overdue()

    @property
    def stopped(self) -> bool:
        return self.state is STOPPED

    # --- for subclasses ---------------------------------------------------------------------------
    def _spawn(self) -> ChildProcess:
        """Start a process (raises OSError when it cannot be started)."""
        raise NotImplementedError

    def _started(self) -> None:
        """A process was spawned (STARTING): what its life begins with."""

    def _exiting(self, returncode: int) -> None:
        """Its process exited (output read): what the owner must settle before the restart decision."""

    def _served(self) -> bool:
        """Whether this life did its work (its crash then restarts at once)."""
        return False

    def _crash_reason(self, returncode: int) -> str:
        return describe_exit(returncode)

    def _closing_overdue(self) -> None:
        """Its stdin has been closed for the grace and it still runs: KILL."""
        self.kill(reason="did not exit after its stdin closed")
