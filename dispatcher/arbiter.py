"""The dispatcher's master loop, in the spirit of gunicorn's arbiter.

One thread, one selector (`loop.EventLoop`) over: every handler's stdout and stderr, the rate
limiter's pipe, the store's change feed and a self-pipe for signals (`signal.set_wakeup_fd`).
Signal handlers do nothing; the byte they leave in the pipe is handled by the loop. Each turn
the loop converges the world to the desired state: handler processes to the target count, due
restarts, a rolling restart's next step, claims from the store up to the free capacity, acks
written back in one batch. Timers (deadlines, backoffs, the store's next due event, the slow
re-scan, status, lease extension) only bound how long the selector may sleep, so an idle
dispatcher sleeps about a second at a time. Retention runs on a thread of its own
(dispatcher/housekeeping.py).
"""
from __future__ import annotations

import bisect
import logging
import math
import os
import secrets
import signal
import socket
import time
from collections import deque
from dataclasses import dataclass

from frontdesk.protocol import rpc
from frontdesk.protocol.config import handler_command
from frontdesk.protocol.credentials import without_secrets
from frontdesk.protocol.frames import EncodeError
from frontdesk.protocol.line_endpoints import API_METHODS
from frontdesk.protocol.roles import status_name, status_role
from frontdesk.store import StoreError, StoreGone, run_with_store

from .apilink import ApiLink
from .autoscale import Autoscaler
from .housekeeping import Purger
from .lifeline import identity_of
from .loop import EventLoop, SignalQueue
from .router import Router
from .supervise import RestartPolicy
from .workers import CLOSING, EXITED, HANDLING_BUCKETS_S, READY, Delivery, HandlerProcess, describe_exit

log = logging.getLogger("frontdesk.dispatcher")

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTTIN,
                   signal.SIGTTOU, signal.SIGCHLD)
STATUS_INTERVAL_S = 1.0
# `frontdesk top`'s `h` writes a fresh value here: every running dispatcher restarts its handlers.
ROLLING_RESTART_CONTROL = "handlers_rolling_restart"
RUNNING, DRAINING, STOPPING, STOPPED = "running", "draining", "stopping", "stopped"


@dataclass
class Slot:
    """A place for one handler process; it outlives the processes that fill it."""
    name: str
    process: HandlerProcess | None = None
    replacement: HandlerProcess | None = None   # the new process of a rolling restart
    restart_at: float = 0.0
    restarts: int = 0


class Arbiter:
    def __init__(self, settings, store, environ: dict | None = None):
        self.settings = settings
        self.store = store
        self.loop = EventLoop(settings.loop_coalesce_ms / 1000)
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.owner = f"{self.host}:{self.pid}:{secrets.token_hex(4)}"
        self.status_name = status_name("dispatcher", self.host, self.pid)
        # no secret in any child's environment: the rate limiter inherits the token's descriptor
        # (ApiLink), and handlers call the API through us, never directly
        self.env = {**without_secrets(os.environ if environ is None else environ), **settings.to_environ()}
        self.handler_argv = handler_command(settings)
        self.handler_identity = identity_of(settings.handler_user)   # None: our own user
        self.exit_status = 0   # 1 after the store's file was removed or replaced (_publish_status)
        self.router = Router(store, settings, self.owner)
        self.apilink = ApiLink(settings, self.env, self.loop)
        self.policy = RestartPolicy(settings, "handlers", log)
        self.purger = Purger(store, settings.retention_s)
        self.slots: list[Slot] = []
        self.retiring: list[HandlerProcess] = []
        self.autoscaler = Autoscaler(settings.handlers_min, settings.handlers_max, settings.autoscale_backlog_s,
                                     settings.autoscale_idle_s) if settings.handlers == "auto" else None
        self.target = settings.handlers_min if self.autoscaler else settings.handlers
        self._busy_before: dict[int, float] = {}   # pid -> busy seconds at the last autoscale turn
        self._busy_at = time.monotonic()
        self.state = RUNNING
        self.started_at = time.time()
        self.handled_by_gone = 0   # events answered by processes that have exited
        self.suspects: set[str] = set()   # ids in flight beside a crash, to be retried alone
        self.held: deque[Delivery] = deque()   # claimed suspects waiting for a handler to run alone on
        self.e2e_counts = [0] * (len(HANDLING_BUCKETS_S) + 1)   # webhook received -> ack, acked events
        self.e2e_s = 0.0
        self._rolling: deque[Slot] = deque()
        self._slot_numbers = 0
        self._drain_until = 0.0
        self._last_control = None
        self._last_restart_control = None
        now = time.monotonic()
        self._status_at = now
        self._rescan_at = now + settings.feed_rescan_s
        self._store_wakeup_at: float | None = None
        self._extend_at = now + settings.lease_s / 3
        self._feed = None
        self._signals: SignalQueue | None = None
        self._store_turn_at = 0.0
        self._timers_due_at = 0.0    # the earliest timer when the loop last slept (_timeout)

    # --- the loop -----------------------------------------------------------------------------
    def run(self) -> int:
        self._signals = SignalQueue(self.loop, HANDLED_SIGNALS)
        try:
            self._feed = self.store.change_feed()
            self.loop.add_reader(self._feed.fileno(), self._on_feed)
            self._last_control = self._read_control()
            self._last_restart_control = self._read_control(ROLLING_RESTART_CONTROL)
            log.info("dispatcher_started pid=%d owner=%s handlers=%d handler_command=%s", self.pid,
                     self.owner, self.target, self.handler_argv[0])
            self._reclaim_from_dead_predecessors()
            self.apilink.start()
            self.purger.start()
            while self.state != STOPPED:
                self._turn()
            self.router.flush()    # the last acks, whenever the last store turn was
            self._withdraw_status()
            log.info("dispatcher_stopped pid=%d", self.pid)
            return self.exit_status
        finally:
            self.purger.stop()
            self._signals.close()
            if self._feed is not None:
                self._feed.close()
            self.loop.close()

    def _turn(self) -> None:
        self.loop.run_once(self._timeout(), pause=not self.router.runs)   # runs: events wait on this turn
        for signum in self._signals.pop():
            self._on_signal(signum)
        now = time.monotonic()
        if now >= self._timers_due_at:   # most turns (a frame in, a frame out) have no timer due
            self._check_timers(now)
        self._converge()
        self._hand_on()
        if self._store_turn_due(now):
            self._store_turn_at = now + self.settings.store_turn_ms / 1000
            self._dispatch()       # writes the turn's acks with its claim
            self.router.flush()    # acks left over when nothing could be claimed

    def _store_turn_due(self, now: float) -> bool:
        """Acks and claims go to the store at most every store_turn_ms, unless half the handlers'
        window is free and the store may have events for it: under load each store transaction
        then carries many events, not one or two (at 2,000 events/s: 0.32 -> 0.19 CPU ms per event
        in the dispatcher, e2e p99 lower too, docs/benchmarks.md); when idle, a new event goes at
        once. Acks alone wait for the paced turn (the keys they free are ours: their runs)."""
        if now >= self._store_turn_at:
            return True
        if not (self.router.more or self.held):
            return False
        ready = self._ready_handlers()
        capacity = sum(p.max_in_flight for p in ready)
        return sum(p.free_slots for p in ready) * 2 > capacity

    def _ready_handlers(self) -> list[HandlerProcess]:
        return [slot.process for slot in self.slots if slot.process is not None and slot.process.state == READY]

    def _processes(self):
        for slot in self.slots:
            if slot.process is not None:
                yield slot.process
            if slot.replacement is not None:
                yield slot.replacement
        yield from self.retiring

    def _timeout(self) -> float:
        now = time.monotonic()
        times = [self._status_at, self._rescan_at, self._extend_at]
        if self.router.pending_acks or self.router.more or self.held:
            times.append(self._store_turn_at)
        if self._store_wakeup_at is not None:
            times.append(self._store_wakeup_at)
        if self.state == DRAINING:
            times.append(self._drain_until)
        for process in self._processes():
            times.append(process.next_timer())
        if self.state == RUNNING:
            times.extend(slot.restart_at for slot in self.slots if slot.process is None)
        for child in (self.router, self.apilink):
            times.append(child.next_timer())
        self._timers_due_at = min(t for t in times if t is not None)
        return max(0.0, self._timers_due_at - now)

    def _check_timers(self, now: float) -> None:
        for process in list(self._processes()):
            process.check_timers(now)
        for child in (self.router, self.apilink):
            child.check_timers(now)
        if self._store_wakeup_at is not None and now >= self._store_wakeup_at:
            self._store_wakeup_at = None
            self.router.wake()
        if now >= self._rescan_at:
            self._rescan_at = now + self.settings.feed_rescan_s
            self.router.wake()
            self._schedule_store_wakeup()
        if now >= self._extend_at:
            self._extend_at = now + self.settings.lease_s / 3
            held = [*self.held, *(p.reserved for p in self._processes() if p.reserved is not None)]
            self.router.extend([d.event_id for p in self._processes() for d in p.in_flight.values()]
                               + [d.event_id for d in held])
        if now >= self._status_at:
            self._status_at = now + STATUS_INTERVAL_S
            self.policy.refresh()
            self._apply_control()
            self._autoscale(now)
            self._publish_status()
        if self.state == DRAINING and now >= self._drain_until:
            self._release_and_stop_handlers(f"drain_grace_s={self.settings.drain_grace_s:g} passed")

    def _reclaim_from_dead_predecessors(self) -> None:
        """A dispatcher of this host whose process is gone (kill -9, a crash of the whole tree, a
        reboot) left leases nobody will answer: end them now instead of after lease_s, so that a
        reply interrupted by the crash is retried within seconds, inside its token's life. Every
        dispatcher publishes its lease owner in its status before its first claim."""
        try:
            for name, doc in self.store.get_statuses().items():
                pid, owner = doc.get("pid"), doc.get("owner")
                if (status_role(name) == "dispatcher" and doc.get("host") == self.host and owner
                        and isinstance(pid, int) and pid != self.pid and not _process_alive(pid)):
                    count = self.store.expire_leases(owner)
                    if count:
                        log.warning("predecessor_leases_expired pid=%d owner=%s events=%d", pid, owner, count)
        except StoreError as exc:
            log.error("store_call_failed op=expire_leases error=%s", exc)

    def _schedule_store_wakeup(self) -> None:
        """Wake when the store's next retry backoff or foreign lease runs out."""
        try:
            due = self.store.next_wakeup()
        except StoreError as exc:
            log.error("store_call_failed op=next_wakeup error=%s", exc)
            return
        if due is not None:
            self._store_wakeup_at = time.monotonic() + max(0.0, due - time.time()) + 0.001

    def _on_feed(self) -> None:
        self._feed.drain()
        self.router.wake()

    # --- routing --------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        if self.state != RUNNING:
            return
        ready = self._ready_handlers()
        if self.held:
            self._place_held(ready)
        free = sum(p.free_slots for p in ready)
        docs = self.router.claim(free)
        if self.suspects and docs:
            docs = self._hold_suspects(docs)
        self._deliver(docs, ready)

    def _hand_on(self) -> None:
        """Deliver the followers whose predecessor was answered (Router.ack), every loop turn."""
        if self.state != RUNNING or not self.router.ready:
            return
        ready = self._ready_handlers()
        self._deliver(self.router.take_ready(sum(p.free_slots for p in ready)), ready)

    def _deliver(self, docs: list[dict], ready: list[HandlerProcess]) -> None:
        if not docs:
            return
        # spread evenly: each event to the handler with the most free slots at that moment
        slots = sorted(((p.free_slots, index) for index, p in enumerate(ready)), reverse=True)
        for doc in docs:
            count, index = slots[0]
            try:
                ready[index].deliver(doc)
            except EncodeError as exc:   # no handler can be given it: a dead letter, the rest flow on
                o = doc["o"]
                self.router.nack(o["_id"], o["key"], f"event {exc}", False)
                continue
            slots[0] = (count - 1, index)
            if len(slots) > 1 and slots[1][0] > count - 1:
                slots.sort(reverse=True)

    def _hold_suspects(self, docs: list[dict]) -> list[dict]:
        """Suspects among claimed events wait (leased, their keys held) for a handler of their
        own, placed at the start of the next store turn; the other events go on now."""
        rest = []
        for doc in docs:
            o = doc["o"]
            if o["_id"] in self.suspects:
                self.held.append(Delivery(0, doc, o["_id"], o["key"], math.inf))
            else:
                rest.append(doc)
        return rest

    def _place_held(self, ready: list[HandlerProcess]) -> None:
        """Each held suspect reserves the least busy handler that has none (docs/dispatcher.md,
        "Supervision")."""
        while self.held:
            free = [p for p in ready if p.reserved is None and not p.solo]
            if not free:
                return
            min(free, key=lambda p: len(p.in_flight)).reserve(self.held.popleft().doc)

    def event_answered(self, process: HandlerProcess, delivery, error) -> None:
        if self.suspects:
            self.suspects.discard(delivery.event_id)   # it ran and answered: it did not crash anyone
        if error is None:
            self.router.ack(delivery.event_id, delivery.key)
            e2e_s = time.time() - delivery.doc["o"]["received_at"] / 1000
            self.e2e_s += e2e_s
            self.e2e_counts[bisect.bisect_left(HANDLING_BUCKETS_S, e2e_s)] += 1
            return
        message = error.get("message") if isinstance(error, dict) else None
        retry = error.get("retry", True) if isinstance(error, dict) else True
        self.router.nack(delivery.event_id, delivery.key,
                         f"handler nack: {message if isinstance(message, str) else repr(error)[:200]}",
                         retry is not False)
        self._schedule_store_wakeup()

    def handler_lost_events(self, process: HandlerProcess, reason: str, blamed: set[int] | None = None) -> None:
        """A handler failed holding events. An attempt is charged only to the events the failure
        is tied to: those `blamed` (late for their deadline), or the one event it held alone.
        When it held several and nothing says which one killed it, none is charged: each is given
        back and retried alone (a suspect), so a crash of its own is charged to it next time."""
        self.apilink.forget(process)   # its calls' answers are owed to nobody now
        deliveries = process.take_in_flight()
        process.died_holding += len(deliveries)
        untouched = process.take_reserved()
        if blamed is None and len(deliveries) > 1:
            self.suspects.update(d.event_id for d in deliveries)
            untouched += deliveries
            log.info("events_isolated handler=%s pid=%d count=%d", process.name, process.pid, len(deliveries))
        else:
            for delivery in deliveries:
                if blamed is not None and delivery.msgid not in blamed:
                    untouched.append(delivery)
                elif self.router.nack(delivery.event_id, delivery.key,
                                      f"handler {process.name} pid {process.pid} failed: {reason}", True) == "dead":
                    self.suspects.discard(delivery.event_id)
        self.router.release(untouched)
        self._schedule_store_wakeup()

    def handler_read(self, process: HandlerProcess) -> None:
        """The handler took bytes from its stdin: calls held back for its unread bytes may go."""
        self.apilink.release(process)

    def api_call(self, process: HandlerProcess, request: rpc.Request) -> None:
        params = request.params
        if request.method not in API_METHODS:
            process.respond(request.msgid, rpc.api_error(f"unknown method {request.method}"), None)
            return
        if len(params) != 2 or not isinstance(params[1], dict):
            process.respond(request.msgid, rpc.api_error(
                f"{request.method}: params must be [event id or nil, args map]"), None)
            return
        event_id, call_no, context, delivery = params[0], None, {}, None
        if event_id is not None:
            delivery = process.delivery_for(event_id)
            if delivery is None:
                process.respond(request.msgid, rpc.api_error(
                    f"{request.method}: event {str(event_id)[:130]!r} is not in flight on this handler"), None)
                return
            if delivery.calls >= self.settings.max_calls_per_event:
                process.respond(request.msgid, rpc.api_error(
                    f"{request.method}: event {event_id} already made max_calls_per_event="
                    f"{self.settings.max_calls_per_event} API calls; this one was not made"), None)
                return
            delivery.calls += 1
            call_no = delivery.calls
            o = delivery.doc["o"]
            context = {"received_at": o["received_at"], "source": o["event"].get("source"),
                       "reply_token": o["event"].get("replyToken")}
            if self.settings.api_trace:   # for the sandbox's inspector: who had the event, since when
                context.update(handler=process.name, handed_at=round(
                    (time.time() - (time.monotonic() - delivery.started)) * 1000))
        self.apilink.call(process, request.msgid, [{"event_id": event_id, "call_no": call_no,
                                                    "method": request.method, "context": context},
                                                   params[1]], delivery)

    # --- supervision ------------------------------------------------------------------------------
    def _converge(self) -> None:
        if self.state != RUNNING:
            if self.state in (DRAINING, STOPPING) and self._all_stopped():
                self.state = STOPPED
            elif self.state in (DRAINING, STOPPING) and not any(True for _ in self._processes()):
                self.apilink.stop(fast=self.state == STOPPING)
            return
        now = time.monotonic()
        while len(self.slots) < self.target:
            self._slot_numbers += 1
            self.slots.append(Slot(f"handler-{self._slot_numbers}", restart_at=now))
        while len(self.slots) > self.target:
            slot = self.slots.pop()
            for process in (slot.replacement, slot.process):
                if process is not None:
                    self._retire(process)
            log.info("handler_slot_removed name=%s", slot.name)
        for slot in self.slots:
            if slot.process is None and now >= slot.restart_at:
                slot.process = self._start_handler(slot)
        if self._rolling and not any(slot.replacement for slot in self.slots):
            slot = self._rolling.popleft()
            if slot in self.slots and slot.process is not None and slot.process.state == READY:
                slot.replacement = self._start_handler(slot)

    def _start_handler(self, slot: Slot) -> HandlerProcess | None:
        try:
            process = HandlerProcess(slot.name, self.handler_argv, self.env, self.loop, self.settings, self)
            self.policy.started(slot.name)
            return process
        except OSError as exc:
            reason = f"cannot start {self.handler_argv[0]!r}: {exc.strerror or exc}"
            slot.restarts += 1
            slot.restart_at = time.monotonic() + self.policy.crashed(reason, slot.name)
            log.error("handler_start_failed name=%s reason=%s", slot.name, reason)
            return None

    def _retire(self, process: HandlerProcess) -> None:
        self.router.release(process.take_reserved())   # a retiring process takes no event any more
        self.retiring.append(process)
        process.drain()

    def handler_ready(self, process: HandlerProcess) -> None:
        for slot in self.slots:
            if slot.replacement is process:
                old, slot.process, slot.replacement = slot.process, process, None
                if old is not None:
                    self._retire(old)
                log.info("handler_replaced name=%s old_pid=%s new_pid=%d", slot.name,
                         old.pid if old else None, process.pid)

    def _reap(self) -> None:
        for process in list(self._processes()):
            if process.reap() is not None:
                self._handler_exited(process)
        self.apilink.reap()

    def _handler_exited(self, process: HandlerProcess) -> None:
        clean = process.state == CLOSING and process.returncode == 0 and process.failure is None
        reason = process.failure or describe_exit(process.returncode)
        if process.in_flight or process.reserved:   # it exited before we read its EOF: retried
            self.handler_lost_events(process, reason)
        self.apilink.forget(process)
        process.exited()
        self.handled_by_gone += process.handled
        slot = next((s for s in self.slots if process in (s.process, s.replacement)), None)
        delay = None
        if not clean and self.state == RUNNING:
            # a death tied to events is charged to them (dead letters after max_attempts), not to
            # the pool: it restarts at once and does not count towards degraded
            delay = self.policy.crashed(f"{process.name}: {reason}", process.name,
                                        served=process.handled > 0 or process.died_holding > 0)
        if slot is not None and slot.process is process:
            slot.process = None
            if delay is not None:
                slot.restarts += 1
            slot.restart_at = time.monotonic() + (delay or 0.0)
        elif slot is not None:
            slot.replacement = None
            if self._rolling:
                log.error("rolling_restart_aborted name=%s reason=%s remaining=%d", slot.name, reason,
                          len(self._rolling))
                self._rolling.clear()
        else:
            self.retiring.remove(process)
        level = logging.INFO if clean else logging.WARNING
        log.log(level, "handler_exited name=%s pid=%d how=%s clean=%s restart_in_s=%s", process.name,
                process.pid, describe_exit(process.returncode), clean,
                f"{delay:.2f}" if delay is not None and slot is not None else "-")

    # --- signals ---------------------------------------------------------------------------------
    def _on_signal(self, signum: int) -> None:
        if signum == signal.SIGCHLD:
            self._reap()
            return
        name = signal.Signals(signum).name
        log.info("signal_received signal=%s state=%s", name, self.state)
        if signum == signal.SIGTTIN and self.state == RUNNING:
            self.set_target(self.target + 1, "TTIN")
        elif signum == signal.SIGTTOU and self.state == RUNNING:
            self.set_target(max(0, self.target - 1), "TTOU")
        elif signum == signal.SIGHUP and self.state == RUNNING:
            self.rolling_restart("HUP")
        elif signum in (signal.SIGTERM, signal.SIGINT) and self.state == RUNNING:
            self.drain()
        elif signum == signal.SIGQUIT or (signum == signal.SIGINT and self.state == DRAINING):
            self.quit()

    def rolling_restart(self, why: str) -> None:
        """Replace every handler, one at a time, each new one ready before its old one drains."""
        self._rolling = deque(self.slots)
        log.info("rolling_restart_started handlers=%d by=%s", len(self._rolling), why)

    def set_target(self, count: int, why: str) -> None:
        log.info("handlers_target_changed from=%d to=%d by=%s", self.target, count, why)
        self.target = count

    def drain(self) -> None:
        """TERM/INT: stop claiming, let in-flight events finish up to drain_grace_s, then stop."""
        self.state = DRAINING
        self._drain_until = time.monotonic() + self.settings.drain_grace_s
        self._rolling.clear()
        in_flight = sum(len(p.in_flight) for p in self._processes())
        log.info("drain_started in_flight=%d grace_s=%g", in_flight, self.settings.drain_grace_s)
        self._release_waiting()
        self.router.release_runs()
        for process in list(self._processes()):
            process.drain()

    def quit(self) -> None:
        """QUIT (or a second INT): give every leased event back to the store, kill every child."""
        log.info("fast_stop in_flight=%d", sum(len(p.in_flight) for p in self._processes()))
        self.state = STOPPING
        self._release_and_stop_handlers("fast stop", kill=True)
        self.apilink.stop(fast=True)

    def _release_waiting(self) -> None:
        """Give back the suspects not sent to any handler yet (held or reserved), untouched."""
        waiting, self.held = list(self.held), deque()
        for process in self._processes():
            waiting += process.take_reserved()
        self.router.release(waiting)

    def _release_and_stop_handlers(self, reason: str, kill: bool = False) -> None:
        self._release_waiting()
        self.router.release_runs()
        for process in list(self._processes()):
            self.router.release(process.take_in_flight())
            if process.state != EXITED:
                log.info("handler_stopping name=%s pid=%d reason=%s", process.name, process.pid, reason)
                process.terminate()
                if kill:
                    process.signal(signal.SIGKILL)

    def _all_stopped(self) -> bool:
        return not any(True for _ in self._processes()) and self.apilink.stopped

    # --- status and control -------------------------------------------------------------------------
    def _read_control(self, name: str = "handlers"):
        try:
            return self.store.get_control(name)
        except StoreError as exc:
            log.error("store_call_failed op=get_control error=%s", exc)
            return self._last_control if name == "handlers" else self._last_restart_control

    def _apply_control(self) -> None:
        """`frontdesk scale N` writes a control value; a change of it sets our target. A change of
        the rolling-restart control (`frontdesk top`'s `h`) restarts the handlers."""
        restart = self._read_control(ROLLING_RESTART_CONTROL)
        if restart != self._last_restart_control:
            self._last_restart_control = restart
            if self.state == RUNNING:
                self.rolling_restart("control")
        value = self._read_control()
        if value == self._last_control:
            return
        self._last_control = value
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0 and self.state == RUNNING:
            if self.autoscaler is not None:
                log.info("autoscale_off by=frontdesk scale handlers=%d", value)
                self.autoscaler = None
            self.set_target(value, "frontdesk scale")
        else:
            log.warning("control_ignored name=handlers value=%r reason=not a count >= 0", value)

    def _autoscale(self, now: float) -> None:
        """handlers = auto: once a second, measure (busy share, the queue's oldest event) and
        let the Autoscaler set the target (dispatcher/autoscale.py)."""
        if self.autoscaler is None or self.state != RUNNING:
            return
        ready = self._ready_handlers()
        totals = {p.pid: p.busy_total(now) for p in ready}
        elapsed, self._busy_at = now - self._busy_at, now
        busy = sum(total - self._busy_before.get(pid, 0.0) for pid, total in totals.items())
        self._busy_before = totals
        share = min(1.0, busy / (len(totals) * elapsed)) if totals and elapsed > 0 else 0.0
        try:
            oldest = self.store.stats()["oldest_pending_s"]
        except StoreError as exc:
            log.error("store_call_failed op=stats error=%s", exc)
            return
        target = self.autoscaler.decide(now, self.target, len(ready), share, oldest)
        if target != self.target:
            self.set_target(target, "autoscale")

    def status(self) -> dict:
        handlers = []
        for slot in self.slots:
            for process in (slot.process, slot.replacement):
                if process is not None:
                    handlers.append({**process.status(), "restarts": slot.restarts})
            if slot.process is None:
                waiting = "waiting_restart" if self.state == RUNNING else "stopped"
                handlers.append({"name": slot.name, "pid": None, "state": waiting,
                                 "in_flight": 0, "handled": 0, "restarts": slot.restarts})
        handlers.extend({**p.status(), "restarts": 0} for p in self.retiring)
        return {
            "pid": self.pid, "host": self.host, "owner": self.owner, "state": self.state,
            "started_at": self.started_at, "handlers_target": self.target,
            "in_flight": sum(h["in_flight"] for h in handlers),
            "handled": self.handled_by_gone + sum(p.handled for p in self._processes()),
            "degraded": self.policy.degraded, "store_error": self.router.store_error,
            "handlers": handlers, "ratelimiter": self.apilink.status(),
            "autoscale": self.autoscaler.status() if self.autoscaler else None,
            "e2e_counts": list(self.e2e_counts), "e2e_s": round(self.e2e_s, 3),
        }

    def _withdraw_status(self) -> None:
        """A clean stop leaves nothing to show: `frontdesk status` lists running processes."""
        try:
            self.store.delete_status(self.status_name)
        except StoreError as exc:
            log.error("store_call_failed op=delete_status error=%s", exc)

    def _publish_status(self) -> None:
        try:
            self.store.put_status(self.status_name, self.status())
        except StoreGone as exc:
            if self.exit_status == 0:   # every event we would claim or ack is in a file nobody reads:
                log.critical("event=store_file_gone reason=%s action=exit_for_restart", exc)
                self.exit_status = 1    # stop, for the supervisor to start us on the file at the path
                self.quit()
        except StoreError as exc:
            log.error("store_call_failed op=put_status error=%s", exc)


def _process_alive(pid: int) -> bool:
    """Whether a process of this pid exists (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        return False
    except OSError:   # no /proc: ask the kernel (a zombie then counts as alive)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True


def main(settings) -> int:
    """`frontdesk dispatcher` / `python -m frontdesk.dispatcher`: the arbiter, until stopped."""
    settings.require_secrets("channel_access_token")
    return run_with_store(settings.store, log, lambda store: Arbiter(settings, store).run())
