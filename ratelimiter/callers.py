"""Who waits for each call: the dispatcher's msgids, answered once each.

A Call may have several msgids (a repeat that joined the same call in flight); the dispatcher's
`cancel` takes a msgid away (its handler is gone) and answers it at once, and a call nobody waits
for any more is marked cancelled, so the sender may withdraw it (calls.may_withdraw).
"""
from __future__ import annotations

from typing import Callable

from frontdesk.protocol.frames import EncodeError
from frontdesk.protocol.rpc import Response, api_error

from .calls import Call, OwnCall

CANCELLED = "cancelled: the handler that made this call is gone"


class Callers:
    """msgid -> the call it waits for; answers are written with `write(Response)` (pipe.py)."""

    def __init__(self, write: Callable[[Response], None]):
        self._write = write
        self._waiting: dict[int, Call] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def wait(self, msgid: int, call: Call) -> None:
        call.msgids.append(msgid)
        self._waiting[msgid] = call

    def join(self, current: Call, call: Call) -> None:
        """`call` repeats `current`, which is still in flight: its msgids get current's answer."""
        current.msgids.extend(call.msgids)
        current.cancelled = False   # someone waits for it again
        self._waiting.update((msgid, current) for msgid in call.msgids)

    def answer(self, call: Call, error, result) -> None:
        """Answer every msgid waiting for `call` (once each) and keep the answer on the call."""
        call.answer = (error, result)
        if type(call) is OwnCall:
            call.answered(error, result)
            return
        msgids, call.msgids = call.msgids, []
        for msgid in msgids:
            self._waiting.pop(msgid, None)
            try:
                self._write(Response(msgid, error, result))
            except EncodeError as exc:   # e.g. an integer in LINE's JSON that msgpack cannot carry
                self._write(Response(msgid, api_error(f"the answer {exc}"), None))

    def cancel(self, msgids: list) -> int:
        """The handler that asked is gone (the dispatcher's `cancel`): answer each msgid not
        answered yet once, now (the dispatcher drops it), and write nothing more for it. Returns
        how many were cancelled."""
        cancelled = 0
        for msgid in msgids:
            call = self._waiting.pop(msgid, None) if type(msgid) is int else None
            if call is None:
                continue   # answered already
            call.msgids.remove(msgid)
            call.cancelled = not call.msgids
            cancelled += 1
            self._write(Response(msgid, api_error(CANCELLED), None))
        return cancelled
