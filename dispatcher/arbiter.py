"""The dispatcher's master loop, in the spirit of gunicorn's arbiter: it wires the layers.

One thread, one selector (protocol/children/loop.py) over every handler's stdout and stderr, the
rate limiter's pipe, the store's change feed and a self-pipe for signals. Signal handlers do
nothing; the loop hands each signal to its `handle_<name>` method. Each turn converges the world
to the desired state: the handler pool to its target and a rolling restart's next step
(dispatcher/pool.py), claims from the store up to the free capacity and the turn's acks in one
paced store call (dispatcher/pacer.py, dispatcher/router.py), the suspects of a crash each run
alone (dispatcher/suspects.py), handlers' API calls to the rate limiter (dispatcher/apilink.py).
Timers only bound how long the selector may sleep. Retention runs on a thread of its own
(dispatcher/housekeeping.py).
"""
from __future__ import annotations

import enum
import logging
import os
import secrets
import socket
import time
from typing import Callable

from frontdesk.protocol import rpc
from frontdesk.protocol.coalesce import WorkRate
from frontdesk.protocol.children.framed import FramedChild
from frontdesk.protocol.children.lifeline import identity_of
from frontdesk.protocol.children.loop import EventLoop, SignalQueue
from frontdesk.protocol.children.policy import RestartPolicy
from frontdesk.protocol.config import handler_command
from frontdesk.protocol.credentials import without_secrets
from frontdesk.protocol.line_endpoints import API_METHODS
from frontdesk.protocol.process import status_name
from frontdesk.protocol.token_source import require_token_source
from frontdesk.store import StoreError, StoreGone, run_with_store
from frontdesk.store.status import StatusPublisher

from .apilink import ApiLink, mark_as_read_token
from .autoscale import Autoscaler
from .calls import CallRefused, call_params
from .control import Controls
from .deliveries import Delivery
from .housekeeping import Purger
from .pacer import StorePacer
from .pool import Pool
from .reclaim import reclaim_from_dead_predecessors
from .router import Router
from .settle import Settlement
from .suspects import Suspects
from .workers import HandlerProcess

log = logging.getLogger("frontdesk.dispatcher")

# `frontdesk top`'s `h` writes a fresh value here: every running dispatcher restarts its handlers.
ROLLING_RESTART_CONTROL = "handlers_rolling_restart"


class DispatcherState(enum.Enum):
    """The dispatcher's own state (its status document's `state`)."""
    RUNNING = "running"      # claims and delivers
    DRAINING = "draining"    # TERM/INT: claims nothing, lets what is in flight finish
    STOPPING = "stopping"    # QUIT or a second INT: gives every event back, kills every child
    STOPPED = "stopped"      # every child gone: the loop ends


RUNNING, DRAINING, STOPPING, STOPPED = DispatcherState


class Arbiter:
    """One dispatcher: the loop and the wiring of its layers, the answers to signals, its status.

    It owns the event loop, the dispatcher's state, and the decisions that need several layers
    (an answered event's ack, a failed handler's events, an API call's way to the rate limiter);
    the HandlerOwner callbacks its handler slots make (dispatcher/workers.py) land here. Built
    idle: `run()` opens everything and loops until stopped (`open()`/`turn()`/`close()` are its
    steps, which the unit tests drive with fake children through `pipes`). `clock` (monotonic)
    and `wall` (epoch) are injected.
    """

    def __init__(self, settings, store, environ: dict | None = None, *, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, pipes: Callable[..., FramedChild] = FramedChild):
        self.settings, self.store = settings, store
        self.clock, self.wall = clock, wall
        self.work = WorkRate(self.clock)   # events handed out: whether the loop's pauses pay
        self.loop = EventLoop(settings.loop_coalesce_ms / 1000, self.work)
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.owner = f"{self.host}:{self.pid}:{secrets.token_hex(4)}"
        # no secret in any child's environment: the rate limiter inherits the token's descriptor
        # (ApiLink), and handlers call the API through us, never directly
        env = {**without_secrets(os.environ if environ is None else environ), **settings.to_environ()}
        self.router = Router(store, settings, self.owner)
        self.pacer = StorePacer(store, self.router, settings, clock=clock, wall=wall)
        self.apilink = ApiLink(settings, env, self.loop, clock=clock, pipes=pipes)
        self.suspects = Suspects()
        self.settlement = Settlement(self.router, self.suspects, self.pacer, wall)
        self.policy = RestartPolicy(settings, "handlers", log, clock)
        self.handler_argv = handler_command(settings)
        identity = identity_of(settings.handler_user)   # None: our own user

        def new_handler(name: str, wanted: bool) -> HandlerProcess:
            return HandlerProcess(name, self.handler_argv, env, self.loop, settings, self, self.policy, log,
                                  identity=identity, clock=clock, wanted=wanted, pipes=pipes)
        auto = settings.handlers == "auto"
        autoscaler = Autoscaler(settings.handlers_min, settings.handlers_max, settings.autoscale_backlog_s,
                                settings.autoscale_idle_s) if auto else None
        self.pool = Pool(new_handler, self.router.release, settings.handlers_min if auto else settings.handlers,
                         autoscaler)
        self.controls = Controls(store, ROLLING_RESTART_CONTROL)
        self.purger = Purger(store, settings.retention_s)
        self.publisher = StatusPublisher(store, status_name("dispatcher", self.host, self.pid), self.status,
                                         self._store_gone, log, clock=clock)
        self.state = RUNNING
        self.started_at = wall()
        self.exit_status = 0   # 1 after the store's file was removed or replaced (_store_gone)
        self._drain_until = 0.0
        self._timers_due_at = 0.0    # the earliest timer when the loop last slept (_timeout)

    # --- the loop -----------------------------------------------------------------------------------
    def run(self) -> int:
        signals = SignalQueue(self.loop)
        try:
            signals.open()
            self.open()
            while self.state is not STOPPED:
                self.loop.run_once(self._timeout(), pause=not self.router.runs)   # runs: events wait on us
                signals.dispatch(self, log)
                self.turn()
            self.router.flush()    # the last acks, whenever the last store turn was
            self.publisher.withdraw()
            log.info("event=dispatcher_stopped pid=%d", self.pid)
            return self.exit_status
        finally:
            signals.close()
            self.close()

    def open(self) -> None:
        self.pacer.open(self.loop)
        self.controls.open()
        log.info("event=dispatcher_started pid=%d owner=%s handlers=%d handler_command=%s", self.pid, self.owner,
                 self.pool.target, self.handler_argv[0])
        reclaim_from_dead_predecessors(self.store, self.host, self.pid)
        self.apilink.start()
        self.purger.start()

    def close(self) -> None:
        self.purger.stop()
        self.pacer.close()
        self.loop.close()

    def turn(self) -> None:
        """What follows a wake-up: due timers, the pool converged, answered runs handed on, and the
        store turn when it is due."""
        now = self.clock()
        if now >= self._timers_due_at:   # most turns (a frame in, a frame out) have no timer due
            self._check_timers(now)
        if self.state is RUNNING:
            self.pool.converge()
            if self.router.ready:
                ready = self.pool.ready()
                self._deliver(self.router.take_ready(sum(h.free_slots for h in ready)), ready)
        elif self.pool.stopped:
            if self.apilink.child.running:
                self.apilink.child.stop(fast=self.state is STOPPING)
            else:
                self.state = STOPPED
        if self.pacer.turn_due(now, bool(self.suspects.held), self.pool.room):
            self.pacer.turn_started(now)
            self._dispatch()       # writes the turn's acks with its claim
            self.router.flush()    # acks left over when nothing could be claimed

    def _timeout(self) -> float:
        times = [self.publisher.next_at, self.pacer.next_timer(bool(self.suspects.held))]
        if self.state is DRAINING:
            times.append(self._drain_until)
        for child in (*self.pool.processes(), self.apilink.child):
            due = child.next_timer()
            if due is not None:
                times.append(due)
        self._timers_due_at = min(times)
        return max(0.0, self._timers_due_at - self.clock())

    def _check_timers(self, now: float) -> None:
        for child in (*self.pool.processes(), self.apilink.child):
            child.check_timers(now)
        self.pacer.check_timers(now, lambda: [d.event_id for d in self.suspects.held] + self.pool.leased_ids())
        if self.publisher.due(now):
            self.policy.refresh()
            self.apilink.child.policy.refresh()
            self._apply_control()
            self._autoscale(now)
            self.publisher.publish()
        if self.state is DRAINING and now >= self._drain_until:
            self._release_and_stop(f"drain_grace_s={self.settings.drain_grace_s:g} passed")

    # --- routing ------------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        if self.state is not RUNNING:
            return
        ready = self.pool.ready()
        if self.suspects.held:
            self.suspects.place(ready)
        docs = self.router.claim(sum(h.free_slots for h in ready))
        self._deliver(self.suspects.hold(docs), ready)

    def _deliver(self, docs: list[dict], ready: list[HandlerProcess]) -> None:
        if docs:
            self.work.add(len(docs))
            for doc, exc in self.pool.deliver(docs, ready, self.router):   # a dead letter; the rest flow on
                self.router.nack(doc["o"]["_id"], doc["o"]["key"], f"event {exc}", False)

    # --- HandlerOwner: what the handler slots report ---------------------------------------------------
    def handler_ready(self, handler: HandlerProcess) -> None:
        self.pool.adopt(handler)

    def handler_read(self, handler: HandlerProcess) -> None:
        """It took bytes from its stdin: calls held back for its unread bytes may go."""
        self.apilink.release(handler)

    def event_answered(self, handler: HandlerProcess, delivery: Delivery, error, after: list[Delivery]) -> None:
        self.settlement.answered(delivery, error, after)
        if error is None and self.settings.mark_as_read:
            token = mark_as_read_token(delivery.doc)
            if token is not None:
                self.apilink.mark_as_read([token])

    def events_lost(self, handler: HandlerProcess, reason: str, blamed: set[int] | None) -> None:
        """A handler failed holding events: charged or given back by the suspects rule."""
        self.apilink.forget(handler)   # its calls' answers are owed to nobody now
        self.settlement.lost(handler, reason, blamed)

    def api_call(self, handler: HandlerProcess, request: rpc.Request) -> None:
        if request.method not in API_METHODS:
            handler.respond(request.msgid, rpc.api_error(f"unknown method {request.method}"), None)
            return
        trace = self._trace(handler) if self.settings.api_trace else None
        try:
            params, delivery = call_params(request, handler.delivery_for, self.settings.max_calls_per_event, trace)
        except CallRefused as refused:
            handler.respond(request.msgid, rpc.api_error(str(refused)), None)
            return
        self.apilink.call(handler, request.msgid, params, delivery)

    def _trace(self, handler: HandlerProcess) -> Callable[[Delivery], dict]:
        """For the sandbox's inspector (api_trace): who had the event, since when (epoch ms)."""
        return lambda delivery: {"handler": handler.name, "handed_at": round(
            (self.wall() - (self.clock() - delivery.started)) * 1000)}

    # --- signals: one method each (protocol/children/loop.py hands them over) ---------------------------
    def handle_chld(self) -> None:
        """Any state: settle what exited (handlers restart with backoff while wanted)."""
        for handler in self.pool.reap():
            self.apilink.forget(handler)
        self.apilink.child.reap()

    def handle_ttin(self) -> None:
        """RUNNING: one handler more."""
        if self.state is RUNNING:
            self.pool.set_target(self.pool.target + 1, "TTIN")

    def handle_ttou(self) -> None:
        """RUNNING: one handler less; the removed one drains first."""
        if self.state is RUNNING:
            self.pool.set_target(max(0, self.pool.target - 1), "TTOU")

    def handle_hup(self) -> None:
        """RUNNING: a rolling restart."""
        if self.state is RUNNING:
            self.pool.rolling_restart("HUP")

    def handle_term(self) -> None:
        """RUNNING: drain. Later: nothing more (a drain is under way)."""
        if self.state is RUNNING:
            self.drain()

    def handle_int(self) -> None:
        """RUNNING: drain (Ctrl-C); DRAINING: a second one stops at once."""
        if self.state is RUNNING:
            self.drain()
        elif self.state is DRAINING:
            self.quit()

    def handle_quit(self) -> None:
        """Any state until stopped: give every event back and kill every child."""
        if self.state is not STOPPED:
            self.quit()

    def drain(self) -> None:
        """TERM/INT: stop claiming, let in-flight events finish up to drain_grace_s, then stop."""
        self.state = DRAINING
        self._drain_until = self.clock() + self.settings.drain_grace_s
        in_flight = sum(len(h.in_flight) for h in self.pool.processes())
        log.info("event=drain_started in_flight=%d grace_s=%g", in_flight, self.settings.drain_grace_s)
        self._release_waiting()
        self.router.release_runs()
        self.pool.drain()

    def quit(self) -> None:
        """QUIT (or a second INT): give every leased event back to the store, kill every child."""
        log.info("event=fast_stop in_flight=%d", sum(len(h.in_flight) for h in self.pool.processes()))
        self.state = STOPPING
        self._release_and_stop("fast stop", kill=True)
        self.apilink.child.stop(fast=True)

    def _release_waiting(self) -> None:
        """Give back the suspects not sent to any handler yet (held or reserved), untouched."""
        self.router.release(self.suspects.take_held() + self.pool.take_reserved())

    def _release_and_stop(self, reason: str, kill: bool = False) -> None:
        self._release_waiting()
        self.router.release_runs()
        self.pool.stop(reason, kill)

    # --- status and control ---------------------------------------------------------------------------
    def _apply_control(self) -> None:
        """`frontdesk scale N` sets the target (and turns autoscaling off); the rolling-restart
        control (`frontdesk top`'s `h`) restarts the handlers (dispatcher/control.py)."""
        change = self.controls.changes()
        if self.state is RUNNING:
            self.pool.apply(change)

    def _autoscale(self, now: float) -> None:
        """handlers = auto, RUNNING: once a second, with the queue's oldest event (dispatcher/autoscale.py)."""
        if self.pool.autoscaler is None or self.state is not RUNNING:
            return
        try:
            oldest = self.store.stats()["oldest_pending_s"]
        except StoreError as exc:
            log.error("event=store_call_failed op=stats error=%r", str(exc))
            return
        self.pool.autoscale(now, oldest)

    def status(self) -> dict:
        handlers = self.pool.status()
        autoscaler = self.pool.autoscaler
        return {
            "pid": self.pid, "host": self.host, "owner": self.owner, "state": self.state.value,
            "started_at": self.started_at, "handlers_target": self.pool.target,
            "in_flight": sum(h["in_flight"] for h in handlers),
            "handled": self.pool.handled,
            "degraded": self.policy.degraded, "store_error": self.router.store_error,
            "handlers": handlers, "ratelimiter": self.apilink.status(),
            "autoscale": autoscaler.status() if autoscaler else None,
            "e2e_counts": list(self.settlement.e2e.counts), "e2e_s": round(self.settlement.e2e.total_s, 3),
        }

    def _store_gone(self, exc: StoreGone) -> None:
        """Every event we would claim or ack is in a file nobody reads: stop, for the supervisor to
        start us on the file now at the path."""
        if self.exit_status == 0:
            log.critical("event=store_file_gone reason=%r action=exit_for_restart", str(exc))
            self.exit_status = 1
            self.quit()


def main(settings) -> int:
    """`frontdesk dispatcher` / `python -m frontdesk.dispatcher`: the arbiter, until stopped."""
    require_token_source(settings)
    return run_with_store(settings.store, log, lambda store: Arbiter(settings, store).run())
