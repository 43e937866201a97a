"""How every frontdesk process starts, and the name it publishes its status under.

`frontdesk run` and the dispatcher start their children as `python -m frontdesk.<role>` (so `ps`
names the role) with every setting in the environment (`Settings.to_environ`) and the secrets
the role needs as inherited descriptors (protocol/credentials.py); the child loads them back
here, sets up the one log format (protocol/logs.py), and a child holding a secret makes itself
non-dumpable.
"""
from __future__ import annotations

import cProfile
import os
import sys
import time
from typing import Callable

from .config import ConfigError, Settings, load
from .credentials import protect_held_secrets
from .logs import setup_logging

PROFILE_ENV = "FRONTDESK_PROFILE_DIR"   # a folder: each role runs under cProfile and leaves its figures there
# The bounds (seconds) of the dispatcher's handling-time histograms, whose counts its status
# document publishes (`handling_counts`) for `frontdesk top` and the status page to read.
HANDLING_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


def run_role(name: str, main: Callable[[Settings], int | None], unread_secrets: tuple[str, ...] = ()) -> int:
    """Run one role's `main(settings)` with settings from the environment and the config file.

    Args:
        name: the role, as the error line names it (`frontdesk receiver: ...`).
        main: the role's entry point; its return value is the exit status (None: 0).
        unread_secrets: secrets that come as descriptors and are handed on unread (see config.load).

    Returns:
        The exit status: main's, 2 for a configuration error (named on stderr), 130 after Ctrl-C.
    """
    try:
        settings = load(unread_secrets=unread_secrets)
        setup_logging(settings.log_level, settings.log_file)
        settings.log_deprecations()
        protect_held_secrets(settings)
        profile_dir = os.environ.get(PROFILE_ENV)
        if profile_dir:
            return _profiled(name, main, settings, profile_dir)
        return main(settings) or 0
    except ConfigError as exc:
        print(f"frontdesk {name}: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _profiled(name: str, main: Callable[[Settings], int | None], settings: Settings, folder: str) -> int:
    """Run main under cProfile (its calling thread's CPU time only) and write the figures to
    `folder/<role>-<pid>.prof` at exit, for `python -m pstats` (docs/benchmarks.md, profiling)."""
    profile = cProfile.Profile(time.thread_time)   # CPU, not waits (GIL hand-offs, epoll)
    try:
        return profile.runcall(main, settings) or 0
    finally:
        profile.dump_stats(os.path.join(folder, f"{name}-{os.getpid()}.prof"))


def status_name(role: str, host: str, pid: int) -> str:
    """The name a process publishes its status document under in the store: `role:host:pid`."""
    return f"{role}:{host}:{pid}"


def status_role(name: str) -> str:
    """The role of a status document's name (see status_name)."""
    return name.split(":", 1)[0]
