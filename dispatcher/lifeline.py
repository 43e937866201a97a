"""Children never outlive the process that started them.

Parent side, `spawn`: every child gets its own process group (a Ctrl-C in the terminal reaches
only the supervisor, which then stops its children in order) and asks Linux to send it SIGTERM
when the supervisor dies (prctl PR_SET_PDEATHSIG), so even a kill -9 of the supervisor leaves no
orphans. Child side, `exit_with_parent`: a Python child whose stdin is a pipe from the supervisor
treats EOF on stdin as "the supervisor is gone" (covers systems without prctl too).
"""
from __future__ import annotations

import ctypes
import os
import signal
import stat
import subprocess
import sys
import threading

PR_SET_PDEATHSIG = 1

try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
except (OSError, AttributeError):
    _prctl = None


def _die_with(parent_pid: int):
    def preexec() -> None:  # runs in the child between fork and exec: no allocation-heavy work
        if _prctl is not None:
            _prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)
    return preexec


def spawn(argv: list[str], env: dict[str, str], *, stdout=subprocess.PIPE,
          stderr=subprocess.PIPE) -> subprocess.Popen:
    """Start a supervised child: stdin is always a pipe from us (its lifeline)."""
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=stdout, stderr=stderr, env=env,
                            close_fds=True, process_group=0, preexec_fn=_die_with(os.getpid()))


def exit_with_parent(signum: int = signal.SIGTERM) -> bool:
    """Child side: send ourselves `signum` when stdin, a pipe from the parent, reaches EOF.

    Does nothing (returns False) when stdin is not a pipe, e.g. a terminal: then the process
    was started by hand and stops on Ctrl-C as usual.
    """
    try:
        if not stat.S_ISFIFO(os.fstat(0).st_mode):
            return False
    except OSError:
        return False

    def watch() -> None:
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        os.kill(os.getpid(), signum)

    threading.Thread(target=watch, name="parent-lifeline", daemon=True).start()
    return True
