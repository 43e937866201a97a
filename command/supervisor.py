"""`frontdesk run`'s top process: the `Supervisor` starts the sandbox, the dispatcher and the
receiver as children, restarts whichever dies, and takes them all down with it.

A `Service` is a child that speaks no frames: it dies with us (`lifeline.spawn`), its output goes
to our stderr, it stops on SIGTERM. It is restarted with backoff whenever it exits while we still
want it, and inherits the same secret descriptors each time (protocol/credentials.py).
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import time

from frontdesk.dispatcher.lifeline import spawn
from frontdesk.dispatcher.loop import EventLoop, SignalQueue
from frontdesk.dispatcher.supervise import RestartPolicy
from frontdesk.dispatcher.workers import describe_exit
from frontdesk.protocol.credentials import NO_SECRETS, ChildSecrets
from frontdesk.protocol.process import status_name
from frontdesk.store import StoreError, StoreGone, open_store

log = logging.getLogger("frontdesk.run")


class Service:
    """One supervised child without a frame protocol (sandbox, dispatcher, receiver)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], settings, address: str = "",
                 stop_grace_s: float | None = None, secrets: ChildSecrets = NO_SECRETS):
        self.name = name
        self.argv = argv
        self.env = {**env, **secrets.environ}
        self.pass_fds = secrets.pass_fds   # the secrets it needs: the same descriptors at every start
        self.settings = settings
        self.address = address
        # TERM -> KILL; the dispatcher's TERM means "drain", which may take drain_grace_s
        self.stop_grace_s = settings.kill_grace_s if stop_grace_s is None else stop_grace_s
        self.policy = RestartPolicy(settings, name, log)
        self.proc = None
        self.wanted = True
        self._timer: float | None = None   # restart (when not running) or KILL (when stopping)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else None

    def start(self) -> None:
        try:
            self.proc = spawn(self.argv, self.env, stdout=None, stderr=None, pass_fds=self.pass_fds)
        except OSError as exc:
            self.proc = None
            self._timer = time.monotonic() + self.policy.crashed(f"cannot start: {exc}", self.name)
            log.error("service_start_failed name=%s error=%s", self.name, exc)
            return
        self.policy.started(self.name)
        self._timer = None
        log.info("service_started name=%s pid=%d", self.name, self.proc.pid)

    def reap(self) -> int | None:
        """The pid of our child if it has just exited, else None."""
        if self.proc is None or self.proc.returncode is not None or self.proc.poll() is None:
            return None
        how = describe_exit(self.proc.returncode)
        self.proc.stdin.close()
        if self.wanted:
            delay = self.policy.crashed(how, self.name)
            self._timer = time.monotonic() + delay
            log.warning("service_exited name=%s pid=%d how=%s restart_in_s=%.2f", self.name,
                        self.proc.pid, how, delay)
        else:
            self._timer = None
            log.info("service_stopped name=%s pid=%d how=%s", self.name, self.proc.pid, how)
        return self.proc.pid

    def next_timer(self) -> float | None:
        return self._timer

    def check_timers(self, now: float) -> None:
        if self._timer is None or now < self._timer:
            return
        if self.wanted and self.pid is None:
            self.start()
        elif not self.wanted and self.pid is not None:
            log.warning("service_killed name=%s pid=%d signal=KILL", self.name, self.proc.pid)
            self.proc.kill()
            self._timer = None

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """`signum` now, SIGKILL after stop_grace_s."""
        if not self.wanted:
            return
        self.wanted = False
        if self.pid is not None:
            self.proc.send_signal(signum)
            self._timer = time.monotonic() + self.stop_grace_s
        else:
            self._timer = None

    def forward(self, signum: int) -> None:
        if self.pid is not None:
            self.proc.send_signal(signum)

    @property
    def stopped(self) -> bool:
        return self.pid is None

    def status(self) -> dict:
        return {"pid": self.pid, "address": self.address, "restarts": self.policy.crashes,
                "degraded": self.policy.degraded}


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

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTTIN,
               signal.SIGTTOU, signal.SIGCHLD)
    FORWARDED = {signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU}
    STATUS_INTERVAL_S = 1.0

    def __init__(self, settings, store, services: list[Service]):
        self.settings = settings
        self.store = store
        self.services = services
        self._dispatcher = next(s for s in services if s.name == "dispatcher")
        self.pid = os.getpid()
        self.host = socket.gethostname()
        self.status_name = status_name("run", self.host, self.pid)
        self.started_at = time.time()
        self.state = "running"
        self.loop = EventLoop()
        self._status_at = 0.0
        self._store_gone = False   # the store's file was removed or replaced: reopen at the path

    def run(self, on_started=None) -> int:
        signals = SignalQueue(self.loop, self.SIGNALS)
        try:
            for service in self.services:
                service.start()
            if on_started is not None:
                on_started()
            while not (self.state != "running" and all(s.stopped for s in self.services)):
                self.loop.run_once(self._timeout())
                for signum in signals.pop():
                    self._on_signal(signum)
                now = time.monotonic()
                for service in self.services:
                    service.check_timers(now)
                    service.policy.refresh()
                if self.state == "stopping":
                    self._stop_next()
                if now >= self._status_at:
                    self._publish_status()
            self.state = "stopped"
            self._withdraw_status()
            return 0
        finally:
            signals.close()
            self.loop.close()

    def _timeout(self) -> float:
        now = time.monotonic()
        due = [self._status_at, *(s.next_timer() for s in self.services)]
        return max(0.0, min(t for t in due if t is not None) - now)

    def _on_signal(self, signum: int) -> None:
        if signum == signal.SIGCHLD:
            for service in self.services:
                if service.reap() is not None and service is self._dispatcher:
                    self._expire_leases_of(service.proc.pid)
            return
        log.info("signal_received signal=%s state=%s", signal.Signals(signum).name, self.state)
        if signum in self.FORWARDED:
            self._dispatcher.forward(signum)
        elif signum == signal.SIGQUIT or (signum == signal.SIGINT and self.state == "stopping"):
            self.state = "quitting"
            for service in self.services:
                if service is not self._dispatcher:
                    service.stop()
                elif service.wanted:
                    service.stop(signal.SIGQUIT)
                else:
                    service.forward(signal.SIGQUIT)   # already draining: cut it short
        elif signum in (signal.SIGTERM, signal.SIGINT) and self.state == "running":
            self.state = "stopping"
            self._stop_next()

    def _stop_next(self) -> None:
        """Stop the last service still wanted, once every service after it has exited."""
        for service in reversed(self.services):
            if service.wanted:
                service.stop()
                return
            if not service.stopped:
                return

    def _expire_leases_of(self, pid: int) -> None:
        """A dead dispatcher's events need not wait out their leases: we know it is gone."""
        try:
            doc = self.store.get_statuses().get(status_name("dispatcher", self.host, pid)) or {}
            if doc.get("owner"):
                count = self.store.expire_leases(doc["owner"])
                log.info("dispatcher_leases_expired pid=%d owner=%s events=%d", pid, doc["owner"], count)
        except StoreError as exc:
            log.error("store_call_failed op=expire_leases error=%s", exc)

    def _withdraw_status(self) -> None:
        """A clean stop leaves nothing to show in `frontdesk status`."""
        try:
            self.store.delete_status(self.status_name)
        except StoreError as exc:
            log.error("store_call_failed op=delete_status error=%s", exc)

    def _publish_status(self) -> None:
        self._status_at = time.monotonic() + self.STATUS_INTERVAL_S
        doc = {"pid": self.pid, "host": self.host, "state": self.state, "started_at": self.started_at,
               "services": {service.name: service.status() for service in self.services}}
        if self._store_gone and not self._reopen_store():
            return
        try:
            self.store.put_status(self.status_name, doc)
        except StoreGone as exc:
            log.critical("event=store_file_gone reason=%s action=reopen", exc)
            # closed first: while any process has the old file open, its -wal and -shm are not
            # the new file's, and the new one cannot be opened (docs/store.md)
            self.store.close()
            self._store_gone = True
            self._reopen_store()
        except StoreError as exc:
            log.error("store_call_failed op=put_status error=%s", exc)

    def _reopen_store(self) -> bool:
        """Open the file now at the store's path (its services exit and are restarted on it), so
        that this process's status and lease expiry go there too; tried at every status write
        until the old file's last process has stopped."""
        try:
            store = open_store(self.settings.store, check_integrity=True)
        except StoreError as exc:
            log.error("store_reopen_failed reason=%s", exc)
            return False
        self.store = store
        self._store_gone = False
        log.info("event=store_reopened")
        return True
