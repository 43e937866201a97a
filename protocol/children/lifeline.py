"""Children never outlive the process that started them.

`spawn` gives every child its own process group (a Ctrl-C in the terminal reaches only the
supervisor, which then stops its children in order) and asks Linux to send it SIGTERM when the
supervisor dies (prctl PR_SET_PDEATHSIG), so even a kill -9 of the supervisor leaves no orphans.
Handlers also see EOF on stdin, which the protocol defines as "finish and exit".
`PlainProcess` is such a child that speaks no frames (`frontdesk run`'s services).
"""
from __future__ import annotations

import os
import pwd
import signal
import subprocess
from dataclasses import dataclass

from ..config import ConfigError
from ..credentials import prctl

PR_SET_PDEATHSIG = 1


def _die_with(parent_pid: int):
    def preexec() -> None:  # runs in the child between fork and exec: no allocation-heavy work
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)
    return preexec


@dataclass(frozen=True)
class Identity:
    """The user a child runs as: its uid and primary group, no supplementary groups."""
    name: str
    uid: int
    gid: int


def identity_of(user: str) -> Identity | None:
    """The Identity for the `handler_user` setting (a name or a uid); None for "our own user".

    Raises ConfigError naming the setting when the user does not exist, or when another user is
    asked for and we are not root (only root can start a process as someone else)."""
    if not user:
        return None
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise ConfigError(f"handler_user: there is no user {user!r} on this machine") from None
    if entry.pw_uid == os.geteuid():
        return None
    if os.geteuid() != 0:
        raise ConfigError(f"handler_user: running handlers as {entry.pw_name!r} needs frontdesk to "
                          f"start as root (it runs as uid {os.geteuid()})")
    return Identity(entry.pw_name, entry.pw_uid, entry.pw_gid)


def spawn(argv: list[str], env: dict[str, str], *, stdout=subprocess.PIPE,
          stderr=subprocess.PIPE, identity: Identity | None = None,
          pass_fds: tuple[int, ...] = ()) -> subprocess.Popen:
    """Start a supervised child: stdin is always a pipe from us (its lifeline); as `identity`
    when given (the user is switched before preexec_fn runs, so the death signal still holds).
    Of our descriptors it inherits only `pass_fds` (the secrets it needs, protocol/credentials.py)."""
    switch = {} if identity is None else {"user": identity.uid, "group": identity.gid, "extra_groups": []}
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=stdout, stderr=stderr, env=env,
                            close_fds=True, pass_fds=pass_fds, process_group=0,
                            preexec_fn=_die_with(os.getpid()), **switch)


def describe_exit(returncode: int) -> str:
    """How a child ended, in words: `exited with status 1`, `killed by SIGKILL`."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"


class PlainProcess:
    """One started child without a frame protocol: its stdin is only its lifeline, its output goes
    where ours goes. What the life cycle (lifecycle.ChildProcess) needs of it, over a Popen."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.pid = proc.pid

    def reap(self) -> int | None:
        """The exit status once it has exited (its lifeline then closed), else None."""
        if self.proc.poll() is None:
            return None
        self.close_stdin()
        return self.proc.returncode

    def signal(self, signum: int) -> None:
        if self.proc.returncode is None:
            try:
                self.proc.send_signal(signum)
            except ProcessLookupError:
                pass

    def close_stdin(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
