"""Retention off the dispatcher's loop: a thread of its own deletes done events older than
retention_s (store.purge_done paces itself to leave the store's writer lock free half the time),
so a purge of any size never stalls deliveries — it used to run inside a loop turn. The same
thread prunes the status documents of processes silent for STATUS_PRUNE_S (killed without a word:
`frontdesk status` shows them STALE until then)."""
from __future__ import annotations

import logging
import threading

from frontdesk.store import StoreError

log = logging.getLogger("frontdesk.dispatcher")

STATUS_PRUNE_S = 3600.0


def purge_interval(retention_s: float) -> float:
    """A quarter of the retention, between a minute and an hour."""
    return max(60.0, min(3600.0, retention_s / 4))


class Purger:
    """Retention on a thread of its own: a pass every interval_s, built idle (`start()`)."""

    def __init__(self, store, retention_s: float, interval_s: float | None = None,
                 status_prune_s: float = STATUS_PRUNE_S):
        self.store = store
        self.retention_s = retention_s
        self.status_prune_s = status_prune_s
        self.interval_s = purge_interval(retention_s) if interval_s is None else interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="purger", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """No more purges; one under way ends at its next chunk when the store closes."""
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.purge_once()

    def purge_once(self) -> None:
        """One pass: done events past retention_s deleted, long-silent status documents pruned."""
        try:
            self.store.purge_done(self.retention_s)
            pruned = self.store.prune_statuses(self.status_prune_s)
            if pruned:
                log.info("event=statuses_pruned count=%d silent_for_s=%g", pruned, self.status_prune_s)
        except StoreError as exc:
            log.error("event=purge_failed error=%r", str(exc))
