"""The table of handler processes, drawn once for `frontdesk status` (from the status documents
the dispatchers publish) and `frontdesk top` (from views with rates, command/observe.py).

One row per handler process, the columns an operator reads when a pool misbehaves; with `rates`,
the measured ones (events/s, busy share, handling p50/p99) stand between in_flight and handled.
`figure` and `percent` write a number the way every table of top and status does.
"""
from __future__ import annotations

from typing import Callable, NamedTuple


class Column(NamedTuple):
    """One column: its title, its alignment and width, and how a handler's entry fills it."""
    title: str
    align: str        # a format alignment and width: "<12", ">7"
    cell: Callable[[dict], str]


def figure(value, digits: int = 0) -> str:
    """A figure as a table shows it: "-" when unknown, floats to `digits` places."""
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def percent(share) -> str:
    """A share (0..1) as a whole percentage; "-" when unknown."""
    return "-" if share is None else f"{share * 100:.0f}%"


_NAMED = (
    Column("handler", "<12", lambda h: str(h.get("name", "?"))),
    Column("pid", ">7", lambda h: str(h.get("pid") or "-")),
    Column("state", "<16", lambda h: str(h.get("state", "?"))),
    Column("in_flight", ">9", lambda h: figure(h.get("in_flight", 0))),
)
_RATES = (
    Column("ev/s", ">8", lambda h: figure(h.get("events_per_s"), 1)),
    Column("busy", ">5", lambda h: percent(h.get("busy_share"))),
    Column("p50ms", ">6", lambda h: figure(h.get("p50_ms"))),
    Column("p99ms", ">6", lambda h: figure(h.get("p99_ms"))),
)
_COUNTS = (
    Column("handled", ">8", lambda h: figure(h.get("handled", 0))),
    Column("restarts", ">8", lambda h: figure(h.get("restarts", 0))),
)


def handler_table(handlers: list, rates: bool = False, indent: str = "") -> list[str]:
    """The header and one line per handler (entries that are not dicts are skipped); no lines at
    all for no handlers."""
    rows = [h for h in handlers if isinstance(h, dict)] if isinstance(handlers, list) else []
    if not rows:
        return []
    columns = (*_NAMED, *(_RATES if rates else ()), *_COUNTS)

    def line(cells) -> str:
        return indent + " ".join(f"{cell:{column.align}}" for column, cell in zip(columns, cells)).rstrip()
    return [line(column.title for column in columns)] + [line(column.cell(h) for column in columns) for h in rows]
