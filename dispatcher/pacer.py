"""When the dispatcher talks to the store.

The Router (dispatcher/router.py) says what (claims, acks, releases, lease extensions); the
StorePacer says when: a paced store turn that carries the acks with the claim, a wake-up when the
store's next retry backoff or foreign lease runs out, a slow re-scan every `feed_rescan_s` (a
change feed may miss a wake-up), lease extension every `lease_s`/3, and the change feed itself.
Timers only bound how long the loop sleeps (docs/dispatcher.md, "How it works").
"""
from __future__ import annotations

import logging
import time
from typing import Callable

from frontdesk.store import StoreError

from .router import Router

log = logging.getLogger("frontdesk.dispatcher")


class StorePacer:
    """The store's moments for one dispatcher: the turn's pace, wake-ups, re-scans, lease extension,
    and the change feed (opened in `open()`). `clock` (monotonic) and `wall` (epoch) are injected."""

    def __init__(self, store, router: Router, settings, *, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time):
        self.store = store
        self.router = router
        self.settings = settings
        self.clock, self.wall = clock, wall
        now = clock()
        self.turn_at = 0.0
        self.rescan_at = now + settings.feed_rescan_s
        self.extend_at = now + settings.lease_s / 3
        self.wakeup_at: float | None = None
        self._feed = None

    def open(self, loop) -> None:
        """Follow the store's change feed on the loop."""
        self._feed = self.store.change_feed()
        loop.add_reader(self._feed.fileno(), self._on_feed)

    def close(self) -> None:
        if self._feed is not None:
            self._feed.close()
            self._feed = None

    def _on_feed(self) -> None:
        self._feed.drain()
        self.router.wake()

    def turn_due(self, now: float, waiting: bool, room: Callable[[], tuple[int, int]]) -> bool:
        """Acks and claims go to the store at most every store_turn_ms, unless half the handlers'
        window is free and the store may have events for it: under load each store transaction
        then carries many events, not one or two (at 2,000 events/s: 0.32 -> 0.19 CPU ms per event
        in the dispatcher, e2e p99 lower too, docs/benchmarks.md); when idle, a new event goes at
        once. Acks alone wait for the paced turn (the keys they free are ours: their runs).

        Args:
            waiting: claimed suspects wait for a handler (placed at a store turn).
            room: (free slots, window) of the ready handlers, asked only when it matters.
        """
        if now >= self.turn_at:
            return True
        if not (self.router.more or waiting):
            return False
        free, window = room()
        return free * 2 > window

    def turn_started(self, now: float) -> None:
        self.turn_at = now + self.settings.store_turn_ms / 1000

    def next_timer(self, waiting: bool) -> float:
        """The earliest of the store's moments (`waiting`: the paced turn has work)."""
        due = min(self.rescan_at, self.extend_at)
        if waiting or self.router.pending_acks or self.router.more:
            due = min(due, self.turn_at)
        for other in (self.wakeup_at, self.router.next_timer()):
            if other is not None:
                due = min(due, other)
        return due

    def check_timers(self, now: float, leased: Callable[[], list[str]]) -> None:
        """Do what is due. `leased`: the ids of the events held beyond the router's runs (in flight,
        reserved, held suspects), whose leases are extended with the runs'."""
        self.router.check_timers(now)
        if self.wakeup_at is not None and now >= self.wakeup_at:
            self.wakeup_at = None
            self.router.wake()
        if now >= self.rescan_at:
            self.rescan_at = now + self.settings.feed_rescan_s
            self.router.wake()
            self.schedule_wakeup()
        if now >= self.extend_at:
            self.extend_at = now + self.settings.lease_s / 3
            self.router.extend(leased())

    def schedule_wakeup(self) -> None:
        """Wake when the store's next retry backoff or foreign lease runs out."""
        try:
            due = self.store.next_wakeup()
        except StoreError as exc:
            log.error("event=store_call_failed op=next_wakeup error=%r", str(exc))
            return
        if due is not None:
            self.wakeup_at = self.clock() + max(0.0, due - self.wall()) + 0.001
