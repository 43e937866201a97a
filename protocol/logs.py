"""The one log format of every frontdesk process, and where its lines go.

Each line is `time LEVEL logger[pid] event=<snake_name> key=value ...`: the logger names the role
(`frontdesk.dispatcher`), the pid ties a process's lines together, and the message starts with
`event=` followed by `key=value` fields, so that `frontdesk logs` (command/logs.py), grep and log
shippers read every process the same way. Lines go to stderr, or are appended to the file
`log_file` names.
"""
from __future__ import annotations

import logging
import logging.handlers
import sys

from .config import ConfigError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s"


def setup_logging(level: str, log_file: str = "") -> None:
    """Log in the one format of every frontdesk process: to stderr, or appended to `log_file`.

    Every process of a system appends to the same file (one write per line, O_APPEND); a
    WatchedFileHandler reopens it when logrotate has moved it away.

    Raises:
        ConfigError: `log_file` cannot be opened.
    """
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
