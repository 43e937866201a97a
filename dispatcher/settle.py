"""What an event's answer, or its handler's failure, does to it in the store.

An ack marks it done (the router writes it with the turn's claim) and counts its time from the
webhook to the ack; a nack retries it or makes it a dead letter with the handler's reason; the
events of a handler that failed are charged or given back by the suspects rule
(dispatcher/suspects.py), and a retry's backoff gets a wake-up (dispatcher/pacer.py).
"""
from __future__ import annotations

import logging
import time
from typing import Callable

from frontdesk.protocol.process import HANDLING_BUCKETS_S

from .deliveries import Delivery, Histogram
from .pacer import StorePacer
from .router import Router
from .suspects import Suspects
from .workers import HandlerProcess

log = logging.getLogger("frontdesk.dispatcher")


class Settlement:
    """Settles answered and orphaned events with the store, and keeps the e2e histogram (webhook
    received -> ack) of the acked ones. `wall` (epoch seconds) is injected."""

    def __init__(self, router: Router, suspects: Suspects, pacer: StorePacer, wall: Callable[[], float] = time.time):
        self.router, self.suspects, self.pacer, self.wall = router, suspects, pacer, wall
        self.e2e = Histogram(HANDLING_BUCKETS_S)

    def answered(self, delivery: Delivery, error, after: list[Delivery] = ()) -> None:
        """An ack (error None) or a nack, `retry` true unless the handler said false. `after`: the
        rest of its batch that the answer moved: acked, the key's next event (with the handler
        already); nacked, the events withdrawn behind it (given back uncharged after the nack)."""
        if self.suspects.ids:
            self.suspects.cleared(delivery.event_id)   # it ran and answered: it did not crash anyone
        if error is None:
            self.router.ack(delivery.event_id, delivery.key, after[0].event_id if after else None)
            self.e2e.add(self.wall() - delivery.doc["o"]["received_at"] / 1000)
            return
        message = error.get("message") if isinstance(error, dict) else None
        retry = error.get("retry", True) if isinstance(error, dict) else True
        self.router.nack(delivery.event_id, delivery.key,
                         f"handler nack: {message if isinstance(message, str) else repr(error)[:200]}",
                         retry is not False)
        if after:
            self.router.release(after)
        self.pacer.schedule_wakeup()

    def lost(self, handler: HandlerProcess, reason: str, blamed: set[int] | None) -> None:
        """A handler failed holding events (`blamed`: the msgids the failure is known to be about)."""
        never_started = handler.take_queued()   # batches' events behind the one being handled
        charged, given_back = self.suspects.sort_lost(handler.take_in_flight(), blamed)
        if blamed is None and given_back:
            log.info("event=events_isolated handler=%s pid=%s count=%d", handler.name, handler.pid, len(given_back))
        for delivery in charged:
            if self.router.nack(delivery.event_id, delivery.key,
                                f"handler {handler.name} pid {handler.pid} failed: {reason}", True) == "dead":
                self.suspects.cleared(delivery.event_id)
        self.router.release(handler.take_reserved() + given_back + never_started)
        self.pacer.schedule_wakeup()
