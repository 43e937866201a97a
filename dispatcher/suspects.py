"""The suspects rule: a crash is charged only to the event it is tied to.

When a handler fails holding several events and nothing says which one killed it, none is charged
an attempt: each is given back and becomes a suspect, retried alone on a handler that first
finishes what it holds, so that a crash of its own is charged to it then (docs/dispatcher.md,
"Supervision"). The events a failure is tied to — the one event it held, or those late for their
deadline (`blamed`) — are charged at once. Pure bookkeeping: the arbiter nacks and releases.
"""
from __future__ import annotations

from collections import deque

from .deliveries import Delivery, held_delivery


class Suspects:
    """The ids of suspect events, and the claimed suspects waiting for a handler of their own."""

    def __init__(self):
        self.ids: set[str] = set()
        self.held: deque[Delivery] = deque()

    def sort_lost(self, deliveries: list[Delivery], blamed: set[int] | None) -> tuple[list[Delivery], list[Delivery]]:
        """What a failure holding `deliveries` costs them: (charged an attempt, given back untouched).

        Args:
            deliveries: the events the failed handler had in flight.
            blamed: the msgids the failure is known to be about (late for their deadline), or None.
        """
        if blamed is None and len(deliveries) > 1:
            self.ids.update(d.event_id for d in deliveries)
            return [], list(deliveries)
        charged = [d for d in deliveries if blamed is None or d.msgid in blamed]
        return charged, [d for d in deliveries if blamed is not None and d.msgid not in blamed]

    def cleared(self, event_id: str) -> None:
        """It ran and was answered, or became a dead letter: no suspect any more."""
        self.ids.discard(event_id)

    def hold(self, docs: list[dict]) -> list[dict]:
        """Suspects among claimed events wait (leased, their keys held) for a handler of their own;
        returns the other events, which go on now."""
        if not self.ids:
            return docs
        rest = []
        for doc in docs:
            if doc["o"]["_id"] in self.ids:
                self.held.append(held_delivery(doc))
            else:
                rest.append(doc)
        return rest

    def place(self, ready: list) -> None:
        """Each held suspect reserves the least busy ready handler that has none."""
        while self.held:
            free = [h for h in ready if h.deliveries.reserved is None and not h.deliveries.solo]
            if not free:
                return
            min(free, key=lambda h: len(h.in_flight)).reserve(self.held.popleft().doc)

    def take_held(self) -> list[Delivery]:
        """Every held suspect, removed (given back to the store: a drain or a stop)."""
        held, self.held = list(self.held), deque()
        return held
