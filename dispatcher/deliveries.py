"""The events in flight on one handler process, and what handling them cost it.

Pure bookkeeping with an injected clock, no I/O: HandlerProcess (dispatcher/workers.py) keeps one
Deliveries per process it starts and does the talking. An event's deadline moves on every sign of
progress and is paused while one of its API calls waits on frontdesk (SPEC.md section 10). In a
batch (SPEC.md section 7, feature `batch`) every event but the first waits its turn: no deadline
and no place of the window until the one ahead of it is answered. A
suspect event (one that was in flight beside a crash) is reserved and runs alone once the
handler has answered everything else (docs/dispatcher.md, "Supervision").
"""
from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass
from typing import Callable


class OutOfTurn(Exception):
    """A handler answered an event of a batch before the one ahead of it (SPEC.md section 7)."""


class Histogram:
    """Durations counted in fixed buckets, and their sum: one bisect and one increment per value,
    published as cumulative counters on the status cadence (command/observe.py reads them)."""
    __slots__ = ("bounds", "counts", "total_s")

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)   # the last one is beyond the last bound
        self.total_s = 0.0

    def add(self, seconds: float) -> None:
        self.total_s += seconds
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1


@dataclass(slots=True)
class Delivery:
    """One event handed to one handler: its deadline moves on every sign of progress."""
    msgid: int
    doc: dict
    event_id: str
    key: str
    deadline: float
    started: float       # monotonic, when it was handed over
    calls: int = 0
    waiting: int = 0     # its API calls not answered yet: the deadline is paused meanwhile
    queued: bool = False  # sent in a batch behind its key's current event: not started yet


def held_delivery(doc: dict) -> Delivery:
    """A claimed event not handed to anyone yet (a suspect waiting for a handler of its own)."""
    o = doc["o"]
    return Delivery(0, doc, o["_id"], o["key"], math.inf, 0.0)


class Deliveries:
    """One handler process's events in flight (by msgid and by event id), its reserved suspect,
    and its counters: handled, died_holding, the handling-time histogram, time busy."""

    def __init__(self, deadline_s: float, buckets: tuple[float, ...], clock: Callable[[], float]):
        self.deadline_s = deadline_s
        self.clock = clock
        self.in_flight: dict[int, Delivery] = {}
        self.by_event: dict[str, Delivery] = {}
        self.reserved: Delivery | None = None   # a suspect event waiting to run here alone
        self.solo = False                       # the one event in flight must run alone
        self.batches: dict[str, deque[Delivery]] = {}   # key -> its batch's events not started yet
        self.queued = 0                         # how many events wait in batches (they take no slot)
        self.withdrawn: set[int] = set()        # msgids given back after a nack: answers ignored
        self.handled = 0
        self.died_holding = 0                   # events it held when it failed
        self.handling = Histogram(buckets)      # mean events in flight = handling.total_s / time
        self.busy_s = 0.0                       # time with at least one event in flight, until _busy_since
        self._busy_since: float | None = None
        # At or before every running deadline (see late()): a deadline is always set to now +
        # deadline_s, never earlier than one set before it, so the bound holds until it passes.
        self._earliest = math.inf

    def add(self, msgid: int, doc: dict, queued: bool = False) -> Delivery:
        """An event handed over now; `queued`: in a batch behind its key's current event, so its
        deadline starts when the one before it is answered (`after_answer`)."""
        o = doc["o"]
        now = self.clock()
        delivery = Delivery(msgid, doc, o["_id"], o["key"], math.inf, now, queued=queued)
        if not queued:
            self._start_deadline(delivery, now)
        if not self.in_flight:
            self._busy_since = now
        self.in_flight[msgid] = delivery
        self.by_event[delivery.event_id] = delivery
        if queued:
            self.batches.setdefault(delivery.key, deque()).append(delivery)
            self.queued += 1
        return delivery

    @property
    def active(self) -> int:
        """Events in flight that take a place of the window (a batch's waiting events take none)."""
        return len(self.in_flight) - self.queued

    def answered(self, msgid: int) -> Delivery | None:
        """The delivery a response answers (None: no event in flight has that msgid). Raises
        OutOfTurn when it answers a batch's event before the one ahead of it."""
        delivery = self.in_flight.get(msgid)
        if delivery is None:
            return None
        if delivery.queued:
            raise OutOfTurn(f"answered event {delivery.event_id} of a batch before the one ahead of it")
        del self.in_flight[msgid]
        del self.by_event[delivery.event_id]
        self.handled += 1
        self.solo = False
        now = self.clock()
        self.handling.add(now - delivery.started)
        if not self.in_flight:
            self._idle(now)
        return delivery

    def after_answer(self, delivery: Delivery, acked: bool) -> list[Delivery]:
        """The rest of `delivery`'s batch after its answer. Acked: the next one starts now (its
        deadline runs) and is returned alone. Nacked: the rest is withdrawn, never started (given
        back to the store uncharged; their answers, which the handler still sends, are ignored)."""
        batch = self.batches.get(delivery.key)
        if not batch:
            return []
        if acked:
            following = batch.popleft()
            following.queued = False
            following.started = self.clock()
            self.touch(following)
            taken = [following]
        else:
            taken = list(batch)
            batch.clear()
            for withdrawn in taken:
                del self.in_flight[withdrawn.msgid]
                del self.by_event[withdrawn.event_id]
                self.withdrawn.add(withdrawn.msgid)
            if not self.in_flight:
                self._idle(self.clock())
        self.queued -= len(taken)
        if not batch:
            del self.batches[delivery.key]
        return taken

    def was_withdrawn(self, msgid: int) -> bool:
        """Whether `msgid` was given back after a nack in its batch (its answer is owed, and ignored)."""
        if msgid in self.withdrawn:
            self.withdrawn.discard(msgid)
            return True
        return False

    def take_queued(self) -> list[Delivery]:
        """Every batch's events not started yet, removed (they go back to the store uncharged)."""
        taken = [delivery for batch in self.batches.values() for delivery in batch]
        for delivery in taken:
            del self.in_flight[delivery.msgid]
            del self.by_event[delivery.event_id]
        self.batches.clear()
        self.queued = 0
        if taken and not self.in_flight:
            self._idle(self.clock())
        return taken

    def for_event(self, event_id) -> Delivery | None:
        return self.by_event.get(event_id) if isinstance(event_id, str) else None

    def touch(self, delivery: Delivery) -> None:
        """A sign of progress: the deadline starts over, or stays paused while a call is out."""
        if delivery.waiting:
            delivery.deadline = math.inf
        else:
            self._start_deadline(delivery, self.clock())

    def _start_deadline(self, delivery: Delivery, now: float) -> None:
        delivery.deadline = now + self.deadline_s
        if self._earliest == math.inf:
            self._earliest = delivery.deadline

    def call_waiting(self, delivery: Delivery) -> None:
        """An API call of this event went to frontdesk: the handler now waits on us."""
        delivery.waiting += 1
        delivery.deadline = math.inf

    def call_answered(self, delivery: Delivery) -> None:
        delivery.waiting -= 1
        self.touch(delivery)

    def late(self, now: float) -> list[Delivery]:
        """The deliveries past their deadline. Looks at them only once the earliest bound has
        passed, and then moves the bound to the real earliest deadline: the dispatcher asks on
        every loop turn, and a look at each of a busy pool's events cost it a twentieth of its CPU."""
        if now < self._earliest:
            return []
        late = [d for d in self.in_flight.values() if now >= d.deadline]
        if not late:
            self._earliest = min([d.deadline for d in self.in_flight.values()], default=math.inf)
        return late

    def next_deadline(self) -> float | None:
        """When late() may find one (maybe earlier: then it looks and finds none); None: no deadline runs."""
        return None if self._earliest == math.inf else self._earliest

    def take_all(self) -> list[Delivery]:
        """Every unanswered delivery, removed (they go back to the store)."""
        deliveries = list(self.in_flight.values())
        self.in_flight.clear()
        self.by_event.clear()
        self.batches.clear()
        self.queued = 0
        self._idle(self.clock())
        return deliveries

    # --- a suspect event, run alone -------------------------------------------------------------------
    def reserve(self, doc: dict) -> None:
        """Keep a suspect for this handler: nothing new comes here until it has run alone."""
        self.reserved = held_delivery(doc)

    def reserved_due(self) -> dict | None:
        """The reserved event's document once nothing else is in flight (it goes now, alone)."""
        if self.reserved is None or self.in_flight:
            return None
        doc, self.reserved = self.reserved.doc, None
        self.solo = True
        return doc

    def take_reserved(self) -> list[Delivery]:
        """The reserved event, if any, removed (never sent: it goes back untouched)."""
        reserved, self.reserved = self.reserved, None
        return [reserved] if reserved is not None else []

    # --- busy time -------------------------------------------------------------------------------------
    def _idle(self, now: float) -> None:
        self._earliest = math.inf   # nothing in flight: no deadline runs
        if self._busy_since is not None:
            self.busy_s += now - self._busy_since
            self._busy_since = None

    def busy_total(self, now: float) -> float:
        """Seconds with at least one event in flight, until now."""
        return self.busy_s + (now - self._busy_since if self._busy_since is not None else 0.0)
