"""The dispatcher's end of the rate limiter pipe: handler API calls out, answers back.

The rate limiter is a supervised child (`python -m frontdesk.ratelimiter`), the one process of a
dispatcher that gets the access token: an inherited descriptor, never its environment. Every call
waiting for an answer stays in `pending` until answered, so when the rate limiter dies it is
restarted with backoff and every pending call is sent again; the call journal in the store
makes the repeat safe (a call that already reached LINE is answered from the journal).

A call goes to the rate limiter only while its handler and its event are within their bounds
(dispatcher/callbounds.py); the others wait here. When a handler's process is gone, its waiting
calls are dropped and the rate limiter is told to drop its pending ones (`cancel`): it sends
nothing of theirs that has not gone out, and their answers, owed to nobody now, are never written.
"""
from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from typing import Callable

from frontdesk.protocol import rpc
from frontdesk.protocol.children.framed import FramedChild
from frontdesk.protocol.children.lifecycle import CLOSING, STOPPING, SupervisedChild
from frontdesk.protocol.children.policy import RestartPolicy
from frontdesk.protocol.children.stream import RawResponse, RelayStream
from frontdesk.protocol.credentials import ChildSecrets, SealedSecrets
from frontdesk.protocol.token_source import ratelimiter_secrets
from frontdesk.protocol.frames import encode_frame

from .callbounds import CallBounds

log = logging.getLogger("frontdesk.dispatcher")

RATE_LIMITER_ARGV = [sys.executable, "-m", "frontdesk.ratelimiter"]
# The rate limiter's stdout pipe: every answer of every handler comes through it, and with Linux's
# default 64 KiB a loop turn read at most that much, so a few big answers (user data, content) held
# the small ones behind them for seconds. 1 MiB lets one turn take that much.
PIPE_BYTES = 1 << 20


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


def mark_as_read_token(doc: dict) -> str | None:
    """The `markAsReadToken` of a stored message event (LINE puts it in the message object)."""
    message = (doc["o"].get("event") or {}).get("message")
    token = message.get("markAsReadToken") if isinstance(message, dict) else None
    return token if isinstance(token, str) and token else None


class RateLimiterChild(SupervisedChild):
    """The rate limiter as a supervised child: started with the token's descriptor (the same at
    every restart), its stdout pipe widened; what it says goes to the ApiLink."""

    def __init__(self, link: "ApiLink", env: dict[str, str], secrets: ChildSecrets, loop, settings, *,
                 clock: Callable[[], float] = time.monotonic, pipes: Callable[..., FramedChild] = FramedChild):
        super().__init__("ratelimiter", RestartPolicy(settings, "ratelimiter", log, clock), log, clock=clock)
        self.link = link
        self.env = {**env, **secrets.environ}
        self.pass_fds = secrets.pass_fds
        self.loop, self.settings = loop, settings
        self._pipes = pipes
        self.pipes: FramedChild | None = None

    def _spawn(self) -> FramedChild:
        self.pipes = self._pipes(self.name, RATE_LIMITER_ARGV, self.env, self.loop, self, self.settings.max_frame_bytes,
                                 log, collect_stderr=False, pass_fds=self.pass_fds, stdout_pipe_bytes=PIPE_BYTES,
                                 stream=RelayStream).spawn()
        return self.pipes

    def _started(self) -> None:
        self.ready(resending=len(self.link.pending))
        self.link.resend()

    def send(self, message: rpc.Message) -> None:
        self.pipes.send(message)

    def send_frame(self, frame: bytes) -> None:
        self.pipes.send_frame(frame)

    @property
    def running(self) -> bool:
        return self.process is not None

    def stop(self, fast: bool = False) -> None:
        """Close its stdin (it finishes and exits), KILL after kill_grace_s; KILL at once if fast."""
        self.retire()
        if self.process is None:
            return
        if fast:
            self.kill(reason="fast stop")
        elif self.state not in (CLOSING, STOPPING):
            self.close(self.settings.kill_grace_s)

    # --- FrameReceiver ---------------------------------------------------------------------------------
    def on_message(self, message: rpc.Message) -> None:
        self.link.on_message(message)

    def on_violation(self, reason: str) -> None:
        log.error("event=ratelimiter_protocol_violation pid=%s reason=%r", self.pid, reason)
        self.terminate(self.settings.kill_grace_s, level=logging.ERROR, reason="protocol violation")

    def on_stdout_closed(self) -> None:
        """Its exit is reaped on SIGCHLD, and restarted from there."""

    def on_flushed(self, before: int, after: int) -> None:
        pass


class ApiLink:
    """Relays handlers' API calls to the rate limiter and its answers back: the calls pending
    there (by our msgid), the calls held back by their bounds, and the rate limiter child itself
    (started in `start()`, restarted by its life cycle, every pending call sent again)."""

    def __init__(self, settings, env: dict[str, str], loop, *, clock: Callable[[], float] = time.monotonic,
                 pipes: Callable[..., FramedChild] = FramedChild):
        self.settings = settings
        # the token, sealed once (or the descriptor `frontdesk run` gave us, unread): every
        # rate limiter we start, and restart, inherits it (protocol/credentials.py)
        names = ratelimiter_secrets(settings)   # the token, or what its token source issues it with
        token = SealedSecrets(settings, names).for_child(*names)
        self.child = RateLimiterChild(self, env, token, loop, settings, clock=clock, pipes=pipes)
        self.pending: dict[int, PendingCall] = {}      # at the rate limiter, by our msgid
        self.bounds = CallBounds(settings.handler_api_max_calls, settings.handler_api_max_bytes,
                                 settings.event_api_max_calls, settings.event_api_max_bytes)
        self.stats: dict | None = None
        self._msgids = rpc.MsgIds()

    def start(self) -> None:
        self.child.start()

    def resend(self) -> None:
        """The rate limiter (re)started: every call still owed an answer goes to it again."""
        for msgid, call in list(self.pending.items()):
            if call.dropped:
                del self.pending[msgid]
            else:
                self.child.send(rpc.Request(msgid, "call", call.params))

    def call(self, handler, handler_msgid: int, params: list, delivery=None) -> None:
        """Relay one call, now or once its handler and event have room (CallBounds): params are
        [call map, args] (SPEC.md section 15), so the frame nests no deeper than the handler's own
        request and encodes whenever that one decoded."""
        msgid = self._msgids.next()
        frame = encode_frame(rpc.Request(msgid, "call", params).to_wire())
        call = PendingCall(handler, handler_msgid, params, delivery, len(frame), event_key(handler, delivery))
        if delivery is not None:
            handler.deliveries.call_waiting(delivery)   # waiting on frontdesk, held here or not
        self._send(self.bounds.offer(handler, call.event, call.size, handler.unread_bytes, (msgid, call, frame)))
        if self.bounds.has_held(handler):
            handler.pause_reading(self.bounds.holding(handler))

    def mark_as_read(self, tokens: list[str]) -> None:
        """Acked message events' markAsReadToken: the rate limiter marks them read at its lowest
        priority (setting mark_as_read; ratelimiter/mark_read.py). Nothing is owed an answer, so a
        rate limiter that is down now just misses them."""
        if tokens and self.child.running:
            self.child.send(rpc.Notification("mark_as_read", [tokens]))

    def release(self, handler) -> None:
        """Send the held calls of `handler` that fit now (an answer came, or it read what it owed)."""
        if not self.bounds.has_held(handler):
            return
        self._send(self.bounds.releasable(handler, handler.unread_bytes))
        handler.pause_reading(self.bounds.holding(handler))

    def _send(self, going: list) -> None:
        for msgid, call, frame in going:
            self.pending[msgid] = call
            if self.child.running:
                self.child.send_frame(frame)

    def forget(self, handler) -> None:
        """`handler`'s process is gone: drop its held calls, and tell the rate limiter to drop its
        pending ones (it answers each once, and writes no answer for it after that)."""
        cancelled = []
        for msgid, call in self.pending.items():
            if call.handler is handler and not call.dropped:
                call.dropped = True
                cancelled.append((msgid, call.event))
        self.bounds.forget(handler, {event for _, event in cancelled})
        if cancelled and self.child.running:
            self.child.send(rpc.Notification("cancel", [[msgid for msgid, _ in cancelled]]))
        if cancelled:
            log.info("event=calls_cancelled handler=%s pid=%s calls=%d", handler.name, handler.pid, len(cancelled))

    def on_message(self, message: rpc.Message | RawResponse) -> None:
        """An answer goes back to the handler that asked under its msgid: as it came when it came
        packed (RelayStream reads no more than its msgid), else encoded again."""
        if isinstance(message, (RawResponse, rpc.Response)):
            call = self.pending.pop(message.msgid, None)
            if call is None:
                log.warning("event=ratelimiter_unexpected_response msgid=%d", message.msgid)
                return
            if call.dropped:
                return
            self.bounds.answered(call.handler, call.event, call.size)
            if type(message) is RawResponse:
                call.handler.send_answer(message.frame_for(call.handler_msgid))
            else:
                call.handler.respond(call.handler_msgid, message.error, message.result)
            if call.delivery is not None:
                call.handler.deliveries.call_answered(call.delivery)
            self.release(call.handler)
        elif isinstance(message, rpc.Notification):
            if message.method == "stats" and message.params and isinstance(message.params[0], dict):
                self.stats = message.params[0]
        else:
            self.child.send(rpc.Response(message.msgid, rpc.error_value(f"unknown method {message.method}"), None))

    def status(self) -> dict:
        return {"pid": self.child.pid if self.child.running else None, "restarts": self.child.restarts,
                "degraded": self.child.policy.degraded, "pending_calls": len(self.pending),
                "held_calls": self.bounds.held_count(),
                "stats": self.stats,
                "limits_per_s": {name: count / period for name, (count, period) in self.settings.rate_limits.items()}}
