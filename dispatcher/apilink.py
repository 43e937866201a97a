"""The dispatcher's end of the rate limiter pipe: handler API calls out, answers back.

The rate limiter is a child process (`python -m frontdesk.ratelimiter`), the one process of a
dispatcher that gets the access token: an inherited descriptor, never its environment. Every call
waiting for an answer stays in `pending` until answered, so when the rate limiter dies it is
restarted with backoff and every pending call is sent again; the call journal in the store
makes the repeat safe (a call that already reached LINE is answered from the journal).
"""
from __future__ import annotations

import logging
import signal
import sys
import time
from dataclasses import dataclass

from frontdesk.protocol import rpc
from frontdesk.protocol.credentials import ChildSecrets, SealedSecrets

from .supervise import RestartPolicy
from .workers import FramedChild, describe_exit

log = logging.getLogger("frontdesk.dispatcher")

RATE_LIMITER_ARGV = [sys.executable, "-m", "frontdesk.ratelimiter"]


@dataclass
class PendingCall:
    handler: object          # the HandlerProcess that asked
    handler_msgid: int       # the msgid of its request, for the answer
    params: list             # the "call" request's params: [call map, args]
    delivery: object         # the event delivery it was made for (its deadline waits), or None


class RateLimiterProcess(FramedChild):
    def __init__(self, link: "ApiLink", secrets: ChildSecrets, loop, settings):
        super().__init__("ratelimiter", RATE_LIMITER_ARGV, {**link.env, **secrets.environ}, loop,
                         settings.max_frame_bytes, collect_stderr=False, pass_fds=secrets.pass_fds)
        self.link = link

    def on_message(self, message) -> None:
        self.link.on_message(message)

    def violation(self, reason: str) -> None:
        super().violation(reason)
        log.error("ratelimiter_protocol_violation pid=%d reason=%s", self.pid, reason)
        self.signal(signal.SIGTERM)


class ApiLink:
    def __init__(self, settings, env: dict[str, str], loop):
        self.settings = settings
        self.env = env
        # the token, sealed once (or the descriptor `frontdesk run` gave us, unread): every
        # rate limiter we start, and restart, inherits it (protocol/credentials.py)
        self.token = SealedSecrets(settings, ["channel_access_token"]).for_child("channel_access_token")
        self.loop = loop
        self.policy = RestartPolicy(settings, "ratelimiter", log)
        self.process: RateLimiterProcess | None = None
        self.pending: dict[int, PendingCall] = {}
        self.stats: dict | None = None
        self.wanted = True
        self._msgids = rpc.MsgIds()
        self._timer: float | None = None

    def start(self) -> None:
        try:
            self.process = RateLimiterProcess(self, self.token, self.loop, self.settings)
        except OSError as exc:
            self._timer = time.monotonic() + self.policy.crashed(f"cannot start: {exc}", "ratelimiter")
            log.error("ratelimiter_start_failed error=%s", exc)
            return
        self.policy.started("ratelimiter")
        self._timer = None
        log.info("ratelimiter_started pid=%d resending=%d", self.process.pid, len(self.pending))
        for msgid, call in list(self.pending.items()):
            if call.handler.returncode is None:
                self.process.send(rpc.Request(msgid, "call", call.params))
            else:
                del self.pending[msgid]

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def call(self, handler, handler_msgid: int, params: list, delivery=None) -> None:
        """Relay one call: params are [call map, args] (SPEC.md section 15), so the frame nests no
        deeper than the handler's own request and encodes whenever that one decoded."""
        msgid = self._msgids.next()
        self.pending[msgid] = PendingCall(handler, handler_msgid, params, delivery)
        if delivery is not None:
            handler.call_waiting(delivery)
        if self.running:
            self.process.send(rpc.Request(msgid, "call", params))

    def on_message(self, message) -> None:
        if isinstance(message, rpc.Response):
            call = self.pending.pop(message.msgid, None)
            if call is None:
                log.warning("ratelimiter_unexpected_response msgid=%d", message.msgid)
            elif call.handler.returncode is None:
                call.handler.respond(call.handler_msgid, message.error, message.result)
                if call.delivery is not None:
                    call.handler.call_answered(call.delivery)
        elif isinstance(message, rpc.Notification):
            if message.method == "stats" and message.params and isinstance(message.params[0], dict):
                self.stats = message.params[0]
        else:
            self.process.send(rpc.Response(message.msgid, rpc.error_value(
                f"unknown method {message.method}"), None))

    def reap(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        returncode = self.process.reap()
        if returncode is None:
            return
        how = describe_exit(returncode)
        if self.wanted:
            delay = self.policy.crashed(how, "ratelimiter")
            self._timer = time.monotonic() + delay
            log.warning("ratelimiter_exited pid=%d how=%s pending_calls=%d restart_in_s=%.2f",
                        self.process.pid, how, len(self.pending), delay)
        else:
            self._timer = None
            log.info("ratelimiter_stopped pid=%d how=%s", self.process.pid, how)

    def next_timer(self) -> float | None:
        return self._timer

    def check_timers(self, now: float) -> None:
        if self._timer is None or now < self._timer:
            return
        if self.wanted and not self.running:
            self.start()
        elif not self.wanted and self.running:
            log.warning("ratelimiter_killed pid=%d signal=KILL", self.process.pid)
            self.process.signal(signal.SIGKILL)
            self._timer = None

    def stop(self, fast: bool = False) -> None:
        """Close its stdin (it finishes and exits); KILL after kill_grace_s, at once if fast."""
        if not self.running:
            self.wanted, self._timer = False, None
            return
        if not self.wanted and not fast:
            return
        self.wanted = False
        if fast:
            self.process.signal(signal.SIGKILL)
            self._timer = None
        else:
            self.process.close_stdin()
            self._timer = time.monotonic() + self.settings.kill_grace_s

    @property
    def stopped(self) -> bool:
        return not self.running

    def status(self) -> dict:
        return {"pid": self.process.pid if self.running else None, "restarts": self.policy.crashes,
                "degraded": self.policy.degraded, "pending_calls": len(self.pending),
                "stats": self.stats,
                "limits_per_s": {name: count / period for name, (count, period) in self.settings.rate_limits.items()}}
