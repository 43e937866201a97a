"""How every frontdesk process starts: the settings its parent resolved, one log format, an exit
status.

`frontdesk run` and the dispatcher start their children as `python -m frontdesk.<role>` (so `ps`
names the role) with every setting in the environment (`Settings.to_environ`) and the secrets
the role needs as inherited descriptors (protocol/credentials.py); the child loads them back
here, and a child holding a secret makes itself non-dumpable. The log format is shared by every
process: `time LEVEL logger[pid] key=value ...`, on stderr or in the file `log_file` names
(`frontdesk logs` reads it, command/logs.py).
"""
from __future__ import annotations

import logging
import logging.handlers
import sys
from typing import Callable

from .config import ConfigError, Settings, load
from .credentials import protect_held_secrets

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s"


def setup_logging(level: str, log_file: str = "") -> None:
    """Log in the one format of every frontdesk process: to stderr, or appended to `log_file`.

    Every process of a system appends to the same file (one write per line, O_APPEND); a
    WatchedFileHandler reopens it when logrotate has moved it away. ConfigError when it cannot
    be opened."""
    handler: logging.Handler
    if log_file:
        try:
            handler = logging.handlers.WatchedFileHandler(log_file, encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"log_file {log_file!r}: cannot open it: {exc.strerror}") from None
    else:
        handler = logging.StreamHandler(sys.stderr)
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), format=LOG_FORMAT,
                        handlers=[handler])


def run_role(name: str, main: Callable[[Settings], int | None], unread_secrets: tuple[str, ...] = ()) -> int:
    """Run one role's `main(settings)` with settings from the environment and the config file;
    returns its exit status (2 for a configuration error, named on stderr). Secrets named in
    `unread_secrets` that come as descriptors are handed on unread (see config.load)."""
    try:
        settings = load(unread_secrets=unread_secrets)
        setup_logging(settings.log_level, settings.log_file)
        protect_held_secrets(settings)
        return main(settings) or 0
    except ConfigError as exc:
        print(f"frontdesk {name}: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def status_name(role: str, host: str, pid: int) -> str:
    """The name a process publishes its status document under in the store: `role:host:pid`."""
    return f"{role}:{host}:{pid}"


def status_role(name: str) -> str:
    """The role of a status document's name (see status_name)."""
    return name.split(":", 1)[0]
