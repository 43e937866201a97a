"""The rate limiter process: the one owner of the LINE API connections (`python -m frontdesk.ratelimiter`).

It reads call requests as frames on stdin and answers them on stdout (SPEC.md, "The rate limiter
pipe"); stderr is its log. Everything runs on one asyncio event loop; only store writes have a
thread (storewriter.py). Sixteen sender threads once spent a fifth of the process's CPU handing
the GIL to each other (measured with py-spy).

The work is done in layers, each with one job and its own tests (tests/unit/), wired here:

    FramePipe (pipe.py)        frames in and out, the output bound
    Callers (callers.py)       which msgids wait for which call; answers, cancels
    CallRouter (router.py)     each call to the store, the profile cache, the journal, the batcher or a queue
    CallJournal (journal.py)   the at-most-once rules over the store's call journal
    Scheduler (buckets.py)     per-endpoint token buckets and queues (and the shared budget)
    Batcher (batcher.py)       identical pushes into one multicast
    Loading (loading.py)       the loading animation for one-to-one chats waiting in a backlog
    TokenKeeper (tokens.py)    the channel access token: fixed, or issued, renewed and revoked here
    SenderPool (senders.py)    `api_connections` senders, each with its connections
    Sending (sending.py)       one Send's attempts; outcome.py decides after each
    QuotaWatch (quota_watch.py) the month's messages counted; LINE's quota and the webhook read
    MarkAsRead (mark_read.py)  acked messages marked read, behind the replies
"""
from __future__ import annotations

import asyncio
import logging
import sys

from frontdesk.protocol.rpc import Notification, Request, Response, api_error, error_value
from frontdesk.store import run_with_store

from .batcher import Batcher
from .buckets import Scheduler
from .callers import Callers
from .calls import Send, parse_call, unneeded_at_stop
from .journal import CallJournal
from .line_api import LineApi
from .loading import LOADING, Loading
from .mark_read import MarkAsRead
from .outcome import Rules
from .pipe import FramePipe
from .profiles import Profiles
from .quota_watch import QuotaWatch
from .router import CallRouter
from .senders import SenderPool
from .sending import Sending
from .shared_budget import SharedBudget
from .stats import STATS_INTERVAL_S, Counters
from .storewriter import StoreWriter
from .token_api import TokenSourceError
from .tokens import TokenKeeper
from .userdata import UserData

log = logging.getLogger("frontdesk.ratelimiter")

FRAME_OVERHEAD = 1024       # room in a frame around a content download's bytes


def yields(send: Send) -> bool:
    """A Send that goes only when no other call may (buckets.Scheduler): the loading animation
    (a courtesy), and the rate limiter's own reads (the quota, a chat's member count), which no
    handler waits for: a reply must not wait behind them where a bucket is small."""
    return send.endpoint == LOADING or unneeded_at_stop(send)


class RateLimiter:
    """Reads frames and hands each message on; builds the layers and runs them on one loop.

    It owns the layers' life: built here, started in `run()` (the writer thread, the input, the
    senders, the stats timer, recovery of the journal's "started" entries), and at the end of the
    input finished in order: queued calls sent, the last stats written, exit status returned."""

    def __init__(self, settings, store, in_fd: int, out_fd: int):
        self.settings = settings
        self.counters = Counters()
        self.pipe = FramePipe(in_fd, out_fd, settings.max_frame_bytes, self.on_message)
        self.callers = Callers(self.pipe.write)
        self.scheduler = Scheduler(settings.rate_limits, yields=yields)
        if settings.shared_rate_budget:   # every rate limiter on this store shares the limits
            self.scheduler.budget = SharedBudget(store, self.scheduler.rates(), self.scheduler.notify)
        self.writer = StoreWriter(store)
        self.user_data = StoreWriter(store)   # users' records, off the loop and off the journal's writer
        self.journal = CallJournal(store, self.writer, self.counters)
        self.profiles = Profiles(store, self.writer, settings.profile_ttl_s)
        self.batcher = (Batcher(settings.batch_window_ms / 1000.0, self._batch_closed)
                        if settings.batching else None)
        self.quota = QuotaWatch(settings, self.writer, lambda call: self.router.route(call), self.counters)
        self.mark_read = MarkAsRead(self.scheduler, lambda call: self.router.route(call), self.counters)
        self.router = CallRouter(settings.reply_max_age_s, self.scheduler, self.journal, self.callers,
                                 self.profiles, UserData(self.user_data, settings.user_data_max_bytes), self.batcher, self.counters,
                                 expired_reply=self.quota.expired_reply)
        rules = Rules(settings.api_max_retries, settings.reply_max_age_s,
                      min(settings.content_max_bytes, settings.max_frame_bytes - FRAME_OVERHEAD))
        self.sending = Sending(rules, self.scheduler, self.journal, self.callers, self.profiles,
                               self.counters, settings.api_trace, accepted=self.quota.accepted,
                               expired_reply=self.quota.expired_reply)
        self.loading = (Loading(store, self.scheduler, self.counters, settings.loading_after_s, settings.loading_seconds)
                        if settings.loading_after_s > 0 else None)
        self.token = TokenKeeper(settings)
        self.senders = SenderPool(settings.api_connections, lambda: LineApi(settings, self.token), self.scheduler,
                                  self.sending.serve)
        self._stats_timer: asyncio.TimerHandle | None = None

    # --- reading ----------------------------------------------------------------------------------------
    def on_message(self, message) -> None:
        """One message from the dispatcher: a call, the `cancel` of calls whose handler is gone, or
        the `mark_as_read` tokens of acked message events."""
        if isinstance(message, Notification) and message.method == "mark_as_read":
            params = message.params
            self.mark_read.add(params[0] if params and isinstance(params[0], list) else [])
            return
        if isinstance(message, Notification) and message.method == "cancel":
            params = message.params
            cancelled = self.callers.cancel(params[0] if params and isinstance(params[0], list) else [])
            self.counters.add("calls_cancelled", cancelled)
            return
        if not isinstance(message, Request):
            return  # responses answer nothing of ours; other notifications mean nothing to us
        if message.method != "call":
            self.pipe.write(Response(message.msgid, error_value(f"unknown method {message.method}"), None))
            return
        try:
            call = parse_call(message.params)
        except ValueError as exc:
            self.pipe.write(Response(message.msgid, api_error(f"bad call: {exc}"), None))
            return
        self.callers.wait(message.msgid, call)
        self.router.route(call)

    def _batch_closed(self, calls: list) -> None:
        send = Send.of_batch(calls)
        if send.sent_as == "multicast":
            self.counters.add("batches")
            self.counters.add("batched_calls", len(calls))
            self.counters.most("batch_max", len(calls))
        self.scheduler.submit(send.endpoint, send)

    # --- the process ------------------------------------------------------------------------------------
    def run(self) -> int:
        """Serve until stdin ends, then finish every queued call. Returns the exit status."""
        return asyncio.run(self._main())

    async def _main(self) -> int:
        loop = asyncio.get_running_loop()
        self.writer.start(loop)
        self.user_data.start(loop)
        self.pipe.open(loop)
        self.token.start()
        self.senders.start()
        if self.loading is not None:
            self.loading.start(loop)
        self.quota.start(loop)
        self.mark_read.start(loop)
        self._stats_timer = loop.call_later(STATS_INTERVAL_S, self._publish_stats)
        for send in self.journal.recovered():   # before any call is read: a repeat finds them in flight
            self.scheduler.submit(send.endpoint, send)
        await self.pipe.start_reading()
        ended = await self.pipe.ended()
        status = 0
        if ended is not None:
            log.error("event=protocol_error reason=%r action=finish_queued_and_exit", str(ended))
            status = 2
        log.info("event=stdin_closed action=finish_queued queued=%d", self.scheduler.pending())
        await self._finish(loop)
        log.info("event=stopped %s", self.counters.line())
        return status

    async def _finish(self, loop: asyncio.AbstractEventLoop) -> None:
        """Send what is queued, write what is unwritten, tell the last figures."""
        if self.batcher is not None:
            self.batcher.close()
        if self.loading is not None:
            self.loading.close()
        self.quota.stop_polling()
        self.mark_read.stop()
        self.sending.stop(self.scheduler.close(drop=unneeded_at_stop))
        await self.senders.join()
        await self.quota.close()
        await self.token.close()     # last: every send, and the quota's, used it
        self._stats_timer.cancel()
        if self.scheduler.budget is not None:
            await loop.run_in_executor(None, self.scheduler.budget.close)
        await self.user_data.close()
        await self.writer.close()
        self.pipe.write(Notification("stats", [self.stats()]))
        self.pipe.close()

    # --- stats ------------------------------------------------------------------------------------------
    def stats(self) -> dict:
        snapshot = self.counters.snapshot()
        snapshot["queues"] = self.scheduler.stats()
        snapshot["batch_open"] = self.batcher.open_members() if self.batcher else 0
        snapshot["in_flight"] = len(self.journal.in_flight)
        snapshot["token"] = self.token.stats()
        if self.loading is not None:
            snapshot["loading_waiting"] = self.loading.waiting
        snapshot["quota"] = self.quota.stats()
        if self.scheduler.budget is not None:
            snapshot["budget"] = self.scheduler.budget.stats()
        return snapshot

    def _publish_stats(self) -> None:
        self.pipe.write(Notification("stats", [self.stats()]))
        self._stats_timer = asyncio.get_running_loop().call_later(STATS_INTERVAL_S, self._publish_stats)


def main(settings) -> int:
    """`python -m frontdesk.ratelimiter` (started by a dispatcher): frames on stdin/stdout, log on stderr."""
    if settings.token_source == "fixed" and not settings.channel_access_token:
        log.warning("event=channel_access_token_missing effect=LINE_answers_401")

    def serve(store) -> int:
        try:
            limiter = RateLimiter(settings, store, sys.stdin.fileno(), sys.stdout.fileno())
        except TokenSourceError as exc:
            log.error("event=token_source_unusable reason=%r", str(exc))
            return 2
        log.info("event=started api_base=%s connections=%d batching=%s token_source=%s", settings.api_base,
                 settings.api_connections, settings.batching, settings.token_source)
        return limiter.run()

    return run_with_store(settings.store, log, serve, failed=2)
