"""Children never outlive the process that started them.

`spawn` gives every child its own process group (a Ctrl-C in the terminal reaches only the
supervisor, which then stops its children in order) and asks Linux to send it SIGTERM when the
supervisor dies (prctl PR_SET_PDEATHSIG), so even a kill -9 of the supervisor leaves no orphans.
Handlers also see EOF on stdin, which the protocol defines as "finish and exit".
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

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
