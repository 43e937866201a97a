"""`frontdesk run`'s supervisor (command/supervisor.py) in-process: services with fake processes,
a clock the test moves, a real SQLite store; each signal in each state, the order of a stop, a
dead dispatcher's leases ended at once."""
from __future__ import annotations

import signal
import time

import pytest

from frontdesk.protocol.children.lifecycle import BACKOFF, READY, STOPPED, STOPPING
from frontdesk.protocol.children.loop import HANDLED_SIGNALS, handler_name
from frontdesk.protocol.config import load
from frontdesk.store import open_store
from frontdesk.supervisor import QUITTING, RUNNING, Service, Supervisor
from frontdesk.supervisor import STOPPING as RUN_STOPPING
from tests.unit.clock import Clock
from tests.unit.fake_children import FakeProcess


class FakeService(Service):
    """A service whose processes are fakes."""

    def _spawn(self):
        self.spawned = getattr(self, "spawned", []) + [FakeProcess()]
        return self.spawned[-1]


class Run:
    def __init__(self, tmp_path):
        self.clock = Clock()
        url = f"sqlite:///{tmp_path / 'fd.db'}"
        self.settings = load({"store": url, "kill_grace_s": 2, "restart_backoff_max_s": 1}, environ={})
        self.store = open_store(url)
        self.services = [FakeService(name, ["x"], {}, self.settings, clock=self.clock)
                         for name in ("sandbox", "dispatcher", "receiver")]
        self.sandbox, self.dispatcher, self.receiver = self.services
        self.supervisor = Supervisor(self.settings, self.store, self.services, clock=self.clock)
        for service in self.services:
            service.start()

    def process(self, service) -> FakeProcess:
        return service.spawned[-1]

    def exit(self, service, code: int = 0) -> None:
        self.process(service).exit(code)
        self.supervisor.handle_chld()


@pytest.fixture
def run(tmp_path):
    r = Run(tmp_path)
    yield r
    r.store.close()


def test_every_handled_signal_has_its_method():
    assert all(callable(getattr(Supervisor, handler_name(signum), None)) for signum in HANDLED_SIGNALS)


def test_services_run_as_soon_as_they_are_started(run):
    assert all(s.state is READY for s in run.services)


def test_a_service_that_dies_is_restarted_after_its_backoff(run):
    run.exit(run.receiver, 1)
    assert run.receiver.state is BACKOFF and run.receiver.status()["restarts"] == 1
    run.clock.advance(1)
    run.supervisor.turn()
    assert run.receiver.state is READY and len(run.receiver.spawned) == 2


def test_term_stops_the_services_in_reverse_order_each_after_the_later_ones_exited(run):
    run.supervisor.handle_term()
    assert run.supervisor.state is RUN_STOPPING
    assert [s.state for s in run.services] == [READY, READY, STOPPING]
    assert run.process(run.receiver).signals == [signal.SIGTERM]
    run.supervisor.turn()
    assert run.dispatcher.state is READY                   # the receiver has not exited yet
    run.exit(run.receiver)
    run.supervisor.turn()
    assert run.dispatcher.state is STOPPING and run.sandbox.state is READY
    run.exit(run.dispatcher)
    run.supervisor.turn()
    assert run.sandbox.state is STOPPING
    run.exit(run.sandbox)
    assert all(s.state is STOPPED for s in run.services)


def test_a_service_that_ignores_term_is_killed_after_its_grace(run):
    run.supervisor.handle_term()
    run.clock.advance(2)
    run.supervisor.turn()
    assert run.process(run.receiver).signals == [signal.SIGTERM, signal.SIGKILL]


def test_a_second_int_quits_the_dispatcher_fast_and_stops_the_rest_at_once(run):
    run.supervisor.handle_int()
    run.exit(run.receiver)
    run.supervisor.turn()                                  # the dispatcher is draining now
    run.supervisor.handle_int()
    assert run.supervisor.state is QUITTING
    assert run.process(run.dispatcher).signals == [signal.SIGTERM, signal.SIGQUIT]   # cut its drain short
    assert run.process(run.sandbox).signals == [signal.SIGTERM]


def test_quit_while_running_sends_quit_to_the_dispatcher_and_term_to_the_others(run):
    run.supervisor.handle_quit()
    assert run.process(run.dispatcher).signals == [signal.SIGQUIT]
    assert run.process(run.receiver).signals == [signal.SIGTERM] == run.process(run.sandbox).signals


@pytest.mark.parametrize("handle, signum", [("handle_hup", signal.SIGHUP), ("handle_ttin", signal.SIGTTIN),
                                            ("handle_ttou", signal.SIGTTOU)])
def test_the_pools_signals_go_to_the_dispatcher(run, handle, signum):
    getattr(run.supervisor, handle)()
    assert run.process(run.dispatcher).signals == [signum] and run.supervisor.state is RUNNING
    assert run.process(run.receiver).signals == []


def test_term_once_stopping_does_nothing_more(run):
    run.supervisor.handle_term()
    run.supervisor.handle_term()
    assert run.process(run.receiver).signals == [signal.SIGTERM]


def test_a_dead_dispatchers_leases_end_at_once(run):
    now = int(time.time() * 1000)
    run.store.append("Udest", [{"type": "message", "timestamp": now, "webhookEventId": "e1",
                                "source": {"type": "user", "userId": "U1"}}], now)
    pid = run.dispatcher.pid
    run.store.put_status(f"dispatcher:{run.supervisor.host}:{pid}", {"owner": "its-owner"})
    run.store.claim("its-owner", 1, 120)
    run.exit(run.dispatcher, -9)
    assert [d["o"]["_id"] for d in run.store.claim("next", 1, 60)] == ["e1"]


def test_its_status_names_each_service(run):
    run.supervisor.turn()
    doc = run.store.get_statuses()[run.supervisor.publisher.name]
    assert doc["state"] == "running" and set(doc["services"]) == {"sandbox", "dispatcher", "receiver"}
    assert doc["services"]["receiver"]["pid"] == run.receiver.pid
