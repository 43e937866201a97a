"""Where each call goes: the store (user data), the profile cache, the call journal (a repeat),
the batcher (a push that may share a multicast), or a queue as a Send of its own.

The order matters: the journal is asked before the arguments are checked, so a repeated call is
always answered as it was the first time; a reply whose token is too old (and that no attempt may
have delivered) goes as a push at once, not after a refusal (outcome.py reply_goes_as), or fails
unsent when reply_expiry says so (quota.py expired_reply_action).
"""
from __future__ import annotations

import logging
import time
from typing import Callable

from frontdesk.protocol.line_endpoints import TABLE, ArgsError, EndpointTable, Journal
from frontdesk.protocol.rpc import api_error
from frontdesk.store import StoreError

from .batcher import Batcher, batch_key
from .buckets import Scheduler
from .callers import Callers
from .calls import Call, Send
from .journal import CallJournal, Seen
from .line_api import build_request, reply_as_push
from .outcome import reply_goes_as
from .profiles import Profiles
from .stats import Counters
from .userdata import UserData

log = logging.getLogger("frontdesk.ratelimiter")


class CallRouter:
    """Hands each new call to the layer that answers it, or queues it (Scheduler) as a Send."""

    def __init__(self, reply_max_age_s: float, scheduler: Scheduler, journal: CallJournal, callers: Callers,
                 profiles: Profiles, users: UserData, batcher: Batcher | None, counters: Counters,
                 table: EndpointTable = TABLE, clock: Callable[[], float] = time.time,
                 expired_reply: Callable[[Call, str], dict | None] = lambda call, why: None):
        self._reply_max_age_s = reply_max_age_s
        self._scheduler = scheduler
        self._journal = journal
        self._callers = callers
        self._profiles = profiles
        self._users = users
        self._batcher = batcher
        self._counters = counters
        self._table = table
        self._clock = clock
        self._expired_reply = expired_reply   # reply_expiry's choice: None (a push) or the call's error

    def route(self, call: Call) -> None:
        """Answer or queue a call that has just come (its msgids wait with the Callers)."""
        try:
            self._route(call)
        except StoreError as exc:
            log.error("event=store_error method=%s reason=%r", call.method, str(exc))
            self._callers.answer(call, api_error(f"store unavailable: {exc}", retryable=True), None)

    def _route(self, call: Call) -> None:
        method = self._table.method(call.method)
        if method.journal is Journal.NOT_JOURNALED:
            self._store_method(call, method)
            return
        if call.method == "profile" and self._answer_from_profile_cache(call):
            return
        if call.key is not None and self._table.journaled(call.method, call.args) and self._seen_before(call):
            return
        try:
            self._queue(call)
        except ArgsError as exc:
            self._journal.forget(call)
            self._callers.answer(call, api_error(str(exc)), None)

    def _store_method(self, call: Call, method) -> None:
        try:
            method.check(call.args)
        except ArgsError as exc:
            self._callers.answer(call, api_error(str(exc)), None)
            return

        def answer(error, result) -> None:
            self._callers.answer(call, error, result)
        if call.method == "user_get":
            self._users.get(call.args, answer)
        else:
            self._users.set_data(call.args, answer)

    def _answer_from_profile_cache(self, call: Call) -> bool:
        user_id = call.args.get("userId")
        if not isinstance(user_id, str) or not user_id:
            return False  # build_request names the problem
        profile = self._profiles.cached(user_id)
        if profile is None:
            return False
        self._counters.add("profile_cache_hits")
        self._callers.answer(call, None, dict(profile, cached=True))
        return True

    def _seen_before(self, call: Call) -> bool:
        """Ask the journal; False: the call is to be made (anew, or again after a retryable failure)."""
        verdict = self._journal.look_up(call)
        if verdict.seen is Seen.NEW:
            return False
        if verdict.seen is Seen.JOINED:
            self._callers.join(verdict.current, call)
        elif verdict.seen is Seen.ANSWERED:
            self._callers.answer(call, *verdict.answer)
        else:
            self._submit(verdict.send)
        return True

    def _queue(self, call: Call) -> None:
        """A new call as a Send (or a batch member). Raises ArgsError naming a bad argument."""
        if call.method == "reply":
            request = build_request("reply", call.args, None, self._table)   # checks the args even if it goes as a push
            age_s = call.age_s(self._clock())
            if reply_goes_as(age_s, self._reply_max_age_s, call.repeat) == "push":
                error = self._expired_reply(call, f"the token is {age_s:.0f} s old (reply_max_age_s="
                                                  f"{self._reply_max_age_s:g})")
                if error is not None:
                    self._journal.forget(call)
                    self._callers.answer(call, error, None)
                    return
                self._counters.add("replies_as_push")
                self._submit(Send(reply_as_push(call.args, call.context.get("source"), call.retry_key()),
                                  [call], "push"))
                return
            send = Send(request, [call], "reply")
            send.repeat = call.repeat
            self._submit(send)
            return
        request = build_request(call.method, call.args, call.retry_key(), self._table)
        if call.method == "push" and self._batcher is not None and call.key is not None:
            group = batch_key(call.args)
            if group is not None:
                self._batcher.add(group, call.args["to"], call)
                return
        self._submit(Send(request, [call], call.method))

    def _submit(self, send: Send) -> None:
        self._scheduler.submit(send.endpoint, send)
