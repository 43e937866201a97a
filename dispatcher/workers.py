"""A handler slot: one supervised child (protocol/children/lifecycle.py) whose processes speak
frames with the dispatcher.

Each process it spawns gets the handshake (`hello`), a window of events in flight with their
deadlines (dispatcher/deliveries.py), and its API calls numbered per event delivery. Decisions
that need more than one handler (where events go, what a failure costs them, where a call goes)
belong to its owner, the arbiter, which it calls through the small HandlerOwner protocol.
"""
from __future__ import annotations

import logging
import math
import subprocess
import time
from collections import deque
from typing import Callable, Protocol

from frontdesk.protocol import PROTOCOL_VERSION, rpc, version
from frontdesk.protocol.children.framed import STDERR_LINE_MAX, FramedChild
from frontdesk.protocol.children.lifeline import Identity, describe_exit
from frontdesk.protocol.children.lifecycle import (BACKOFF, CLOSING, DRAINING, READY, STARTING, STOPPING,
                                                   SupervisedChild)
from frontdesk.protocol.children.policy import RestartPolicy
from frontdesk.protocol.frames import EncodeError, encode_frame
from frontdesk.protocol.process import HANDLING_BUCKETS_S

from .batchframe import BATCH, batch_frame, pack_run
from .deliveries import Deliveries, Delivery, OutOfTurn

PROTOCOL_VERSIONS = [PROTOCOL_VERSION]   # offered in the hello, newest first
FEATURES = [BATCH]                        # offered in the hello; a handler takes those it names
EXIT_AFTER_EOF_WAIT_S = 0.1   # failure path only: how long to wait for an exit after stdout EOF
READING = (STARTING, READY, DRAINING, CLOSING)   # a process we still read and write
LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
              "error": logging.ERROR}


class RunSource(Protocol):
    """Where the run leased behind a key's event waits (the router): a batch takes what fits of it."""

    def take_run(self, key: str) -> deque | None: ...

    def keep_run(self, key: str, run: deque) -> None: ...


class HandlerOwner(Protocol):
    """What a handler slot asks of the dispatcher that owns it."""

    def handler_ready(self, handler: "HandlerProcess") -> None:
        """It answered the handshake: it may take events."""

    def event_answered(self, handler: "HandlerProcess", delivery: Delivery, error, after: list[Delivery]) -> None:
        """An ack (error None) or a nack of one of its events; `after`: the rest of its batch the
        answer moved (acked: the next one, started now; nacked: the rest, withdrawn)."""

    def events_lost(self, handler: "HandlerProcess", reason: str, blamed: set[int] | None) -> None:
        """It failed holding events (`blamed`: the msgids the failure is known to be about)."""

    def api_call(self, handler: "HandlerProcess", request: rpc.Request) -> None: ...

    def handler_read(self, handler: "HandlerProcess") -> None:
        """It took bytes from its stdin (calls held back for its unread bytes may go)."""


class ReadWatch:
    """Since when a child has taken nothing from its stdin while bytes waited for it: a handler
    that takes nothing for event_deadline_s is stuck, whatever it does on its stdout."""
    __slots__ = ("since",)

    def __init__(self):
        self.since: float | None = None

    def flushed(self, before: int, after: int, now: float) -> bool:
        """After a write: `before` bytes were queued, `after` still are. Whether it took any."""
        took = after < before
        if not after:
            self.since = None
        elif took or self.since is None:
            self.since = now
        return took

    def due(self, limit_s: float) -> float | None:
        """When it is stuck if it takes nothing more (None: nothing waits for it)."""
        return None if self.since is None else self.since + limit_s


class HandlerProcess(SupervisedChild):
    """A handler slot across its processes: handshake, a window of events in flight, API calls
    relayed through its owner.

    A process is STARTING until it answers the hello, then READY (takes events); `drain` makes it
    DRAINING (takes none, waits for its acks), then CLOSING (stdin closed, it exits 0); `fail` gives
    up on it from anywhere (STOPPING: TERM, KILL after kill_grace_s). A slot still wanted starts a
    new process after its group's backoff (BACKOFF); the per-process state below is new each time.
    `pipes` builds the FramedChild (a seam for the unit tests).
    """

    def __init__(self, name: str, argv: list[str], env: dict[str, str], loop, settings, owner: HandlerOwner,
                 policy: RestartPolicy, log: logging.Logger, *, identity: Identity | None = None,
                 clock: Callable[[], float] = time.monotonic, wanted: bool = True,
                 pipes: Callable[..., FramedChild] = FramedChild):
        super().__init__(name, policy, log, clock=clock, wanted=wanted)
        self.argv, self.env, self.loop, self.settings = argv, env, loop, settings
        self.owner = owner
        self.identity = identity
        self._pipes = pipes
        self.pipes: FramedChild | None = None
        self._new_life()

    def _new_life(self) -> None:
        """The state of one process, fresh at each spawn."""
        self.deliveries = Deliveries(self.settings.event_deadline_s, HANDLING_BUCKETS_S, self.clock)
        self.in_flight = self.deliveries.in_flight
        self.failure: str | None = None
        self.handler_name = ""
        self.max_in_flight = 0
        self.batches = False           # it declared the `batch` feature in its handshake
        self.ready_by = math.inf       # STARTING: the handshake's deadline
        self._msgids = rpc.MsgIds(start=1)
        self._reads = ReadWatch()

    # --- the life cycle ------------------------------------------------------------------------------
    def _spawn(self) -> FramedChild:
        self._new_life()
        self.pipes = self._pipes(self.name, self.argv, self.env, self.loop, self, self.settings.max_frame_bytes,
                                 self.log, identity=self.identity).spawn()
        return self.pipes

    def _started(self) -> None:
        self.ready_by = self.clock() + self.settings.handler_start_timeout_s
        self.pipes.send(rpc.Request(0, "hello", [{"protocol": PROTOCOL_VERSIONS, "dispatcher": f"frontdesk/{version()}",
                                                  "max_frame_bytes": self.settings.max_frame_bytes,
                                                  "features": FEATURES}]))

    def _exiting(self, returncode: int) -> None:
        if self.in_flight or self.deliveries.reserved:   # it exited before we read its EOF: retried
            self._lost(self.failure or describe_exit(returncode), None)

    def _lost(self, reason: str, blamed: set[int] | None) -> None:
        self.deliveries.died_holding += len(self.in_flight)
        self.owner.events_lost(self, reason, blamed)

    def _served(self) -> bool:
        # a death tied to events is charged to them (dead letters after max_attempts), not to the
        # pool: it restarts at once and does not count towards degraded
        return self.deliveries.handled > 0 or self.deliveries.died_holding > 0

    def _crash_reason(self, returncode: int) -> str:
        return f"{self.name}: {self.failure or describe_exit(returncode)}"

    def _closing_overdue(self) -> None:
        self.fail(f"did not exit within kill_grace_s={self.settings.kill_grace_s:g} after stdin closed")

    def drain(self, **fields) -> None:
        """Take no new events; close stdin once the in-flight ones are answered."""
        super().drain(in_flight=len(self.in_flight), **fields)
        self._close_when_idle()

    def _close_when_idle(self) -> None:
        if self.state is DRAINING and not self.in_flight:
            self.close(self.settings.kill_grace_s)

    def fail(self, reason: str, blamed: set[int] | None = None) -> None:
        """Give up on this process: TERM now, KILL after kill_grace_s; its owner retries its events
        (`blamed`: the msgids of the events the failure is known to be about)."""
        if self.state not in READING:
            return
        self.failure = reason
        self.stop(reason)
        self._lost(reason, blamed)

    def stop(self, reason: str, kill: bool = False) -> None:
        """TERM now (KILL with `kill`), KILL after kill_grace_s; its output is ignored from now on."""
        if self.pipes is not None:
            self.pipes.stop_reading()
        level = logging.INFO if self.failure is None else logging.WARNING
        super().terminate(self.settings.kill_grace_s, level=level, reason=reason)
        if kill:
            self.kill()

    # --- capacity and events -------------------------------------------------------------------------
    @property
    def free_slots(self) -> int:
        deliveries = self.deliveries
        if self.state is not READY or deliveries.solo or deliveries.reserved is not None:
            return 0
        return self.max_in_flight - deliveries.active

    def reserve(self, doc: dict) -> None:
        """Take a suspect event (one that was in flight beside a crash): no new events come here
        until the ones in flight are answered, then this one runs alone, so that if it crashes
        the handler the crash is its own."""
        self.deliveries.reserve(doc)
        self._deliver_reserved_if_idle()

    def _deliver_reserved_if_idle(self) -> None:
        if self.deliveries.reserved is not None and self.state is READY:
            doc = self.deliveries.reserved_due()
            if doc is not None:
                self.deliver(doc)

    def take_reserved(self) -> list[Delivery]:
        return self.deliveries.take_reserved()

    def take_in_flight(self) -> list[Delivery]:
        return self.deliveries.take_all()

    def take_queued(self) -> list[Delivery]:
        """The events of its batches not started yet (a failure gives them back uncharged)."""
        return self.deliveries.take_queued()

    def deliver(self, doc: dict, runs: RunSource | None = None) -> Delivery:
        """Send one event; raises EncodeError (and sends nothing) if it cannot be framed. To a
        handler that takes batches, the run leased behind it in `runs` goes in the same frame."""
        run = runs.take_run(doc["o"]["key"]) if runs is not None and self.batches else None
        if run:
            return self._deliver_batch(doc, run, runs)
        msgid = self._msgids.next()
        frame = encode_frame([rpc.REQUEST, msgid, "event", [doc]])
        delivery = self.deliveries.add(msgid, doc)
        self._send_frame(frame)
        return delivery

    def _deliver_batch(self, doc: dict, run: deque, runs: RunSource) -> Delivery:
        """The event and as much of its run as fits in one batch frame; the rest stays with `runs`."""
        try:
            entries = pack_run(doc, run, self._msgids.next, self.settings.max_frame_bytes)
        except EncodeError:
            runs.keep_run(doc["o"]["key"], run)
            raise
        for _ in range(len(entries) - 1):
            run.popleft()
        if run:
            runs.keep_run(doc["o"]["key"], run)
        if len(entries) == 1:
            return self.deliver(doc)
        deliveries = [self.deliveries.add(msgid, item, queued=index > 0)
                      for index, (msgid, item, _) in enumerate(entries)]
        self._send_frame(batch_frame(entries))
        return deliveries[0]

    def delivery_for(self, event_id) -> Delivery | None:
        return self.deliveries.for_event(event_id)

    def respond(self, msgid: int, error, result) -> None:
        """Answer one of the handler's requests (an API call)."""
        self._send_frame(encode_frame(rpc.Response(msgid, error, result).to_wire()))

    def send_answer(self, frame: bytes) -> None:
        """An API call's answer, framed already (the rate limiter's, relayed undecoded)."""
        self._send_frame(frame)

    def _send_frame(self, frame: bytes) -> None:
        """Queue a frame; a handler that lets more than handler_outbound_max_bytes pile up (it
        stopped reading its stdin) is stuck: killed, its queue dropped, its events retried."""
        pipes = self.pipes
        pipes.send_frame(frame)
        if pipes.unread_bytes > self.settings.handler_outbound_max_bytes:
            queued = pipes.unread_bytes
            pipes.discard_output()
            self.fail(f"stuck: stopped reading its stdin with {queued} bytes queued "
                      f"(handler_outbound_max_bytes={self.settings.handler_outbound_max_bytes})")

    @property
    def unread_bytes(self) -> int:
        return self.pipes.unread_bytes if self.pipes is not None else 0

    def pause_reading(self, paused: bool) -> None:
        self.pipes.pause_reading(paused)

    # --- timers --------------------------------------------------------------------------------------
    def next_timer(self) -> float | None:
        """The monotonic time at which `check_timers` has something to do."""
        times = [self.ready_by] if self.state is STARTING else []
        own = super().next_timer()
        if own is not None:
            times.append(own)
        deadline = self.deliveries.next_deadline()
        if deadline is not None:
            times.append(deadline)
        stuck_at = self._reads.due(self.settings.event_deadline_s)
        if stuck_at is not None and self.state in READING:
            times.append(stuck_at)
        return min(times) if times else None

    def check_timers(self, now: float) -> None:
        if self.state is STARTING and now >= self.ready_by:
            self.fail(f"no handshake within handler_start_timeout_s={self.settings.handler_start_timeout_s:g}")
        elif self.state in (BACKOFF, STOPPING) or (self.state is CLOSING and now >= self.kill_at):
            super().check_timers(now)
        elif self.state in READING and now >= (self._reads.due(self.settings.event_deadline_s) or math.inf):
            queued = self.pipes.unread_bytes
            self.pipes.discard_output()
            self.fail(f"stuck: read nothing of its stdin for event_deadline_s="
                      f"{self.settings.event_deadline_s:g} with {queued} bytes waiting")
        else:
            late = self.deliveries.late(now)
            if late:
                self.fail(f"event {late[0].event_id} got no answer or progress within "
                          f"event_deadline_s={self.settings.event_deadline_s:g}", {d.msgid for d in late})

    # --- from the handler (FrameReceiver) ------------------------------------------------------------
    def on_flushed(self, before: int, after: int) -> None:
        """Note when it last read anything (ReadWatch), and tell the owner when it read some."""
        if self._reads.flushed(before, after, self.clock()):
            self.owner.handler_read(self)

    def on_violation(self, reason: str) -> None:
        self.fail(f"protocol violation: {reason}")

    def on_stdout_closed(self) -> None:
        if self.state not in (STARTING, READY, DRAINING):
            return
        # A handler whose stdout ends is nearly always exiting: wait a moment so that the reason
        # is its exit status (a race here made the pool's degraded reason vary run to run).
        try:
            self.fail(describe_exit(self.pipes.wait(EXIT_AFTER_EOF_WAIT_S)))
        except subprocess.TimeoutExpired:
            self.fail("closed its stdout")

    def on_message(self, message) -> None:
        if isinstance(message, rpc.Response):
            if self.state is STARTING:
                self._on_handshake(message)
                return
            try:
                delivery = self.deliveries.answered(message.msgid)
            except OutOfTurn as exc:
                self.pipes.stop_reading()
                self.on_violation(str(exc))
                return
            if delivery is None:
                if self.deliveries.was_withdrawn(message.msgid):
                    return   # given back after a nack before it in its batch
                self.pipes.stop_reading()
                self.on_violation(f"response to msgid {message.msgid}, which is no event in flight")
                return
            after = self.deliveries.after_answer(delivery, message.error is None) if self.deliveries.queued else []
            self.owner.event_answered(self, delivery, message.error, after)
            self._deliver_reserved_if_idle()
            self._close_when_idle()
        elif self.state is STARTING:
            self.pipes.stop_reading()
            self.on_violation(f"sent {type(message).__name__.lower()} before answering the hello")
        elif isinstance(message, rpc.Request):
            self.owner.api_call(self, message)
        elif message.method == "progress":
            delivery = self.delivery_for(message.params[0] if message.params else None)
            if delivery is not None:
                self.deliveries.touch(delivery)
        elif message.method == "log":
            self._on_log(message.params)

    def _on_handshake(self, message: rpc.Response) -> None:
        if message.msgid != 0:
            self.pipes.stop_reading()
            self.on_violation("sent response before answering the hello")
            return
        if message.error is not None:
            self.fail(f"refused the handshake: {_error_text(message.error)}")
            return
        try:
            self.max_in_flight, self.handler_name, self.batches = handshake_terms(message.result)
        except ValueError as problem:
            self.pipes.stop_reading()
            self.on_violation(str(problem))
            return
        self.ready(handler=self.handler_name, max_in_flight=self.max_in_flight, batches=self.batches)
        self.owner.handler_ready(self)

    def _on_log(self, params: list) -> None:
        level, text = handler_log_entry(params)
        self.log.log(level, "event=handler_log name=%s pid=%s text=%s", self.name, self.pid, text)

    # --- figures -------------------------------------------------------------------------------------
    @property
    def handled(self) -> int:
        """Events its current process answered (none without a process)."""
        return self.deliveries.handled if self.process is not None else 0

    def busy_total(self, now: float) -> float:
        return self.deliveries.busy_total(now)

    def status(self) -> dict:
        """Cumulative counters of its process; readers turn two of them into rates (command/observe.py)."""
        return slot_status(self)


def _error_text(error) -> str:
    if isinstance(error, dict) and "message" in error:
        return str(error["message"])[:200]
    return repr(error)[:200]


def handshake_terms(result) -> tuple[int, str, bool]:
    """(max_in_flight, name, whether it takes batches) from the answer to the hello. Raises
    ValueError naming what is wrong with it."""
    result = result if isinstance(result, dict) else {}
    window = result.get("max_in_flight")
    if result.get("protocol") not in PROTOCOL_VERSIONS:
        raise ValueError(f"handshake names protocol {result.get('protocol')!r}, offered {PROTOCOL_VERSIONS}")
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        raise ValueError(f"handshake max_in_flight must be an integer >= 1, got {window!r}")
    features = result.get("features")
    return window, str(result.get("name", ""))[:100], isinstance(features, list) and BATCH in features


def slot_status(handler: HandlerProcess) -> dict:
    """A slot's figures for its status (HandlerProcess.status)."""
    if handler.process is None:
        return {"name": handler.name, "pid": None, "state": handler.state.value, "in_flight": 0, "handled": 0,
                "restarts": handler.restarts}
    deliveries = handler.deliveries
    return {"name": handler.name, "pid": handler.pid, "state": handler.state.value, "in_flight": len(handler.in_flight),
            "max_in_flight": handler.max_in_flight, "handled": deliveries.handled,
            "busy_s": round(deliveries.busy_total(handler.clock()), 4),
            "handling_s": round(deliveries.handling.total_s, 4),
            "handling_counts": list(deliveries.handling.counts), "restarts": handler.restarts}


def handler_log_entry(params: list) -> tuple[int, str]:
    """The level and text of a handler's `log` notification (SPEC.md), the text cut to a line."""
    entry = params[0] if params and isinstance(params[0], dict) else {}
    return LOG_LEVELS.get(entry.get("level"), logging.INFO), str(entry.get("message", ""))[:STDERR_LINE_MAX]
