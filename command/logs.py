"""`frontdesk logs [ROLE] [-f] [-n N]`: the log file's last lines, of every process or of one role.

With `log_file` set, every process of a system appends its lines to that one file
(protocol/logs.py). A line names its logger and pid (`time LEVEL logger[pid] ...`); the logger
names the role (`frontdesk.dispatcher`), and the pid carries it to that process's other lines (a
dispatcher's `frontdesk.store.sqlite` lines, its tracebacks). `handlers` are the lines the
dispatcher logs for its handlers' stderr and `log` notifications (`event=child_stderr
name=handler-1 …`, `event=handler_log name=handler-1 …`). Following polls the file four
times a second, as `tail -F` does without inotify (the standard library has no file-change
notification), and reopens it when logrotate has moved it.
"""
from __future__ import annotations

import os
import re
import sys
import time
from collections import deque

ROLES = ("run", "receiver", "dispatcher", "ratelimiter", "handlers", "sandbox", "statuspage")
FOLLOW_EVERY_S = 0.25
_LINE = re.compile(r"\S+ \S+ [A-Z]+ (?P<logger>[\w.\-]+)\[(?P<pid>\d+)\] (?P<message>.*)")
_HANDLER_LINE = re.compile(r"event=(child_stderr|handler_log) name=handler-\d+ ")
_PENDING_MAX = 200   # lines kept for a pid whose role is not known yet


class Roles:
    """Tells which role each line of the log file comes from, as the lines are read in order."""

    def __init__(self):
        self.by_pid: dict[str, str] = {}
        self.last: str | None = None   # the role of the line before: a continuation line's

    def of(self, line: str) -> tuple[str | None, str | None]:
        """(the role of the line or None when unknown, its pid or None for a continuation line)."""
        match = _LINE.match(line)
        if match is None:
            return self.last, None
        pid, logger = match["pid"], match["logger"]
        role = _role_of_logger(logger)
        if role is not None:
            self.by_pid[pid] = role
        role = self.by_pid.get(pid)
        if role == "dispatcher" and _HANDLER_LINE.match(match["message"]):
            role = "handlers"
        self.last = role
        return role, pid


def _role_of_logger(logger: str) -> str | None:
    parts = logger.split(".")
    if len(parts) >= 2 and parts[0] == "frontdesk" and parts[1] in ROLES:
        return parts[1]
    return None


class LogFilter:
    """The lines of one role (or all, role None) in the order written; a line whose process is
    not known yet waits until its process's first line of a role logger. The dispatcher's lines
    include its handlers'."""

    def __init__(self, role: str | None):
        self.role = role
        self.roles = Roles()
        self.pending: dict[str, deque[str]] = {}

    def feed(self, line: str) -> list[str]:
        """The lines to print now, given the next line of the file."""
        if self.role is None:
            return [line]
        role, pid = self.roles.of(line)
        if role is None and pid is not None:
            self.pending.setdefault(pid, deque(maxlen=_PENDING_MAX)).append(line)
            return []
        earlier = self.pending.pop(pid, ()) if pid is not None else ()
        shown = [] if self.roles.by_pid.get(pid) != self.role else list(earlier)
        if role == self.role or (self.role == "dispatcher" and role == "handlers"):
            shown.append(line)
        return shown


def main(settings, args) -> int:
    if not settings.log_file:
        print("frontdesk logs: no log file: log_file is not set, so every process logs to stderr. Set it "
              "(--log-file PATH, or FRONTDESK_LOG_FILE) for the system and for this command; under systemd "
              "the journal has the lines: journalctl -u frontdesk -f --grep ' frontdesk\\.dispatcher\\['",
              file=sys.stderr)
        return 2
    if args.lines < 0:
        print(f"frontdesk logs: -n must be 0 or more, got {args.lines}", file=sys.stderr)
        return 2
    path = settings.log_file
    if not os.path.exists(path) and not args.follow:
        print(f"frontdesk logs: {path} does not exist (nothing has logged to it yet)", file=sys.stderr)
        return 1
    reader = Reader(path, LogFilter(args.role))
    last: deque[str] = deque(maxlen=args.lines)
    try:
        reader.read(last.extend)
        sys.stdout.writelines(last)
        sys.stdout.flush()
        while args.follow:
            time.sleep(FOLLOW_EVERY_S)
            reader.read(sys.stdout.writelines)
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    return 0


class Reader:
    """Reads a log file's complete lines from where it stopped; starts again at the top of a new
    file at the path (logrotate moved the old one) or of a truncated one."""

    def __init__(self, path: str, keep: LogFilter):
        self.path = path
        self.keep = keep
        self.position = 0
        self.identity: tuple[int, int] | None = None

    def read(self, emit) -> None:
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:   # not created yet, or moved away and not created again yet
            return
        with f:
            stat = os.fstat(f.fileno())
            if (stat.st_dev, stat.st_ino) != self.identity or stat.st_size < self.position:
                self.position, self.identity = 0, (stat.st_dev, stat.st_ino)
            f.seek(self.position)
            for raw in f:
                if not raw.endswith(b"\n"):   # still being written: read it whole next time
                    break
                self.position += len(raw)
                emit(self.keep.feed(raw.decode("utf-8", errors="replace")))
