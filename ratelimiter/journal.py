"""The call journal's rules: at most once per (event, n-th call).

Before a call with effects goes out its journal entry says "started" with the exact HTTP request;
after the answer, "done" or "failed". A repeated call is answered from the journal, or joins the
same call still in flight. A "started" entry left by a killed process is sent again only when
LINE can drop the repeat: push, multicast, broadcast and narrowcast carry an X-Line-Retry-Key (409
= success); a reply token is single-use, so a repeated reply LINE refuses within the token's
lifetime was delivered by the first attempt (outcome.py). Any other call in that state is
answered "outcome unknown" and never sent again. Which calls are journaled, and which carry a
retry key, the endpoint table says (protocol/line_endpoints.py).

Only the first write ("started") holds a call back. The "done" of a request LINE drops a repeat
of lingers for the next "started" (storewriter.py). That costs no safety: a call leaves "in
flight" (where a repeat finds its answer) only once its outcome is written, and a "done" lost
with the process leaves "started", which is sent again and dropped by LINE: delivered once, as it
was. Other outcomes go at once: a lost "done" of any other call would make its repeat "outcome
unknown", and a lost "failed" reply whose token LINE never used would be re-sent as a reply, not
as a push, once the token is too old.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from enum import Enum
from typing import Callable

from frontdesk.protocol.line_endpoints import TABLE, EndpointTable
from frontdesk.protocol.rpc import api_error
from frontdesk.store import Store
from frontdesk.store.base import JournalEntry

from .calls import RECOVERED, Call, Send
from .line_api import HttpRequest
from .outcome import why_a_repeat_is_dropped
from .stats import Counters
from .storewriter import StoreWriter

log = logging.getLogger("frontdesk.ratelimiter")


class Seen(Enum):
    """What the journal knows of a call about to be made."""
    NEW = "new"              # make it (now in flight); call.repeat: an earlier attempt may have reached LINE
    JOINED = "joined"        # the same call is in flight: its answer answers this one too
    ANSWERED = "answered"    # its answer is known: `answer`
    RESEND = "resend"        # LINE drops a repeat of it: `send` goes again as it was (now in flight)


@dataclass(frozen=True)
class Verdict:
    seen: Seen
    answer: tuple | None = None     # (error, result)
    current: Call | None = None     # JOINED: the call in flight
    send: Send | None = None        # RESEND


NEW = Verdict(Seen.NEW)


class CallJournal:
    """The at-most-once rules over the store's call journal, and the calls in flight.

    It owns `in_flight` ((event id, call number) -> the Call being made), reads the store on the
    event loop (one indexed read per repeated call) and writes through the StoreWriter."""

    def __init__(self, store: Store, writer: StoreWriter, counters: Counters, table: EndpointTable = TABLE,
                 clock: Callable[[], float] = time.time):
        self._store = store
        self._writer = writer
        self._counters = counters
        self._table = table
        self._clock = clock
        self.in_flight: dict[tuple[str, int], Call] = {}

    # --- a call about to be made ---------------------------------------------------------------------
    def look_up(self, call: Call) -> Verdict:
        """What a journaled call (one with a key) needs: made anew, joined to the same call in
        flight, answered from its final outcome, or its request sent again."""
        current = self.in_flight.get(call.key)
        if current is not None:
            if current.fingerprint != call.fingerprint:
                return self._mismatch(call)
            if current.answer is None:
                return Verdict(Seen.JOINED, current=current)
            return Verdict(Seen.ANSWERED, answer=current.answer)
        entry = self._store.journal_get(*call.key)
        if entry is None:
            self.in_flight[call.key] = call
            return NEW
        if entry.fingerprint != call.fingerprint:
            return self._mismatch(call)
        return self._from_entry(self._with_batch_request(entry), call)

    def _mismatch(self, call: Call) -> Verdict:
        self._counters.add("journal_mismatches")
        return Verdict(Seen.ANSWERED, answer=(api_error(
            f"call journal mismatch: call {call.call_no} of event {call.event_id} was a different "
            f"call before (method or args changed); calls of a redelivered event must repeat in order"), None))

    def _from_entry(self, entry: JournalEntry, call: Call) -> Verdict:
        """The rules for a call the journal has an entry of (same method and args)."""
        response = entry.response or {}
        if entry.state == "done":
            self._counters.add("journal_answers")
            return Verdict(Seen.ANSWERED, answer=(None, response.get("result")))
        request = HttpRequest.from_journal(entry.request) if entry.request and "path" in entry.request else None
        sent_as = (entry.request or {}).get("sent_as", call.method)
        error = response.get("error")
        if entry.state == "failed" and not (error and error.get("retryable")):
            self._counters.add("journal_answers")   # a final refusal: the same call would fail again
            return Verdict(Seen.ANSWERED, answer=(error, None))
        if entry.state == "failed" and (request is None or request.retry_key is None):
            # A retryable failure (429, 5xx, no answer) of a call LINE cannot recognise a repeat of
            # by key: made again as if new, so a reply whose token is now too old goes as a push,
            # unless an attempt may have reached LINE (sent, then no answer or a 5xx): then its
            # token may be used, and a refusal of it means "delivered" (outcome.py).
            self._counters.add("retried_from_journal")
            call.repeat = response.get("maybe_sent", error.get("status", 0) >= 500)
            self.in_flight[call.key] = call
            return NEW
        resendable = request is not None and (request.retry_key is not None or (
            self._table.uses_reply_token(sent_as) and entry.state == "started"))
        if not resendable:  # "started", and LINE could not tell a repeat: it may have been delivered
            error = api_error(f"outcome unknown: call {call.call_no} of event {call.event_id} ({call.method}) "
                              "was sent by a rate limiter that stopped before the answer; not sent again "
                              "(at most once)")
            self.write_later([JournalEntry(call.event_id, call.call_no, call.fingerprint, "failed",
                                           entry.request, {"error": error}, self._clock())])
            return Verdict(Seen.ANSWERED, answer=(error, None))
        # LINE drops a repeat of this request (retry key, or single-use reply token): send it again.
        self.in_flight[call.key] = call
        send = Send(request, [call], sent_as)
        send.journal, send.repeat = False, True
        self._counters.add("resent_from_journal")
        return Verdict(Seen.RESEND, send=send)

    def _with_batch_request(self, entry: JournalEntry) -> JournalEntry:
        """A batch member's entry completed from the batch's first member: its request, and its
        outcome if that is known (one transaction wrote them all, so they agree)."""
        if not entry.request or "batch_of" not in entry.request:
            return entry
        first = self._store.journal_get(*entry.request["batch_of"])
        if first is None or not first.request or "path" not in first.request:
            return JournalEntry(entry.event_id, entry.call_no, entry.fingerprint, entry.state, None,
                                entry.response, entry.updated_at)
        state = entry.state if first.state == "started" else first.state
        return JournalEntry(entry.event_id, entry.call_no, entry.fingerprint, state, first.request,
                            entry.response or first.response, entry.updated_at)

    def forget(self, call: Call) -> None:
        """The call will not be made (bad args, withdrawn, journal unavailable): out of flight."""
        if call.key is not None:
            self.in_flight.pop(call.key, None)

    # --- writing a Send's entries ---------------------------------------------------------------------
    def _entries(self, send: Send) -> list[tuple[Call, dict]]:
        """Each journaled call with the request to record: the whole request on the first one; the
        other members of a batch name that first member (a 500-user body once, not 500 times)."""
        calls = [c for c in send.calls
                 if c.key is not None and (c.method == RECOVERED or self._table.journaled(c.method, c.args))]
        if not calls:
            return []
        full = dict(send.request.to_journal(), sent_as=send.sent_as)
        member = {"batch_of": list(calls[0].key), "retry_key": send.request.retry_key, "sent_as": send.sent_as}
        return [(call, full if n == 0 else member) for n, call in enumerate(calls)]

    async def started(self, send: Send) -> None:
        """Write "started" (with the exact request) for every journaled call before it goes out,
        once per Send. Raises StoreError when the journal cannot be written."""
        if not send.journal:
            return
        send.journal = False
        now = self._clock()
        entries = [JournalEntry(c.event_id, c.call_no, c.fingerprint, "started", request, None, now)
                   for c, request in self._entries(send)]
        if entries:
            await self._writer.journal(entries)

    def finished(self, send: Send) -> None:
        """Journal the outcome without holding up the sender; the calls leave `in flight` (where a
        repeat finds their answer) once it is written, so a repeat never reads a stale "started"."""
        entries = []
        now = self._clock()
        for call, request in self._entries(send):
            error, result = call.answer
            # maybe_sent: LINE may have acted on a failed attempt (a reply's token may be used)
            response = ({"error": error, "maybe_sent": send.repeat} if error else {"result": result})
            entries.append(JournalEntry(call.event_id, call.call_no, call.fingerprint,
                                        "failed" if error else "done", request, response, now))

        def leave() -> None:
            for call in send.calls:
                if call.key is not None and self.in_flight.get(call.key) is call:
                    del self.in_flight[call.key]
        if entries:   # a "done" that LINE would drop a repeat of may wait for company
            linger = entries[0].state == "done" and why_a_repeat_is_dropped(send.request, send.sent_as) is not None
            self.write_later(entries, leave, linger)
        else:
            leave()

    def write_later(self, entries: list[JournalEntry], done: Callable[[], None] | None = None,
                    linger: bool = False) -> None:
        """Write entries without waiting; `done()` runs once they are written (or failed, logged)."""
        future = self._writer.journal(entries, linger=True) if linger else self._writer.journal_at_once(entries)

        def written(future: asyncio.Future) -> None:
            if future.exception() is not None:   # left "started": a repeat is re-sent with its retry key or refused
                log.error("event=journal_write_failed entries=%d reason=%r", len(entries), str(future.exception()))
            if done is not None:
                done()
        future.add_done_callback(written)

    # --- after a restart ------------------------------------------------------------------------------
    def recovered(self) -> list[Send]:
        """The requests a killed rate limiter left "started" that carry a retry key, to send again
        (one request per retry key: a batched multicast goes again as the same multicast)."""
        groups: dict[str, list[JournalEntry]] = defaultdict(list)
        for entry in self._store.journal_unfinished():
            if entry.request and entry.request.get("retry_key"):
                groups[entry.request["retry_key"]].append(entry)
        sends = []
        for entries in groups.values():
            first = next((e.request for e in entries if "path" in e.request), None)
            if first is None:
                log.warning("event=journal_recovery_skipped retry_key=%s reason=no_entry_holds_the_request",
                            entries[0].request["retry_key"])
                continue
            calls = []
            for entry in entries:
                key = (entry.event_id, entry.call_no)
                if key not in self.in_flight:
                    call = Call(entry.event_id, entry.call_no, RECOVERED, None, {}, entry.fingerprint)
                    self.in_flight[key] = call
                    calls.append(call)
            if not calls:
                continue
            send = Send(HttpRequest.from_journal(first), calls, first.get("sent_as", "push"))
            send.journal = False
            sends.append(send)
        if groups:
            log.info("event=journal_recovery resending=%d entries=%d", len(groups), sum(map(len, groups.values())))
        return sends
