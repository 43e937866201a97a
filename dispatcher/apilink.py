"""The dispatcher's end of the rate limiter pipe: handler API calls out, answers back.

The rate limiter is a child process (`python -m frontdesk.ratelimiter`), the one process of a
dispatcher that gets the access token: an inherited descriptor, never its environment. Every call
waiting for an answer stays in `pending` until answered, so when the rate limiter dies it is
restarted with backoff and every pending call is sent again; the call journal in the store
makes the repeat safe (a call that already reached LINE is answered from the journal).

A call goes to the rate limiter only while its handler and its event are within their bounds
(dispatcher/callbounds.py); the others wait here. When a handler is gone, its waiting calls are
dropped and the rate limiter is told to drop its pending ones (`cancel`): it sends nothing of
theirs that has not gone out, and their answers, owed to nobody now, are never written.
"""
from __future__ import annotations

import fcntl
import logging
import signal
import sys
import time
from dataclasses import dataclass

from frontdesk.protocol import rpc
from frontdesk.protocol.credentials import ChildSecrets, SealedSecrets
from frontdesk.protocol.frames import encode_frame

from .callbounds import CallBounds
from .supervise import RestartPolicy
from .workers import FramedChild, describe_exit

log = logging.getLogger("frontdesk.dispatcher")

RATE_LIMITER_ARGV = [sys.executable, "-m", "frontdesk.ratelimiter"]
PIPE_BYTES = 1 << 20   # the rate limiter's stdout pipe (widen_pipe)


@dataclass
class PendingCall:
    handler: object          # the HandlerProcess that asked
    handler_msgid: int       # the msgid of its request, for the answer
    params: list             # the "call" request's params: [call map, args]
    delivery: object         # the event delivery it was made for (its deadline waits), or None
    size: int                # bytes of its frame to the rate limiter (CallBounds)
    event: tuple             # its event's key in CallBounds (event_key)
    dropped: bool = False    # its handler is gone: the answer goes to nobody


def event_key(handler, delivery) -> tuple:
    """An event's key in CallBounds: one delivery of one handler; the handler's calls made for no
    event count as one event."""
    return (handler, None if delivery is None else delivery.msgid)


class RateLimiterProcess(FramedChild):
    def __init__(self, link: "ApiLink", secrets: ChildSecrets, loop, settings):
        super().__init__("ratelimiter", RATE_LIMITER_ARGV, {**link.env, **secrets.environ}, loop,
                         settings.max_frame_bytes, collect_stderr=False, pass_fds=secrets.pass_fds)
        self.link = link
        widen_pipe(self.proc.stdout.fileno())

    def on_message(self, message) -> None:
        self.link.on_message(message)

    def violation(self, reason: str) -> None:
        super().violation(reason)
        log.error("ratelimiter_protocol_violation pid=%d reason=%s", self.pid, reason)
        self.signal(signal.SIGTERM)


def widen_pipe(fd: int) -> None:
    """Every answer of every handler comes through the rate limiter's stdout: with Linux's default
    64 KiB a loop turn read at most that much, so a few big answers (user data, content) held the
    small ones behind them for seconds. A bigger pipe (up to /proc/sys/fs/pipe-max-size) lets one
    turn take up to PIPE_BYTES."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except (AttributeError, OSError) as exc:   # not Linux, or a lower pipe-max-size: the default stays
        log.debug("event=pipe_size_kept fd=%d reason=%s", fd, exc)


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
        self.pending: dict[int, PendingCall] = {}      # at the rate limiter, by our msgid
        self.bounds = CallBounds(settings.handler_api_max_calls, settings.handler_api_max_bytes,
                                 settings.event_api_max_calls, settings.event_api_max_bytes)
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
            if call.dropped:
                del self.pending[msgid]
                self.bounds.answered(call.handler, call.event, call.size)
            else:
                self.process.send(rpc.Request(msgid, "call", call.params))

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def call(self, handler, handler_msgid: int, params: list, delivery=None) -> None:
        """Relay one call, now or once its handler and event have room (CallBounds): params are
        [call map, args] (SPEC.md section 15), so the frame nests no deeper than the handler's own
        request and encodes whenever that one decoded."""
        msgid = self._msgids.next()
        frame = encode_frame(rpc.Request(msgid, "call", params).to_wire())
        call = PendingCall(handler, handler_msgid, params, delivery, len(frame), event_key(handler, delivery))
        if delivery is not None:
            handler.call_waiting(delivery)   # waiting on frontdesk, held here or not
        self._send(self.bounds.offer(handler, call.event, call.size, handler.unread_bytes, (msgid, call, frame)))
        if self.bounds.has_held(handler):
            handler.pause_reading(self.bounds.holding(handler))

    def release(self, handler) -> None:
        """Send the held calls of `handler` that fit now (an answer came, or it read what it owed)."""
        if not self.bounds.has_held(handler):
            return
        self._send(self.bounds.releasable(handler, handler.unread_bytes))
        handler.pause_reading(self.bounds.holding(handler))

    def _send(self, going: list) -> None:
        for msgid, call, frame in going:
            self.pending[msgid] = call
            if self.running:
                self.process.send_frame(frame)

    def forget(self, handler) -> None:
        """`handler` is gone: drop its held calls, and tell the rate limiter to drop its pending
        ones (it answers each once, and writes no answer for it after that)."""
        self.bounds.drop(handler)
        cancelled = []
        for msgid, call in self.pending.items():
            if call.handler is handler and not call.dropped:
                call.dropped = True
                cancelled.append(msgid)
        if cancelled and self.running:
            self.process.send(rpc.Notification("cancel", [cancelled]))
        if cancelled:
            log.info("event=calls_cancelled handler=%s pid=%d calls=%d", handler.name, handler.pid, len(cancelled))

    def on_message(self, message) -> None:
        if isinstance(message, rpc.Response):
            call = self.pending.pop(message.msgid, None)
            if call is None:
                log.warning("ratelimiter_unexpected_response msgid=%d", message.msgid)
                return
            self.bounds.answered(call.handler, call.event, call.size)
            if call.dropped:
                return
            call.handler.respond(call.handler_msgid, message.error, message.result)
            if call.delivery is not None:
                call.handler.call_answered(call.delivery)
            self.release(call.handler)
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
                "held_calls": self.bounds.held_count(),
                "stats": self.stats,
                "limits_per_s": {name: count / period for name, (count, period) in self.settings.rate_limits.items()}}
