"""How much one handler, and one event, may have outstanding at the rate limiter.

A handler's API calls cost the rate limiter memory and time until their answers are read: the
call's bytes while it waits for LINE, then the answer's bytes on their way back. A handler that
kept calling without reading its answers once grew the rate limiter to 2 GB and held every other
handler's answers behind its own in the one pipe (e2e p50 109 s; docs/dispatcher.md, "A handler
that stops reading"). So the dispatcher relays a call only while its handler and its event are
within their bounds (`handler_api_max_calls`, `handler_api_max_bytes`, `event_api_max_calls`,
`event_api_max_bytes`); a handler's bytes also count what the dispatcher holds for it unread (its
answers waiting on a full pipe). Other calls are held here, in order, and go as earlier ones are
answered and read; a handler holding a bound's worth stops being read (its own writes block): the
back-pressure falls on that handler alone. A call goes alone whatever its size when nothing else
of its handler or event is outstanding, so no single call is ever refused for size.

Pure bookkeeping, no I/O: ApiLink (dispatcher/apilink.py) does the sending.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass
class Load:
    """Calls at the rate limiter and their bytes, for one handler or one event."""
    calls: int = 0
    bytes: int = 0


@dataclass
class Held:
    """A call waiting in the dispatcher for room at the rate limiter."""
    event: object      # its event delivery, or None
    size: int          # its frame's bytes
    item: object       # what the caller sends once it may go


class CallBounds:
    """Per-handler and per-event loads, and the calls held back, of one dispatcher (a handler here
    is one process: a slot's next process starts with nothing outstanding)."""

    def __init__(self, handler_calls: int, handler_bytes: int, event_calls: int, event_bytes: int):
        self.handler_calls, self.handler_bytes = handler_calls, handler_bytes
        self.event_calls, self.event_bytes = event_calls, event_bytes
        self._handlers: dict[object, Load] = {}
        self._events: dict[object, Load] = {}
        self._held: dict[object, deque[Held]] = {}

    def offer(self, handler, event, size: int, unread: int, item) -> list:
        """A new call of `handler` (for `event`, or None). Returns the items that may go to the rate
        limiter now, counted as outstanding: this one, unless it has to wait behind others."""
        if handler not in self._held and self._fits(handler, event, size, unread):
            self._count(handler, event, size)    # the common case: nothing waits, it fits
            return [item]
        self._held.setdefault(handler, deque()).append(Held(event, size, item))
        return self.releasable(handler, unread)

    def answered(self, handler, event, size: int) -> None:
        """An outstanding call came back from the rate limiter."""
        self._sub(self._handlers, handler, size)
        if event is not None:
            self._sub(self._events, event, size)

    def releasable(self, handler, unread: int) -> list:
        """Held calls of `handler` that fit now, in order, counted as outstanding. One held back by
        its handler's bound stops the scan (later calls do not overtake it); one held back by its
        event's bound is passed over (other events go on). `unread`: bytes the handler has not
        read yet."""
        held = self._held.get(handler)
        if not held:
            return []
        going, waiting = [], deque()
        while held:
            call = held.popleft()
            if not self._handler_fits(handler, call.size, unread):
                held.appendleft(call)
                break
            if call.event is not None and not self._event_fits(call.event, call.size):
                waiting.append(call)
                continue
            self._count(handler, call.event, call.size)
            going.append(call.item)
        held.extendleft(reversed(waiting))
        if not held:
            del self._held[handler]
        return going

    def has_held(self, handler) -> bool:
        return handler in self._held

    def holding(self, handler) -> bool:
        """Whether `handler` holds a bound's worth of calls here: stop reading it until they go."""
        held = self._held.get(handler)
        return bool(held) and (len(held) >= self.handler_calls
                               or sum(call.size for call in held) >= self.handler_bytes)

    def held_count(self) -> int:
        """Calls held back here, all handlers together (the dispatcher's status)."""
        return sum(len(held) for held in self._held.values())

    def forget(self, handler, events) -> list:
        """Forget a handler process that is gone, and its `events` (their keys): returns the items
        it had held back (never sent). Its outstanding calls count for nothing any more: their
        answers, owed to nobody, must not be passed to `answered`."""
        self._handlers.pop(handler, None)
        for event in events:
            self._events.pop(event, None)
        return [call.item for call in self._held.pop(handler, ())]

    def load(self, handler) -> Load:
        return self._handlers.get(handler, Load())

    # --- the rules ------------------------------------------------------------------------------
    def _fits(self, handler, event, size: int, unread: int) -> bool:
        return self._handler_fits(handler, size, unread) and (event is None or self._event_fits(event, size))

    def _count(self, handler, event, size: int) -> None:
        self._add(self._handlers, handler, size)
        if event is not None:
            self._add(self._events, event, size)

    def _handler_fits(self, handler, size: int, unread: int) -> bool:
        load = self._handlers.get(handler, Load())
        if load.calls == 0 and unread == 0:
            return True     # nothing outstanding: a call goes alone whatever its size
        return load.calls < self.handler_calls and load.bytes + unread + size <= self.handler_bytes

    def _event_fits(self, event, size: int) -> bool:
        load = self._events.get(event, Load())
        if load.calls == 0:
            return True
        return load.calls < self.event_calls and load.bytes + size <= self.event_bytes

    @staticmethod
    def _add(loads: dict, key, size: int) -> None:
        load = loads.get(key)
        if load is None:
            load = loads[key] = Load()
        load.calls += 1
        load.bytes += size

    @staticmethod
    def _sub(loads: dict, key, size: int) -> None:
        load = loads[key]
        load.calls -= 1
        load.bytes -= size
        if load.calls == 0:
            del loads[key]
