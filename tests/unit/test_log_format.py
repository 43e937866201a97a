"""Every log call in frontdesk writes the one format (protocol/logs.py): its
message starts with `event=<snake_name>` and goes on in `key=value` fields. Read from the source
(AST), so a new log call is checked the day it is written."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROOMS = ("receiver", "command", "protocol", "handlers", "bench", "store", "sandbox", "dispatcher", "ratelimiter")
LEVELS = {"debug", "info", "warning", "error", "critical", "exception"}
EVENT = re.compile(r"^event=[a-z][a-z0-9_]*( |$)")


def _log_calls(path: Path):
    """(line, the message's literal text or None) of each call of a logger method in a file."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        method, owner = node.func.attr, node.func.value
        if not (isinstance(owner, ast.Name) and owner.id in ("log", "logger", "logging")):
            continue
        args = node.args[1:] if method == "log" else node.args
        if method not in LEVELS | {"log"} or not args:
            continue
        message = args[0]
        yield node.lineno, message.value if isinstance(message, ast.Constant) and isinstance(message.value, str) else None


def _files():
    for room in ROOMS:
        for path in sorted((ROOT / room).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix()


@pytest.mark.parametrize("relative", list(_files()))
def test_every_log_line_starts_with_an_event(relative):
    wrong = [(line, text) for line, text in _log_calls(ROOT / relative) if text is None or not EVENT.match(text)]
    assert wrong == [], f"{relative}: log messages must be a literal starting with event=<snake_name>"
