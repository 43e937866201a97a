"""Operator requests to running dispatchers, through control values in the store.

`frontdesk scale N` writes the control `handlers`; `frontdesk top`'s `h` writes a fresh value of the
rolling-restart control. A dispatcher acts on a change of either while it runs (one that starts
later uses its own settings): read once a second, on the status cadence.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from frontdesk.store import StoreError

log = logging.getLogger("frontdesk.dispatcher")


@dataclass(frozen=True)
class ControlChange:
    """What changed since the last read: a rolling restart asked for, and/or a new handler count."""
    rolling_restart: bool = False
    handlers: int | None = None


class Controls:
    """The last values seen of the handler-count control and the rolling-restart control.
    A value that cannot be read keeps the last one seen (the store may be away for a while)."""

    def __init__(self, store, rolling_restart_name: str, handlers_name: str = "handlers"):
        self.store = store
        self.names = (handlers_name, rolling_restart_name)
        self._last: dict[str, object] = {}

    def open(self) -> None:
        """Take the values as they are now: only later changes count."""
        self._last = {name: self._read(name) for name in self.names}

    def _read(self, name: str):
        try:
            return self.store.get_control(name)
        except StoreError as exc:
            log.error("event=store_call_failed op=get_control error=%r", str(exc))
            return self._last.get(name)

    def changes(self) -> ControlChange:
        """What changed since the last call. A handler count that is not an integer >= 0 is logged
        and ignored."""
        handlers_name, restart_name = self.names
        restart = self._read(restart_name)
        rolling, self._last[restart_name] = restart != self._last.get(restart_name), restart
        value = self._read(handlers_name)
        if value == self._last.get(handlers_name):
            return ControlChange(rolling)
        self._last[handlers_name] = value
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return ControlChange(rolling, value)
        log.warning("event=control_ignored name=%s value=%r reason='not a count >= 0'", handlers_name, value)
        return ControlChange(rolling)
