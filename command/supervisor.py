"""`frontdesk run`'s top process: the `Supervisor` starts the sandbox, the dispatcher and the
receiver as children, restarts whichever dies, and takes them all down with it.

A `Service` is a supervised child (protocol/children/lifecycle.py) that speaks no frames: it dies
with us (protocol/children/lifeline.py), its output goes to our stderr, it stops on SIGTERM. It
is restarted with backoff whenever it exits while we still want it, and inherits the same secret
descriptors each time (protocol/credentials.py).
"""
from __future__ import annotations

import enum
import logging
import os
import signal
import socket
import time
from typing import Callable

from frontdesk.protocol.children.lifeline import PlainProcess, spawn
from frontdesk.protocol.children.lifecycle import SupervisedChild
from frontdesk.protocol.children.loop import EventLoop, SignalQueue
from frontdesk.protocol.children.policy import RestartPolicy
from frontdesk.protocol.credentials import NO_SECRETS, ChildSecrets
from frontdesk.protocol.process import status_name
from frontdesk.store import StoreError, StoreGone, open_store
from frontdesk.store.status import StatusPublisher

log = logging.getLogger("frontdesk.run")


class Service(SupervisedChild):
    """One supervised child without a frame protocol (sandbox, dispatcher, receiver, status page):
    its own restart group, ready as soon as it runs, stopped with a signal and KILLed after
    stop_grace_s."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], settings, address: str = "",
                 stop_grace_s: float | None = None, secrets: ChildSecrets = NO_SECRETS,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__(name, RestartPolicy(settings, name, log, clock), log, clock=clock)
        self.argv = argv
        self.env = {**env, **secrets.environ}
        self.pass_fds = secrets.pass_fds   # the secrets it needs: the same descriptors at every start
        self.address = address
        # TERM -> KILL; the dispatcher's TERM means "drain", which may take drain_grace_s
        self.stop_grace_s = settings.kill_grace_s if stop_grace_s is None else stop_grace_s

    def _spawn(self) -> PlainProcess:
        return PlainProcess(spawn(self.argv, self.env, stdout=None, stderr=None, pass_fds=self.pass_fds))

    def _started(self) -> None:
        self.ready()

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Not wanted any more: `signum` now, SIGKILL after stop_grace_s."""
        if not self.wanted:
            return
        self.retire()
        self.terminate(self.stop_grace_s, signum, signal=signal.Signals(signum).name)

    def forward(self, signum: int) -> None:
        if self.process is not None:
            self.process.signal(signum)

    def status(self) -> dict:
        return {"pid": self.pid if self.process is not None else None, "address": self.address,
                "restarts": self.restarts, "degraded": self.policy.degraded}


class RunState(enum.Enum):
    """`frontdesk run`'s own state (its status document's `state`)."""
    RUNNING = "running"
    STOPPING = "stopping"    # TERM/INT: services stop in reverse order, each after the later ones
    QUITTING = "quitting"    # QUIT or a second INT: the dispatcher fast-stops, the rest at once
    STOPPED = "stopped"


RUNNING, STOPPING, QUITTING, STOPPED = RunState


class Supervisor:
    """`frontdesk run`'s top process: keeps its services running, stops them in order.

    It does no work of its own, so it has nothing to lose when a child dies: services start in
    the given order and are restarted with backoff whenever they exit. TERM/INT stops them in
    reverse order, each once every later one has exited (the receiver first, so no webhook is
    accepted that nobody will handle now; the sandbox last, so a draining dispatcher can finish
    its API calls). QUIT, or a second INT, passes QUIT to the dispatcher (fast stop) and TERM
    to the rest at once. TTIN, TTOU and HUP are meant for the handler pool: the dispatcher gets
    them. Its status document lists the services; `frontdesk status` shows it.
    """

    def __init__(self, settings, store, services: list[Service], clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self.store = store
        self.services = services
        self.clock = clock
        self._dispatcher = next(s for s in services if s.name == "dispatcher")
        self.pid = os.getpid()
        self.host = socket.gethostname()
        self.started_at = time.time()
        self.state = RUNNING
        self.loop = EventLoop()
        self.publisher = StatusPublisher(store, status_name("run", self.host, self.pid), self.status,
                                         self._store_gone, log, clock=clock)
        self._store_gone_at_path = False   # the store's file was removed or replaced: reopen at the path

    def run(self, on_started=None) -> int:
        signals = SignalQueue(self.loop)
        try:
            signals.open()
            for service in self.services:
                service.start()
            if on_started is not None:
                on_started()
            while not (self.state is not RUNNING and all(s.stopped for s in self.services)):
                self.loop.run_once(self._timeout())
                signals.dispatch(self, log)
                self.turn()
            self.state = STOPPED
            self.publisher.withdraw()
            return 0
        finally:
            signals.close()
            self.loop.close()

    def turn(self) -> None:
        now = self.clock()
        for service in self.services:
            service.check_timers(now)
            service.policy.refresh()
        if self.state is STOPPING:
            self._stop_next()
        if self.publisher.due(now):
            self._publish_status()

    def _timeout(self) -> float:
        due = [self.publisher.next_at, *(s.next_timer() for s in self.services)]
        return max(0.0, min(t for t in due if t is not None) - self.clock())

    # --- signals: one method each (protocol/children/loop.py hands them over) ---------------------------
    def handle_chld(self) -> None:
        """Any state: settle what exited; a dead dispatcher's leases end at once."""
        for service in self.services:
            if service.reap() is not None and service is self._dispatcher:
                self._expire_leases_of(service.pid)

    def handle_term(self) -> None:
        """RUNNING: stop the services in reverse order."""
        if self.state is RUNNING:
            self.state = STOPPING
            self._stop_next()

    def handle_int(self) -> None:
        """RUNNING: as TERM (Ctrl-C); STOPPING: a second one stops everything at once."""
        if self.state is RUNNING:
            self.handle_term()
        elif self.state is STOPPING:
            self.handle_quit()

    def handle_quit(self) -> None:
        """Any state: QUIT to the dispatcher (its fast stop), TERM to the rest at once."""
        self.state = QUITTING
        for service in self.services:
            if service is not self._dispatcher:
                service.stop()
            elif service.wanted:
                service.stop(signal.SIGQUIT)
            else:
                service.forward(signal.SIGQUIT)   # already draining: cut it short

    def handle_hup(self) -> None:
        """Any state: the dispatcher's (a rolling restart of its handlers)."""
        self._dispatcher.forward(signal.SIGHUP)

    def handle_ttin(self) -> None:
        """Any state: the dispatcher's (one handler more)."""
        self._dispatcher.forward(signal.SIGTTIN)

    def handle_ttou(self) -> None:
        """Any state: the dispatcher's (one handler less)."""
        self._dispatcher.forward(signal.SIGTTOU)

    def _stop_next(self) -> None:
        """Stop the last service still wanted, once every service after it has exited."""
        for service in reversed(self.services):
            if service.wanted:
                service.stop()
                return
            if not service.stopped:
                return

    # --- the store ------------------------------------------------------------------------------------
    def _expire_leases_of(self, pid: int) -> None:
        """A dead dispatcher's events need not wait out their leases: we know it is gone."""
        try:
            doc = self.store.get_statuses().get(status_name("dispatcher", self.host, pid)) or {}
            if doc.get("owner"):
                count = self.store.expire_leases(doc["owner"])
                log.info("event=dispatcher_leases_expired pid=%d owner=%s events=%d", pid, doc["owner"], count)
        except StoreError as exc:
            log.error("event=store_call_failed op=expire_leases error=%r", str(exc))

    def status(self) -> dict:
        return {"pid": self.pid, "host": self.host, "state": self.state.value, "started_at": self.started_at,
                "services": {service.name: service.status() for service in self.services}}

    def _publish_status(self) -> None:
        if self._store_gone_at_path and not self._reopen_store():
            self.publisher.skip()
            return
        self.publisher.publish()

    def _store_gone(self, exc: StoreGone) -> None:
        log.critical("event=store_file_gone reason=%r action=reopen", str(exc))
        # closed first: while any process has the old file open, its -wal and -shm are not
        # the new file's, and the new one cannot be opened (docs/store.md)
        self.store.close()
        self._store_gone_at_path = True
        self._reopen_store()

    def _reopen_store(self) -> bool:
        """Open the file now at the store's path (its services exit and are restarted on it), so
        that this process's status and lease expiry go there too; tried at every status write
        until the old file's last process has stopped."""
        try:
            store = open_store(self.settings.store, check_integrity=True)
        except StoreError as exc:
            log.error("event=store_reopen_failed reason=%r", str(exc))
            return False
        self.store = self.publisher.store = store
        self._store_gone_at_path = False
        log.info("event=store_reopened")
        return True
