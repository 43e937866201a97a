"""How the two secrets reach the processes that use them, and no other (README, "Least privilege").

A process that resolved its settings with a secret among them (`frontdesk run`; a dispatcher,
receiver or sandbox started on its own) seals each value once, at start, into an anonymous
in-memory file: a memfd with no path, its contents sealed and its mode 0. A child that needs a
secret inherits that descriptor, its number in `LINE_CHANNEL_SECRET_FD` or
`LINE_CHANNEL_ACCESS_TOKEN_FD` (protocol/config.py reads it): the value is in no environment and
no command line, and mode 0 keeps the same user from opening it again through /proc/<pid>/fd. A
restarted child gets the same descriptor, so nothing is read twice and every child of one run
holds the same value. Every process that holds a secret, as a value or as a descriptor, makes
itself non-dumpable: the same user can then read neither its environment nor its memory, nor
attach to it or take its descriptors (ptrace, pidfd_getfd). Which child gets which secret is
decided where it is started (command/run.py, dispatcher/arbiter.py); handlers get none.
"""
from __future__ import annotations

import ctypes
import fcntl
import logging
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .config import CREDENTIALS_DIRECTORY, KNOBS, KNOBS_BY_NAME, Settings

log = logging.getLogger("frontdesk.credentials")

PR_SET_DUMPABLE = 4

try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
except (OSError, AttributeError):
    _prctl = None


def prctl(option: int, value: int) -> bool:
    """Linux's prctl(option, value); False where there is none (not Linux) or it failed (errno set)."""
    return _prctl is not None and _prctl(option, value, 0, 0, 0) == 0


def protect_held_secrets(settings: Settings) -> None:
    """Make this process non-dumpable when it holds a secret (a value or a descriptor)."""
    if not settings.holds_secrets() or prctl(PR_SET_DUMPABLE, 0):
        return
    log.error("event=not_dumpable_failed error=%s effect=same_user_may_read_this_process",
              os.strerror(ctypes.get_errno()) if _prctl is not None else "no prctl on this system")


def seal(name: str, value: str) -> int:
    """A descriptor of a sealed, mode-0 in-memory file holding `value` (not inherited by exec; Linux)."""
    fd = os.memfd_create(f"frontdesk-{name}", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        data = memoryview(value.encode())
        while data:
            data = data[os.write(fd, data):]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS,
                    fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE)
        os.fchmod(fd, 0)
    except OSError:
        os.close(fd)
        raise
    return fd


def secret_env_names() -> frozenset[str]:
    """Environment names that give a secret: its value, file or descriptor, systemd's folder."""
    return frozenset({CREDENTIALS_DIRECTORY, *(name for knob in KNOBS if knob.secret
                                                 for name in (knob.env_name, knob.file_env_name, knob.fd_env_name))})


def without_secrets(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` with every name that gives a secret left out: the base of every child's environment."""
    names = secret_env_names()
    return {name: value for name, value in environ.items() if name not in names}


@dataclass(frozen=True)
class ChildSecrets:
    """What one child is given: the descriptors' numbers for its environment, the descriptors to pass."""
    environ: dict[str, str]
    pass_fds: tuple[int, ...]


NO_SECRETS = ChildSecrets({}, ())


class SealedSecrets:
    """This process's secrets as descriptors, made once at start and given to every child (and every
    restart of one) that needs them. A secret that came to us as a descriptor we did not read
    (settings.secret_descriptor) is handed on as it is; one we hold as a value is sealed."""

    def __init__(self, settings: Settings, names: Iterable[str]):
        self._fds: dict[str, int] = {}
        for name in names:
            fd = settings.secret_descriptor(name)
            if fd is None and getattr(settings, name):
                fd = seal(name, getattr(settings, name))
            if fd is not None:
                self._fds[name] = fd

    def for_child(self, *names: str) -> ChildSecrets:
        """The secrets `names` (those we have) for one child."""
        given = {name: fd for name, fd in self._fds.items() if name in names}
        return ChildSecrets({KNOBS_BY_NAME[name].fd_env_name: str(fd) for name, fd in given.items()},
                            tuple(given.values()))
