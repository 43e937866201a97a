"""The handler pool of one dispatcher: how many handler slots it wants and what each does now.

Each slot is a HandlerProcess (dispatcher/workers.py), a supervised child that restarts its own
processes with its group's backoff. The pool adds what concerns several: slots made and retired
to follow the target (TTIN/TTOU, `frontdesk scale`, `handlers = auto` through the Autoscaler), a
rolling restart (HUP: one slot at a time, the new process ready before the old one drains; a
replacement that fails aborts the roll and keeps the old processes), and events spread over the
ready handlers, each to the one with the most free slots.
"""
from __future__ import annotations

import logging
from collections import deque
from typing import Callable, Iterator

from frontdesk.protocol.children.lifeline import describe_exit
from frontdesk.protocol.children.lifecycle import READY
from frontdesk.protocol.frames import EncodeError

from .autoscale import Autoscaler, BusyMeter
from .control import ControlChange
from .deliveries import Delivery
from .workers import HandlerProcess, RunSource

log = logging.getLogger("frontdesk.dispatcher")


class Pool:
    """The slots (`members`), the processes retiring (drained, not restarted), the one replacement
    of a rolling restart, and the target count.

    Args:
        new_handler: builds a slot's HandlerProcess: (name, wanted) -> built, not started.
        release: gives events back to the store untouched (a retiring slot's reserved suspect).
        target: the number of slots wanted.
        autoscaler: with `handlers = auto`, decides the target once a second; else None.
    """

    def __init__(self, new_handler: Callable[[str, bool], HandlerProcess],
                 release: Callable[[list[Delivery]], None], target: int, autoscaler: Autoscaler | None = None):
        self.new_handler = new_handler
        self.release = release
        self.target = target
        self.autoscaler = autoscaler
        self.busy = BusyMeter()
        self.members: list[HandlerProcess] = []
        self.retiring: list[HandlerProcess] = []
        self.replacing: tuple[HandlerProcess, HandlerProcess] | None = None   # (old, new) of a roll
        self.handled_by_gone = 0   # events answered by processes that have exited
        self._rolling: deque[HandlerProcess] = deque()
        self._numbers = 0

    def processes(self) -> Iterator[HandlerProcess]:
        """Every slot, replacement and retiring process."""
        yield from self.members
        if self.replacing is not None:
            yield self.replacing[1]
        yield from self.retiring

    def ready(self) -> list[HandlerProcess]:
        return [handler for handler in self.members if handler.state is READY]

    def room(self) -> tuple[int, int]:
        """(free slots, window) of the ready handlers."""
        ready = self.ready()
        return sum(h.free_slots for h in ready), sum(h.max_in_flight for h in ready)

    @property
    def handled(self) -> int:
        """Events answered by every process, gone ones included."""
        return self.handled_by_gone + sum(handler.handled for handler in self.processes())

    def leased_ids(self) -> list[str]:
        """The events the handlers hold: in flight and reserved (their leases are kept)."""
        ids = []
        for handler in self.processes():
            ids += [d.event_id for d in handler.in_flight.values()]
            if handler.deliveries.reserved is not None:
                ids.append(handler.deliveries.reserved.event_id)
        return ids

    # --- the target -----------------------------------------------------------------------------------
    def set_target(self, count: int, why: str) -> None:
        log.info("event=handlers_target_changed from=%d to=%d by=%s", self.target, count, why)
        self.target = count

    def apply(self, change: ControlChange) -> None:
        """An operator's request (dispatcher/control.py): `frontdesk scale N` sets the target and
        turns autoscaling off; the rolling-restart control restarts every slot."""
        if change.rolling_restart:
            self.rolling_restart("control")
        if change.handlers is not None:
            if self.autoscaler is not None:
                log.info("event=autoscale_off by=frontdesk_scale handlers=%d", change.handlers)
                self.autoscaler = None
            self.set_target(change.handlers, "frontdesk_scale")

    def autoscale(self, now: float, oldest_pending_s: float) -> None:
        """handlers = auto: measure how busy the ready handlers were since the last call and let the
        Autoscaler set the target (dispatcher/autoscale.py)."""
        ready = self.ready()
        share = self.busy.share(now, {handler.pid: handler.busy_total(now) for handler in ready})
        target = self.autoscaler.decide(now, self.target, len(ready), share, oldest_pending_s)
        if target != self.target:
            self.set_target(target, "autoscale")

    def converge(self) -> None:
        """Slots up or down to the target, and the next step of a rolling restart."""
        while len(self.members) < self.target:
            self._numbers += 1
            handler = self.new_handler(f"handler-{self._numbers}", True)
            self.members.append(handler)
            handler.start()
        while len(self.members) > self.target:
            handler = self.members.pop()
            if self.replacing is not None and self.replacing[0] is handler:
                self._retire(self.replacing[1])
                self.replacing = None
            self._retire(handler)
            log.info("event=handler_slot_removed name=%s", handler.name)
        if self._rolling and self.replacing is None:
            old = self._rolling.popleft()
            if old in self.members and old.state is READY:
                new = self.new_handler(old.name, False)   # not restarted if it fails: the roll stops
                self.replacing = (old, new)
                new.start()

    def _retire(self, handler: HandlerProcess) -> None:
        self.release(handler.take_reserved())   # a retiring process takes no event any more
        handler.drain()
        if not handler.stopped:
            self.retiring.append(handler)

    def rolling_restart(self, why: str) -> None:
        """Replace every slot's process, one at a time, each new one ready before its old one drains."""
        self._rolling = deque(self.members)
        log.info("event=rolling_restart_started handlers=%d by=%s", len(self._rolling), why)

    def stop_rolling(self) -> None:
        self._rolling.clear()

    def adopt(self, handler: HandlerProcess) -> None:
        """A process is ready: if it is a rolling restart's replacement, it takes its slot and the
        old one drains."""
        if self.replacing is None or self.replacing[1] is not handler:
            return
        old, _ = self.replacing
        self.replacing = None
        handler.wanted, handler.restarts = True, old.restarts
        self.members[self.members.index(old)] = handler
        self._retire(old)
        log.info("event=handler_replaced name=%s old_pid=%s new_pid=%s", handler.name, old.pid, handler.pid)

    # --- exits ----------------------------------------------------------------------------------------
    def reap(self) -> list[HandlerProcess]:
        """The slots and processes whose process has just exited (each has settled its restart)."""
        exited = []
        for handler in list(self.processes()):
            returncode = handler.reap()
            if returncode is None:
                continue
            exited.append(handler)
            self.handled_by_gone += handler.deliveries.handled
            if handler in self.retiring:
                self.retiring.remove(handler)
            elif self.replacing is not None and self.replacing[1] is handler:
                self.replacing = None
                if self._rolling:
                    log.error("event=rolling_restart_aborted name=%s reason=%r remaining=%d", handler.name,
                              handler.failure or describe_exit(returncode), len(self._rolling))
                    self._rolling.clear()
        return exited

    # --- events ---------------------------------------------------------------------------------------
    def deliver(self, docs: list[dict], ready: list[HandlerProcess],
                runs: RunSource | None = None) -> list[tuple[dict, EncodeError]]:
        """Spread events evenly: each to the ready handler with the most free slots at that moment
        (with the run leased behind it in `runs`, to a handler that takes batches). Returns the
        events no handler can be given (msgpack cannot carry them), with the reason."""
        unframeable = []
        slots = sorted(((handler.free_slots, index) for index, handler in enumerate(ready)), reverse=True)
        for doc in docs:
            count, index = slots[0]
            try:
                ready[index].deliver(doc, runs)
            except EncodeError as exc:
                unframeable.append((doc, exc))
                continue
            slots[0] = (count - 1, index)
            if len(slots) > 1 and slots[1][0] > count - 1:
                slots.sort(reverse=True)
        return unframeable

    # --- stopping -------------------------------------------------------------------------------------
    def drain(self) -> None:
        """Every process takes nothing new and exits once it has answered what it holds."""
        self._rolling.clear()
        for handler in list(self.processes()):
            handler.drain()

    def take_reserved(self) -> list[Delivery]:
        """The suspects reserved on any handler, removed (never sent)."""
        return [delivery for handler in self.processes() for delivery in handler.take_reserved()]

    def stop(self, reason: str, kill: bool = False) -> None:
        """Every process's events given back (`release`), the process TERMed (KILLed with `kill`)
        and never restarted."""
        for handler in list(self.processes()):
            self.release(handler.take_in_flight())
            handler.retire()
            handler.stop(reason, kill=kill)

    @property
    def stopped(self) -> bool:
        return all(handler.stopped for handler in self.processes())

    def status(self) -> list[dict]:
        return [handler.status() for handler in self.processes()]
