"""A long-lived process's status document in the store: published every STATUS_INTERVAL_S,
withdrawn when it stops cleanly.

Every dispatcher publishes `dispatcher:<host>:<pid>`, `frontdesk run` publishes `run:<host>:<pid>`
(protocol/process.py names them); `frontdesk status`, `frontdesk top` and the status page read them
(command/observe.py), and a document silent for a few intervals shows as STALE. One publisher
serves both, so the cadence, the error handling and the withdrawal are written once.
"""
from __future__ import annotations

import logging
import time
from typing import Callable

from .base import StoreError, StoreGone

STATUS_INTERVAL_S = 1.0   # every long-lived process publishes its status this often


class StatusPublisher:
    """Publishes one process's status document on its cadence and withdraws it at a clean stop.

    Args:
        store: where the document goes (`store` may be replaced: a supervisor reopens a replaced file).
        name: the document's name (`role:host:pid`).
        document: builds the document, asked at each publication.
        on_gone: called when the store's file was removed or replaced underneath (StoreGone);
            what to do then is the process's call (exit to be restarted, or reopen the file).
        log: the publishing process's logger. `clock` (monotonic) is injected for the unit tests.
    """

    def __init__(self, store, name: str, document: Callable[[], dict], on_gone: Callable[[StoreGone], None],
                 log: logging.Logger, *, clock: Callable[[], float] = time.monotonic,
                 interval_s: float = STATUS_INTERVAL_S):
        self.store = store
        self.name = name
        self.document = document
        self.on_gone = on_gone
        self.log = log
        self.clock = clock
        self.interval_s = interval_s
        self.next_at = 0.0    # at once, the first time

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def skip(self) -> None:
        """Nothing this time (the store is being reopened); the next one an interval later."""
        self.next_at = self.clock() + self.interval_s

    def publish(self) -> None:
        """Write the document now. A store that cannot be reached is logged (the next try comes an
        interval later); a store whose file is gone is the owner's to handle (`on_gone`)."""
        self.skip()
        try:
            self.store.put_status(self.name, self.document())
        except StoreGone as exc:
            self.on_gone(exc)
        except StoreError as exc:
            self.log.error("event=store_call_failed op=put_status error=%r", str(exc))

    def withdraw(self) -> None:
        """A clean stop leaves nothing to show: `frontdesk status` lists running processes."""
        try:
            self.store.delete_status(self.name)
        except StoreError as exc:
            self.log.error("event=store_call_failed op=delete_status error=%r", str(exc))
