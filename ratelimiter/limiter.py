"""The rate limiter process: the one owner of the LINE API connections (`python -m frontdesk.ratelimiter`).

It reads call requests as frames on stdin and answers them on stdout (SPEC.md, "The rate limiter
pipe"); stderr is its log. Everything runs on one asyncio event loop: reading frames and deciding
what each call needs (an answer from the call journal or the profile cache, a batch, or a queue),
`api_connections` senders each driving one keep-alive connection (ratelimiter/http.py) with calls
taken from the per-endpoint token buckets (ratelimiter/buckets.py), the batcher's timers
(ratelimiter/batcher.py) and the stats timer. Store writes go through one writer thread
(ratelimiter/journal.py). One thread for all of it: sixteen sender threads spent a fifth of the
process's CPU handing the GIL to each other (measured with py-spy).

At most once per (event, n-th call): before a call goes out its journal entry says "started"
with the exact HTTP request; after the answer, "done" or "failed". A repeated call is answered
from the journal. A "started" entry left by a killed process is sent again only when LINE can
drop the repeat: push, multicast, broadcast and narrowcast carry an X-Line-Retry-Key (409 =
success); a reply token is single-use, so a repeated reply LINE refuses as an invalid token within
the token's lifetime was delivered by the first attempt (taken as success, never turned into a
push). Any other call in that state is answered "outcome unknown" and never sent again. The same
holds after an attempt that got no answer or a 5xx: ratelimiter/outcome.py decides.
"""
from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections import defaultdict, deque

from frontdesk.protocol.frames import EncodeError, FrameDecoder, ProtocolError, encode_frame
from frontdesk.protocol.rpc import Notification, Request, Response, api_error, error_value, parse_message
from frontdesk.store import StoreError, run_with_store
from frontdesk.store.base import JournalEntry

from .batcher import Batcher, batch_key
from .buckets import Scheduler
from .http import ApiConnectionError
from .journal import StoreWriter, fingerprint, journaled
from .line_api import (ArgsError, HttpRequest, LineApi, batch_retry_key, build_request, push_target,
                       response_error, retry_key, trace_header)
from .outcome import Refusal, connection_error_text, refused_reply, reply_goes_as, why_a_repeat_is_dropped
from .profiles import ProfileCache
from .shared_budget import SharedBudget

log = logging.getLogger("frontdesk.ratelimiter")

API_METHODS = frozenset({"reply", "push", "multicast", "broadcast", "narrowcast", "profile", "content", "call"})
STORE_METHODS = frozenset({"user_get", "user_set_data"})
BACKOFF_FIRST_S = 0.05      # first retry delay after a 5xx or connection error; doubles each time
BACKOFF_429_FIRST_S = 0.2   # first pause of an endpoint after a 429; doubles each time
BACKOFF_MAX_S = 5.0
STATS_INTERVAL_S = 1.0
FRAME_OVERHEAD = 1024       # room in a frame around a content download's bytes
OUT_HIGH_WATER = 8 * 1024 * 1024   # answers not yet taken by the dispatcher: read no more calls past it


class Call:
    """One handler call (or a journal entry of one, recovered after a restart), and who waits for it."""
    __slots__ = ("event_id", "call_no", "method", "args", "context", "fingerprint", "msgids", "answer",
                 "repeat", "cancelled")

    def __init__(self, event_id, call_no, method, args, context, fp):
        self.event_id, self.call_no, self.method = event_id, call_no, method
        self.args, self.context, self.fingerprint = args, context, fp
        self.msgids: list[int] = []
        self.answer: tuple | None = None    # (error, result) once known
        self.repeat = False   # an earlier attempt may have reached LINE (a reply's token may be used)
        self.cancelled = False   # everyone who asked for it is gone (the dispatcher's `cancel`)

    @property
    def key(self) -> tuple[str, int] | None:
        return None if self.event_id is None else (self.event_id, self.call_no)


class Send:
    """One HTTP request to send and the calls it answers (several for a batched multicast)."""
    __slots__ = ("request", "calls", "sent_as", "attempts", "enqueued_at", "journal", "repeat")

    def __init__(self, request: HttpRequest, calls: list[Call], sent_as: str):
        self.request, self.calls, self.sent_as = request, calls, sent_as
        self.attempts = 0
        self.enqueued_at = time.monotonic()
        self.journal = True     # write "started" before the next attempt
        self.repeat = False     # a request a killed rate limiter may have sent already

    def journal_requests(self) -> list[tuple[Call, dict]]:
        """Each journaled call with the request to record: the whole request on the first one; the
        other members of a batch name that first member (a 500-user body once, not 500 times)."""
        calls = [c for c in self.calls
                 if c.key is not None and (c.method == "recovered" or journaled(c.method, c.args))]
        if not calls:
            return []
        full = dict(self.request.to_journal(), sent_as=self.sent_as)
        member = {"batch_of": list(calls[0].key), "retry_key": self.request.retry_key, "sent_as": self.sent_as}
        return [(call, full if n == 0 else member) for n, call in enumerate(calls)]


def _line_drops_a_repeat(send: Send) -> bool:
    """Can this request go again after LINE may have acted on it? (outcome.py says why.)"""
    return why_a_repeat_is_dropped(send.request, send.sent_as) is not None


def may_withdraw(send: Send) -> bool:
    """A Send whose calls were all cancelled (the handlers that asked are gone), each made for an
    event, and that has not gone out, is not sent: nothing of it was journaled, and the event's
    next delivery makes its calls again. A call made for no event is made anyway (nobody else
    would), its answer dropped; one that went out once goes on (its journal entry says so)."""
    return send.journal and not send.attempts and all(c.cancelled and c.key is not None for c in send.calls)


def _age_s(call: Call) -> float:
    """Seconds since the call's event reached frontdesk (its reply token's age, near enough)."""
    return time.time() - call.context.get("received_at", time.time() * 1000) / 1000.0


def parse_call(params) -> Call:
    """The params of a `call` request, checked; raises ValueError naming what is wrong. The args
    stand beside the call map, not in it, so the relayed frame nests no deeper than the handler's
    own request: whatever the dispatcher could decode, the rate limiter can decode too."""
    if not isinstance(params, list) or len(params) != 2 or not isinstance(params[0], dict):
        raise ValueError("call params must be [ {event_id, call_no, method, context}, args ]")
    call, args = params
    event_id, call_no, method = call.get("event_id"), call.get("call_no"), call.get("method")
    context = call.get("context") or {}
    if event_id is not None and (not isinstance(event_id, str) or not event_id):
        raise ValueError("`event_id` must be a non-empty string or nil")
    if event_id is not None and (type(call_no) is not int or call_no < 1):
        raise ValueError("`call_no` must be an integer >= 1 when `event_id` is given")
    if method not in API_METHODS | STORE_METHODS:
        raise ValueError(f"unknown API method {method!r}")
    if not isinstance(args, dict):
        raise ValueError(f"{method}: `args` must be a map")
    if not isinstance(context, dict):
        raise ValueError("`context` must be a map")
    # the fingerprint guards the journal: only journaled calls need one
    fp = fingerprint(method, args) if event_id is not None and method in API_METHODS and journaled(method, args) \
        else None
    return Call(event_id, call_no if event_id is not None else None, method, args, context, fp)


class Counters:
    """Cumulative figures for the stats notification."""

    def __init__(self):
        self.calls = defaultdict(lambda: defaultdict(int))   # endpoint -> status -> count
        self.values = defaultdict(int)                       # 429s, retries, batches, ...

    def add(self, name: str, amount: int = 1) -> None:
        self.values[name] += amount

    def http(self, endpoint: str, status: int) -> None:
        self.calls[endpoint][str(status)] += 1

    def snapshot(self) -> dict:
        return {"calls": {e: dict(s) for e, s in self.calls.items()}, **self.values}


class _StdinProtocol(asyncio.Protocol):
    """Frames from the dispatcher; EOF (or broken framing) ends the rate limiter's input. Reading
    pauses while the answers not yet taken by the dispatcher pass OUT_HIGH_WATER (RateLimiter.take_input)."""

    def __init__(self, limiter: "RateLimiter", max_frame_bytes: int):
        self.limiter = limiter
        self.decoder = FrameDecoder(max_frame_bytes)
        self.ended: asyncio.Future = asyncio.get_running_loop().create_future()
        self.transport: asyncio.ReadTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.ended.done():
            return
        try:
            for value in self.decoder.feed(data):
                self.limiter.inbox.append(parse_message(value))
        except ProtocolError as exc:
            self.ended.set_result(exc)
        self.limiter.take_input()

    def eof_received(self):
        if not self.ended.done():
            self.ended.set_result(ProtocolError(f"stdin ended inside a frame ({self.decoder.buffered} bytes "
                                                "buffered)") if self.decoder.buffered else None)
        return False

    def connection_lost(self, exc) -> None:
        if not self.ended.done():
            self.ended.set_result(None)


class RateLimiter:
    """Calls in from the dispatcher, HTTP requests out to LINE, answers back; all on one loop."""

    def __init__(self, settings, store, out_fd: int):
        self.settings = settings
        self.store = store
        self._out_fd = out_fd
        self._out = bytearray()
        self.inbox: deque = deque()            # messages read, not yet handled (take_input)
        self._stdin: _StdinProtocol | None = None
        self._waiting: dict[int, Call] = {}    # the dispatcher's msgid -> the call it waits for
        self._in_flight: dict[tuple[str, int], Call] = {}
        self.counters = Counters()
        self.scheduler = Scheduler(settings.rate_limits)
        if settings.shared_rate_budget:   # every rate limiter on this store shares the limits
            self.scheduler.budget = SharedBudget(store, self.scheduler.rates(), self.scheduler.notify)
        self.content_max = min(settings.content_max_bytes, settings.max_frame_bytes - FRAME_OVERHEAD)
        self.batcher = (Batcher(settings.batch_window_ms / 1000.0, self._batch_closed)
                        if settings.batching else None)
        self.profiles = ProfileCache(settings.profile_ttl_s)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.writer: StoreWriter | None = None
        self._flush_scheduled = False
        self._stats_timer: asyncio.TimerHandle | None = None

    # --- output -----------------------------------------------------------------------------------
    def _write(self, message) -> None:
        """Queue a frame; everything queued in one loop turn goes out in one write."""
        self._out += encode_frame(message.to_wire())
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        while self._out:
            try:
                written = os.write(self._out_fd, self._out)
            except BlockingIOError:
                self.loop.add_writer(self._out_fd, self._writable)
                return
            except (BrokenPipeError, OSError):
                self._out.clear()   # the dispatcher is gone; its calls are re-made from the journal
                return
            del self._out[:written]
            if self.inbox:
                self.take_input()

    def _writable(self) -> None:
        self.loop.remove_writer(self._out_fd)
        self._flush()

    def take_input(self) -> None:
        """Handle the messages read while the dispatcher takes our answers: past OUT_HIGH_WATER of
        them unread, stop reading stdin until it has taken them. A handler asking for big answers
        (user data, content) faster than it reads them once grew this process to 2 GB; now its
        calls wait in the pipe and the dispatcher, which bounds them per handler."""
        while self.inbox and len(self._out) < OUT_HIGH_WATER:
            self.on_message(self.inbox.popleft())
        transport = self._stdin.transport if self._stdin is not None else None
        if transport is not None and not transport.is_closing():
            if self.inbox:
                transport.pause_reading()
            else:
                transport.resume_reading()

    def _answer(self, call: Call, error, result) -> None:
        call.answer = (error, result)
        msgids, call.msgids = call.msgids, []
        for msgid in msgids:
            self._waiting.pop(msgid, None)
            try:
                self._write(Response(msgid, error, result))
            except EncodeError as exc:   # e.g. an integer in LINE's JSON that msgpack cannot carry
                self._write(Response(msgid, api_error(f"the answer {exc}"), None))

    # --- the process ------------------------------------------------------------------------------
    def run(self, stdin_fd: int) -> int:
        """Serve until stdin ends, then finish every queued call. Returns the exit status."""
        return asyncio.run(self._main(stdin_fd))

    async def _main(self, stdin_fd: int) -> int:
        self.loop = asyncio.get_running_loop()
        self.writer = StoreWriter(self.store, self.loop)
        os.set_blocking(self._out_fd, False)
        senders = [asyncio.create_task(self._send_loop()) for _ in range(self.settings.api_connections)]
        self._stats_timer = self.loop.call_later(STATS_INTERVAL_S, self._publish_stats)
        self.recover()
        transport, self._stdin = await self.loop.connect_read_pipe(
            lambda: _StdinProtocol(self, self.settings.max_frame_bytes), os.fdopen(stdin_fd, "rb", 0))
        ended = await self._stdin.ended
        transport.close()
        while self.inbox:   # what was read before the end, answered whatever the dispatcher has taken
            self.on_message(self.inbox.popleft())
        status = 0
        if ended is not None:
            log.error("protocol_error reason=%r action=finish_queued_and_exit", str(ended))
            status = 2
        log.info("stdin_closed action=finish_queued queued=%d", self.scheduler.pending())
        if self.batcher is not None:
            self.batcher.close()
        self.scheduler.close()
        await asyncio.gather(*senders)
        self._stats_timer.cancel()
        if self.scheduler.budget is not None:
            await self.loop.run_in_executor(None, self.scheduler.budget.close)
        await self.writer.close()
        self._write(Notification("stats", [self.stats()]))
        self._flush()
        os.set_blocking(self._out_fd, True)
        if self._out:
            os.write(self._out_fd, self._out)
        log.info("stopped %s", " ".join(f"{k}={v}" for k, v in self.counters.values.items()))
        return status

    # --- reading calls ------------------------------------------------------------------------------
    def on_message(self, message) -> None:
        if isinstance(message, Notification) and message.method == "cancel":
            self._cancel(message.params[0] if message.params and isinstance(message.params[0], list) else [])
            return
        if not isinstance(message, Request):
            return  # responses answer nothing of ours; other notifications mean nothing to us
        if message.method != "call":
            self._write(Response(message.msgid, error_value(f"unknown method {message.method}"), None))
            return
        try:
            call = parse_call(message.params)
        except ValueError as exc:
            self._write(Response(message.msgid, api_error(f"bad call: {exc}"), None))
            return
        call.msgids.append(message.msgid)
        self._waiting[message.msgid] = call
        try:
            self._dispatch(call)
        except StoreError as exc:
            log.error("store_error method=%s reason=%r", call.method, str(exc))
            self._answer(call, api_error(f"store unavailable: {exc}", retryable=True), None)

    def _cancel(self, msgids: list) -> None:
        """The handler that asked is gone (the dispatcher's `cancel`): answer each msgid once now
        (the dispatcher drops it), write nothing more for it, and let a call nobody else waits for
        be withdrawn before it goes out (_withdrawn)."""
        cancelled = 0
        for msgid in msgids:
            call = self._waiting.pop(msgid, None) if type(msgid) is int else None
            if call is None:
                continue   # answered already
            call.msgids.remove(msgid)
            call.cancelled = not call.msgids
            cancelled += 1
            self._write(Response(msgid, api_error("cancelled: the handler that made this call is gone"), None))
        self.counters.add("calls_cancelled", cancelled)

    def _withdrawn(self, send: Send) -> bool:
        """Forget a Send that may be withdrawn (may_withdraw) instead of sending it."""
        if not may_withdraw(send):
            return False
        for call in send.calls:
            self._forget(call)
        self.counters.add("calls_withdrawn", len(send.calls))
        return True

    def _dispatch(self, call: Call) -> None:
        if call.method == "user_get":
            self._answer(call, *self._user_get(call.args))
            return
        if call.method == "user_set_data":
            self._user_set_data(call)
            return
        if call.method == "profile" and self._answer_from_profile_cache(call):
            return
        if call.key is not None and journaled(call.method, call.args):
            if self._answer_from_journal(call):
                return
        try:
            self._route(call)
        except ArgsError as exc:
            self._forget(call)
            self._answer(call, api_error(str(exc)), None)

    def _route(self, call: Call) -> None:
        """Turn a new call into a queued Send (or a batch member)."""
        if call.method == "reply":
            build_request("reply", call.args, None)  # checks the arguments even if it becomes a push
            if reply_goes_as(_age_s(call), self.settings.reply_max_age_s, call.repeat) == "push":
                self.counters.add("replies_as_push")
                self._submit(Send(self._reply_as_push(call), [call], "push"))
                return
            send = Send(build_request("reply", call.args, None), [call], "reply")
            send.repeat = call.repeat
            self._submit(send)
            return
        request = build_request(call.method, call.args, retry_key(*call.key) if call.key else None)
        if call.method == "push" and self.batcher is not None and call.key is not None:
            group = batch_key(call.args)
            if group is not None:
                self.batcher.add(group, call.args["to"], call)
                return
        self._submit(Send(request, [call], call.method))

    def _reply_as_push(self, call: Call) -> HttpRequest:
        target = push_target(call.context.get("source"))
        if target is None:
            raise ArgsError("reply: the reply token is too old or used, and the event has no source to push to")
        body = {"to": target, "messages": call.args["messages"]}
        if "notificationDisabled" in call.args:
            body["notificationDisabled"] = call.args["notificationDisabled"]
        return HttpRequest("POST", "/v2/bot/message/push", body,
                           retry_key=retry_key(*call.key) if call.key else None)

    def _submit(self, send: Send) -> None:
        self.scheduler.submit(send.request.endpoint, send)

    def _forget(self, call: Call) -> None:
        if call.key is not None:
            self._in_flight.pop(call.key, None)

    # --- the journal ----------------------------------------------------------------------------------
    def _answer_from_journal(self, call: Call) -> bool:
        """Answer a repeated call from its final outcome, or join it to the same call still in
        flight. False: the call is to be made (anew, or again after a retryable failure), and is
        now registered in flight."""
        current = self._in_flight.get(call.key)
        if current is not None and current.fingerprint == call.fingerprint:
            if current.answer is None:
                current.msgids.extend(call.msgids)
                current.cancelled = False   # someone waits for it again
                self._waiting.update((msgid, current) for msgid in call.msgids)
                return True
            self._answer(call, *current.answer)
            return True
        entry = self.store.journal_get(*call.key) if current is None else None
        if entry is None and current is None:
            self._in_flight[call.key] = call
            return False
        if current is not None or entry.fingerprint != call.fingerprint:
            self.counters.add("journal_mismatches")
            self._answer(call, api_error(
                f"call journal mismatch: call {call.call_no} of event {call.event_id} was a different "
                f"call before (method or args changed); calls of a redelivered event must repeat in order"),
                None)
            return True
        entry = self._with_batch_request(entry)
        response = entry.response or {}
        if entry.state == "done":
            self.counters.add("journal_answers")
            self._answer(call, None, response.get("result"))
            return True
        request = HttpRequest.from_journal(entry.request) if entry.request and "path" in entry.request else None
        sent_as = (entry.request or {}).get("sent_as", call.method)
        resendable = request is not None and (request.retry_key is not None
                                              or (sent_as == "reply" and entry.state == "started"))
        error = response.get("error")
        if entry.state == "failed" and not (error and error.get("retryable")):
            self.counters.add("journal_answers")   # a final refusal: the same call would fail again
            self._answer(call, error, None)
            return True
        if entry.state == "failed" and (request is None or request.retry_key is None):
            # A retryable failure (429, 5xx, no answer) of a call LINE cannot recognise a repeat of
            # by key: made again as if new, so a reply whose token is now too old goes as a push,
            # unless an attempt may have reached LINE (sent, then no answer or a 5xx): then its
            # token may be used, and a refusal of it means "delivered" (outcome.py).
            self.counters.add("retried_from_journal")
            call.repeat = response.get("maybe_sent", error.get("status", 0) >= 500)
            self._in_flight[call.key] = call
            return False
        if not resendable:  # "started", and LINE could not tell a repeat: it may have been delivered
            error = api_error(f"outcome unknown: call {call.call_no} of event {call.event_id} ({call.method}) "
                              "was sent by a rate limiter that stopped before the answer; not sent again "
                              "(at most once)")
            self._journal_later([JournalEntry(call.event_id, call.call_no, call.fingerprint, "failed",
                                              entry.request, {"error": error}, time.time())])
            self._answer(call, error, None)
            return True
        # LINE drops a repeat of this request (retry key, or single-use reply token): send it again.
        self._in_flight[call.key] = call
        send = Send(request, [call], sent_as)
        send.journal, send.repeat = False, True
        self.counters.add("resent_from_journal")
        self._submit(send)
        return True

    def _with_batch_request(self, entry: JournalEntry) -> JournalEntry:
        """A batch member's entry completed from the batch's first member: its request, and its
        outcome if that is known (one transaction wrote them all, so they agree)."""
        if not entry.request or "batch_of" not in entry.request:
            return entry
        first = self.store.journal_get(*entry.request["batch_of"])
        if first is None or not first.request or "path" not in first.request:
            return JournalEntry(entry.event_id, entry.call_no, entry.fingerprint, entry.state, None,
                                entry.response, entry.updated_at)
        state = entry.state if first.state == "started" else first.state
        return JournalEntry(entry.event_id, entry.call_no, entry.fingerprint, state, first.request,
                            entry.response or first.response, entry.updated_at)

    def recover(self) -> None:
        """Send again the requests a killed rate limiter left "started" that carry a retry key
        (one request per retry key: a batched multicast goes again as the same multicast)."""
        groups: dict[str, list[JournalEntry]] = defaultdict(list)
        for entry in self.store.journal_unfinished():
            if entry.request and entry.request.get("retry_key"):
                groups[entry.request["retry_key"]].append(entry)
        for entries in groups.values():
            calls = []
            for entry in entries:
                key = (entry.event_id, entry.call_no)
                if key not in self._in_flight:
                    call = Call(entry.event_id, entry.call_no, "recovered", None, {}, entry.fingerprint)
                    self._in_flight[key] = call
                    calls.append(call)
            first = next((e.request for e in entries if "path" in e.request), None)
            if first is None:
                log.warning("journal_recovery_skipped retry_key=%s reason=no_entry_holds_the_request",
                            entries[0].request["retry_key"])
                continue
            if not calls:
                continue
            send = Send(HttpRequest.from_journal(first), calls, first.get("sent_as", "push"))
            send.journal = False
            self._submit(send)
        if groups:
            log.info("journal_recovery resending=%d entries=%d", len(groups), sum(map(len, groups.values())))

    def _journal_later(self, entries: list[JournalEntry], done=None, linger: bool = False) -> None:
        """Write entries without waiting; `done()` runs once they are written (or failed, logged)."""
        future = self.writer.journal(entries, linger)

        def written(future: asyncio.Future) -> None:
            if future.exception() is not None:   # left "started": a repeat is re-sent with its retry key or refused
                log.error("journal_write_failed entries=%d reason=%r", len(entries), str(future.exception()))
            if done is not None:
                done()
        future.add_done_callback(written)

    # --- batching (the batcher's timers, or a call that fills a batch) -----------------------------------
    def _batch_closed(self, calls: list[Call]) -> None:
        if len(calls) == 1:
            call = calls[0]
            self._submit(Send(build_request("push", call.args, retry_key(*call.key)), calls, "push"))
            return
        first = calls[0].args
        body = {k: v for k, v in first.items() if k != "to"}
        body["to"] = [call.args["to"] for call in calls]
        request = HttpRequest("POST", "/v2/bot/message/multicast", body,
                              retry_key=batch_retry_key([call.key for call in calls]))
        self.counters.add("batches")
        self.counters.add("batched_calls", len(calls))
        self.counters.values["batch_max"] = max(self.counters.values["batch_max"], len(calls))
        self._submit(Send(request, calls, "multicast"))

    # --- sending (one task per connection) -------------------------------------------------------------
    async def _send_loop(self) -> None:
        api = LineApi(self.settings)
        try:
            while (send := await self.scheduler.take()) is not None:
                if self._withdrawn(send):
                    continue
                try:
                    if await self._journal_started(send) and await self._attempt(api, send):
                        self._journal_finished(send)
                except Exception as exc:  # a bug must cost one call, not the sender
                    log.exception("send_failed endpoint=%s", send.request.endpoint)
                    self._finish(send, api_error(f"rate limiter internal error: {exc!r}"), None)
                    self._journal_finished(send)
        finally:
            api.close()

    async def _journal_started(self, send: Send) -> bool:
        """Write "started" (with the exact request) for every journaled call before it goes out.
        False: the journal failed and the calls were answered without being sent."""
        if not send.journal:
            return True
        send.journal = False
        entries = [JournalEntry(c.event_id, c.call_no, c.fingerprint, "started", request, None, time.time())
                   for c, request in send.journal_requests()]
        if not entries:
            return True
        try:
            await self.writer.journal(entries)
            return True
        except StoreError as exc:
            log.error("journal_write_failed entries=%d reason=%r action=calls_not_sent", len(entries), str(exc))
            self._finish(send, api_error(f"call journal unavailable, not sent: {exc}", retryable=True), None)
            for call in send.calls:
                self._forget(call)
            return False

    def _journal_finished(self, send: Send) -> None:
        """Journal the outcome without holding up the sender; the calls leave `in flight` (where a
        repeat finds their answer) once it is written, so a repeat never reads a stale "started"."""
        entries = []
        for call, request in send.journal_requests():
            error, result = call.answer
            # maybe_sent: LINE may have acted on a failed attempt (a reply's token may be used)
            response = ({"error": error, "maybe_sent": send.repeat} if error else {"result": result})
            entries.append(JournalEntry(
                call.event_id, call.call_no, call.fingerprint, "failed" if error else "done",
                request, response, time.time()))

        def leave() -> None:
            for call in send.calls:
                if call.key is not None and self._in_flight.get(call.key) is call:
                    del self._in_flight[call.key]
        if entries:   # a "done" that LINE would drop a repeat of may wait for company (journal.py)
            self._journal_later(entries, leave, linger=entries[0].state == "done" and _line_drops_a_repeat(send))
        else:
            leave()

    async def _attempt(self, api: LineApi, send: Send) -> bool:
        """Send until finished: True when the Send is answered, False when it went back to a queue."""
        send.attempts += 1
        request = send.request
        endpoint = request.endpoint
        try:
            response = await api.send(request, self.content_max if request.data_api else None,
                                      trace_header(send.calls) if self.settings.api_trace else None)
        except ApiConnectionError as exc:
            self.counters.http(endpoint, 0)
            repeat_dropped_because = why_a_repeat_is_dropped(request, send.sent_as)
            safe = not exc.sent or repeat_dropped_because is not None
            log.warning("api_connection_error endpoint=%s attempt=%d sent=%s reason=%r",
                        endpoint, send.attempts, exc.sent, str(exc))
            send.repeat = send.repeat or exc.sent
            if safe and self._retry(send, BACKOFF_FIRST_S, pause=False):
                return False
            message = connection_error_text(str(exc), exc.sent, repeat_dropped_because)
            return self._finish(send, api_error(message, 0, retryable=safe), None)
        status = response.status
        self.counters.http(endpoint, status)
        if status == 429:
            self.counters.add("429s")
            log.warning("api_429 endpoint=%s attempt=%d", endpoint, send.attempts)
            if self._retry(send, BACKOFF_429_FIRST_S, pause=True):
                return False
            return self._finish(send, response_error(response, retryable=True), None)
        if status >= 500:
            safe = _line_drops_a_repeat(send)
            send.repeat = True
            log.warning("api_5xx endpoint=%s status=%d attempt=%d retry=%s", endpoint, status,
                        send.attempts, safe)
            if safe and self._retry(send, BACKOFF_FIRST_S, pause=False):
                return False
            error = response_error(response, retryable=safe)
            if not safe:
                error["message"] += " (LINE may have acted on it; not sent again)"
            return self._finish(send, error, None)
        if 200 <= status < 300 or (status == 409 and request.retry_key):
            if status == 409:
                self.counters.add("409s")
            return self._finish(send, None, self._result(send, response))
        if status == 413 and response.body is None:
            return self._finish(send, api_error(
                f"content is larger than the limit of {self.content_max} bytes (content_max_bytes, "
                "and at most max_frame_bytes)", 413), None)
        error = response_error(response, retryable=False)
        if send.sent_as == "reply" and status == 400 and "invalid reply token" in error["message"].lower():
            return self._reply_token_refused(send, error)
        if send.sent_as == "multicast" and status == 400 and len(send.calls) > 1:
            return self._split_batch(send, error)
        log.info("api_error endpoint=%s status=%d", endpoint, status)
        return self._finish(send, error, None)

    def _retry(self, send: Send, first_delay: float, pause: bool) -> bool:
        if send.attempts > self.settings.api_max_retries:
            return False
        self.counters.add("retries")
        delay = min(BACKOFF_MAX_S, first_delay * 2 ** (send.attempts - 1))
        self.scheduler.retry(send.request.endpoint, send, delay, send.enqueued_at, pause_endpoint=pause)
        return True

    def _reply_token_refused(self, send: Send, error: dict) -> bool:
        """LINE refused the reply token (used or expired). After an attempt that may have reached
        LINE, a refusal within the token's lifetime means that attempt delivered the reply; past
        it the outcome is unknown and nothing more is sent. Otherwise nothing was delivered: the
        messages go as a push (outcome.py)."""
        call = send.calls[0]
        age_s = _age_s(call)
        meaning = refused_reply(age_s, self.settings.reply_max_age_s, send.repeat)
        if meaning is Refusal.DELIVERED:
            self.counters.add("replies_delivered_before")
            log.warning("event=reply_repeat_refused event_id=%s call_no=%d age_s=%.1f action=taken_as_delivered",
                        call.event_id, call.call_no or 0, age_s)
            return self._finish(send, None, {"sent_as": "reply", "delivered_by_earlier_attempt": True})
        if meaning is Refusal.UNKNOWN:
            self.counters.add("replies_outcome_unknown")
            log.warning("event=reply_repeat_refused event_id=%s call_no=%d age_s=%.1f action=outcome_unknown",
                        call.event_id, call.call_no or 0, age_s)
            return self._finish(send, dict(error, retryable=False, message=(
                f"{error['message']}: outcome unknown: an earlier attempt may have delivered this reply, "
                f"but the token is {age_s:.0f} s old (past reply_max_age_s="
                f"{self.settings.reply_max_age_s:g}) and may have expired unused; not sent as a push "
                "(at most once)")), None)
        try:
            send.request = self._reply_as_push(call)
        except ArgsError as exc:
            return self._finish(send, dict(error, message=f"{error['message']}; {exc}"), None)
        self.counters.add("replies_as_push")
        send.sent_as, send.attempts, send.journal = "push", 0, True
        self.scheduler.retry("push", send, 0.0, send.enqueued_at, pause_endpoint=False)
        return False

    def _split_batch(self, send: Send, error: dict) -> bool:
        """LINE refused the multicast as a whole (nothing sent): each member goes as its own push,
        so one bad member cannot fail the others."""
        log.info("batch_refused members=%d reason=%r action=push_each", len(send.calls), error["message"])
        for call in send.calls:
            single = Send(build_request("push", call.args, retry_key(*call.key)), [call], "push")
            self._submit(single)
        return False

    def _result(self, send: Send, response) -> object:
        request, body = send.request, response.body
        if request.data_api and request.endpoint == "content":
            return {"content_type": response.content_type, "data": body}
        if isinstance(body, dict) and "message" in body and response.status == 409:
            body = {k: v for k, v in body.items() if k != "message"}
        result = dict(body) if isinstance(body, dict) else {"body": body}
        request_id = response.headers.get("x-line-accepted-request-id") or response.headers.get("x-line-request-id")
        if send.calls and send.calls[0].method == "call":
            return {"status": response.status, "body": body}
        if request.endpoint == "profile":
            user_id, now = result.get("userId", request.path.rsplit("/", 1)[-1]), time.time()
            self.profiles.put(user_id, result, now)
            self._store_later("profile_cache_write", lambda store: store.user_put_profile(user_id, result, now))
            return dict(result, cached=False)
        if request_id and (response.status == 409 or request.endpoint == "narrowcast"):
            result["request_id"] = request_id
        if send.sent_as in ("reply", "push", "multicast"):
            result["sent_as"] = send.sent_as
        return result

    def _finish(self, send: Send, error, result) -> bool:
        for call in send.calls:
            self._answer(call, error, result)
        return True

    # --- store-only methods and the profile cache ------------------------------------------------------
    def _store_later(self, what: str, work) -> None:
        """A store write whose outcome nobody waits for (failures are logged)."""
        def written(future: asyncio.Future) -> None:
            if future.exception() is not None:
                log.warning("%s_failed reason=%r", what, str(future.exception()))
        self.writer.call(work).add_done_callback(written)

    def _user_get(self, args: dict):
        user_id = args.get("userId")
        if not isinstance(user_id, str) or not user_id:
            return api_error("user_get: `userId` must be a non-empty string"), None
        user = self.store.user_get(user_id)
        if user is None:
            return None, None
        return None, {k: user[k] for k in ("profile", "followed", "followed_at", "unfollowed_at", "data")}

    def _user_set_data(self, call: Call) -> None:
        user_id, data = call.args.get("userId"), call.args.get("data")
        if not isinstance(user_id, str) or not user_id:
            self._answer(call, api_error("user_set_data: `userId` must be a non-empty string"), None)
            return
        if not isinstance(data, dict):
            self._answer(call, api_error("user_set_data: `data` must be a map"), None)
            return

        def written(future: asyncio.Future) -> None:
            error = future.exception()
            if isinstance(error, (TypeError, ValueError, RecursionError)):   # not JSON, or too deep
                self._answer(call, api_error(f"user_set_data: `data` cannot be stored: {error}"), None)
            elif error is not None:
                self._answer(call, api_error(f"store unavailable: {error}", retryable=True), None)
            else:
                self._answer(call, None, None)
        self.writer.call(lambda store: store.user_set_data(user_id, data)).add_done_callback(written)

    def _answer_from_profile_cache(self, call: Call) -> bool:
        user_id = call.args.get("userId")
        if not isinstance(user_id, str) or not user_id:
            return False  # build_request names the problem
        now = time.time()
        profile = self.profiles.get(user_id, now)
        if profile is None:   # another dispatcher's rate limiter, or an earlier run, may have it
            user = self.store.user_get(user_id)
            if not user or not user.get("profile") or user.get("profile_fetched_at") is None:
                return False
            self.profiles.put(user_id, user["profile"], user["profile_fetched_at"])
            profile = self.profiles.get(user_id, now)
            if profile is None:
                return False
        self.counters.add("profile_cache_hits")
        self._answer(call, None, dict(profile, cached=True))
        return True

    # --- stats ------------------------------------------------------------------------------------------
    def stats(self) -> dict:
        snapshot = self.counters.snapshot()
        snapshot["queues"] = self.scheduler.stats()
        snapshot["batch_open"] = self.batcher.open_members() if self.batcher else 0
        snapshot["in_flight"] = len(self._in_flight)
        if self.scheduler.budget is not None:
            snapshot["budget"] = self.scheduler.budget.stats()
        return snapshot

    def _publish_stats(self) -> None:
        self._write(Notification("stats", [self.stats()]))
        self._stats_timer = self.loop.call_later(STATS_INTERVAL_S, self._publish_stats)


def main(settings) -> int:
    """`python -m frontdesk.ratelimiter` (started by a dispatcher): frames on stdin/stdout, log on stderr."""
    if not settings.channel_access_token:
        log.warning("channel_access_token_missing effect=LINE_answers_401")

    def serve(store) -> int:
        limiter = RateLimiter(settings, store, sys.stdout.fileno())
        log.info("started api_base=%s connections=%d batching=%s", settings.api_base,
                 settings.api_connections, settings.batching)
        return limiter.run(sys.stdin.fileno())

    return run_with_store(settings.store, log, serve, failed=2)
