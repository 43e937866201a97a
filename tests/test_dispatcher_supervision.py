"""Supervision with real processes: handlers that crash or write garbage, TERM and QUIT as signals,
kill -9 of the dispatcher itself, `frontdesk run`'s children. Every decision behind them (each way a
handler fails, the handshake, crash loops, TTIN/TTOU/HUP, the drain grace) is tested case by case
in-process: tests/unit/test_arbiter.py, test_handler_process.py, test_lifecycle.py, test_supervisor.py."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from frontdesk.ratelimiter.calls import fingerprint
from frontdesk.sandbox.webhooks import mint_reply_token, user_id
from frontdesk.store.base import JournalEntry
from tests.dispatcher_harness import alive, ready_pids
from tests.helpers import free_port, wait_until
from tests.sandbox_harness import SECRET, TOKEN, running_sandbox


@pytest.mark.parametrize("misbehaviour,reason", [
    ("crash", "exited with status 1"),
    ("garbage", "protocol violation: stdout is not frontdesk frames"),
])
def test_misbehaving_handler_is_replaced_and_its_events_retried(harness, misbehaviour, reason):
    """Real handler processes that crash or write garbage (a hang, and every other way to fail, case by
    case in-process: tests/unit/test_handler_process.py)."""
    appended = harness.append({"Ua": ["hi", misbehaviour, "hi"], "Ub": ["hi"] * 4, "Uc": ["hi", "hi"]})
    # one event at a time per handler: the failure is the bad event's own, charged at once
    # (beside other events it is first retried alone: test_dispatcher_crashes.py)
    dispatcher = harness.start(handlers=2, env={"FD_TEST_WINDOW": "1"})
    harness.wait_done(len(appended))
    harness.check_history(appended, exactly_once=misbehaviour != "garbage")
    bad = appended[3]                                    # "Ua"'s second event
    attempts = [r[4] for r in harness.records() if r[0] == "start" and r[1] == bad]
    assert attempts == [1, 2]
    doc = harness.wait_status(dispatcher, lambda d: sum(h["restarts"] for h in d["handlers"]) == 1
                              and len(ready_pids(d)) == 2, message="one restart, two ready")
    assert doc["degraded"] is None
    assert reason in harness.log_text()


def test_term_drains_in_flight_work_and_leaves_the_rest_in_the_store(harness):
    dispatcher = harness.start(handlers=1, env={"FD_TEST_WINDOW": "2"})
    harness.wait_status(dispatcher, lambda d: len(ready_pids(d)) == 1, message="ready")
    appended = harness.append({"U1": ["slow"] * 3, "U2": ["slow"] * 3})
    wait_until(lambda: sum(r[0] == "start" for r in harness.records()) >= 2, 10, message="2 in flight")
    dispatcher.send_signal(signal.SIGTERM)
    assert dispatcher.wait(timeout=10) == 0
    ends = {r[1] for r in harness.records() if r[0] == "end"}
    starts = {r[1] for r in harness.records() if r[0] == "start"}
    assert starts == ends                                  # everything started was finished
    stats = harness.store.stats()
    assert stats["done"] == len(ends) and stats["pending"] == len(appended) - len(ends)
    assert stats["in_flight"] == 0


def test_quit_releases_leases_and_kills_children_at_once(harness):
    dispatcher = harness.start(handlers=2, event_deadline_s=30, kill_grace_s=5)
    harness.wait_status(dispatcher, lambda d: len(ready_pids(d)) == 2, message="ready")
    harness.append({"U1": ["hang"], "U2": ["hang"]})
    wait_until(lambda: len(harness.records()) == 2, 10, message="both started")
    pids = {r[3] for r in harness.records()}
    dispatcher.send_signal(signal.SIGQUIT)
    assert dispatcher.wait(timeout=3) == 0
    assert not any(alive(pid) for pid in pids)
    stats = harness.store.stats()
    assert stats["pending"] == 2 and stats["in_flight"] == 0


def test_kill_9_of_the_dispatcher_loses_nothing_and_leaves_no_orphans(harness):
    appended = harness.append(keys=10, per_key=20)
    dispatcher = harness.start(handlers=2, env={"FD_TEST_DELAY_MS": "10"}, lease_s=1)
    wait_until(lambda: sum(r[0] == "end" for r in harness.records()) >= 30, 10, message="under way")
    handler_pids = {r[3] for r in harness.records()}
    dispatcher.kill()
    dispatcher.wait(timeout=5)
    wait_until(lambda: not any(alive(pid) for pid in handler_pids), 5, message="handlers died with it")
    assert harness.store.stats()["done"] < len(appended)
    harness.start(handlers=2, lease_s=1)
    harness.wait_done(len(appended), timeout=20)
    # events that were in flight at the kill were delivered again (at least once), in order
    records = harness.records()
    ends = {}
    for what, event_id, *_ in records:
        if what == "end":
            ends[event_id] = ends.get(event_id, 0) + 1
    assert set(ends) == set(appended)


def test_a_dispatcher_restarted_on_the_same_host_reclaims_a_dead_predecessors_leases_at_once(harness):
    """The whole tree died (nobody saw the dispatcher go): its leases would hold its events for
    lease_s=120; its successor on this host sees the owner's pid is gone and ends them at once."""
    appended = harness.append(keys=4, per_key=3, text="slow")
    first = harness.start(handlers=2, lease_s=120)
    wait_until(lambda: harness.store.stats()["in_flight"] >= 2 and harness.status(first), 10,
               message="events leased")
    handler_pids = {r[3] for r in harness.records()}
    first.kill()
    first.wait(timeout=5)
    wait_until(lambda: not any(alive(pid) for pid in handler_pids), 5, message="handlers died with it")
    assert harness.store.stats()["in_flight"] >= 2
    harness.start(handlers=2, lease_s=120)
    harness.wait_done(len(appended), timeout=30)   # far less than the 120 s lease
    assert {r[1] for r in harness.records() if r[0] == "end"} == set(appended)
    assert f"predecessor_leases_expired pid={first.pid}" in harness.log_text(1)


def test_a_reply_interrupted_by_a_whole_tree_crash_is_sent_within_seconds_inside_its_tokens_life(harness, tmp_path):
    """What a kill -9 of everything leaves: the event leased (lease_s=120) to a dispatcher whose
    pid is gone, its reply journaled "started" by a rate limiter that never saw LINE's answer (it
    never got through). The next dispatcher on this host takes the event at once and the reply
    goes out as a reply — with the token still valid — instead of ~2 minutes later, refused."""
    with running_sandbox(tmp_path) as sandbox:
        ev, to, now = "evcrash1", user_id(9), int(time.time() * 1000)
        token = mint_reply_token(SECRET, to, ev)
        harness.store.append("Udest", [{"type": "message", "timestamp": now, "webhookEventId": ev,
                                        "replyToken": token, "source": {"type": "user", "userId": to},
                                        "message": {"type": "text", "id": "m1", "text": "api"}}], now)
        gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
        dead_pid, host = int(gone.stdout), socket.gethostname()
        owner = f"{host}:{dead_pid}:0dead"
        harness.store.put_status(f"dispatcher:{host}:{dead_pid}", {"pid": dead_pid, "host": host, "owner": owner})
        assert [d["o"]["_id"] for d in harness.store.claim(owner, 10, 120)] == [ev]
        args = {"replyToken": token, "messages": [{"type": "text", "text": "hi"}]}
        harness.store.journal_put(JournalEntry(ev, 1, fingerprint("reply", args), "started",
                                               {"method": "POST", "path": "/v2/bot/message/reply", "body": args,
                                                "retry_key": None, "sent_as": "reply"}))
        harness.start(handlers=1, lease_s=120,
                      env={"FRONTDESK_API_BASE": sandbox.url, "LINE_CHANNEL_ACCESS_TOKEN": TOKEN})
        harness.wait_done(1, timeout=30)                 # far less than the 120 s lease
        assert [(d["endpoint"], d["to"]) for d in sandbox.deliveries()] == [("reply", [to])]
        assert f"predecessor_leases_expired pid={dead_pid}" in harness.log_text()


def _run_services(harness, process, previous_dispatcher: int | None = None) -> dict[str, int]:
    """Pids of `frontdesk run`'s receiver and dispatcher, once its dispatcher has 2 ready handlers."""
    def up(doc):
        pids = {name: (doc["services"].get(name) or {}).get("pid") for name in ("receiver", "dispatcher")}
        return all(pids.values()) and pids["dispatcher"] != previous_dispatcher
    doc = harness.wait_status(process, up, message="frontdesk run: receiver and dispatcher up")
    services = {name: doc["services"][name]["pid"] for name in ("receiver", "dispatcher")}
    harness.wait_status(SimpleNamespace(pid=services["dispatcher"]), lambda d: len(ready_pids(d)) == 2,
                        message="frontdesk run: 2 handlers ready")
    return services


def _run_children(harness, process) -> set[int]:
    services = _run_services(harness, process)
    dispatcher = harness.status(SimpleNamespace(pid=services["dispatcher"]))
    return ready_pids(dispatcher) | set(services.values())


def _start_run(harness, **settings):
    return harness.start(handlers=2, command="run", args=["--listen", f"127.0.0.1:{free_port()}",
                                                          "--admin-listen", f"127.0.0.1:{free_port()}"],
                         env={"LINE_CHANNEL_SECRET": "test-secret", **settings.pop("env", {})}, **settings)


@pytest.mark.parametrize("how", ["kill -9", "Ctrl-C"])
def test_frontdesk_run_leaves_no_orphans(harness, how):
    process = _start_run(harness)
    children = _run_children(harness, process)
    if how == "kill -9":
        process.kill()
        process.wait(timeout=5)
    else:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    wait_until(lambda: not any(alive(pid) for pid in children), 10, message="every child exited")


def test_frontdesk_run_restarts_a_killed_dispatcher_whose_events_go_out_without_waiting_the_lease(harness):
    process = _start_run(harness, lease_s=120, env={"FD_TEST_DELAY_MS": "300"})
    first = _run_services(harness, process)["dispatcher"]
    appended = harness.append(keys=4, per_key=3)
    wait_until(lambda: harness.store.stats()["in_flight"] > 0, 10, message="events leased")
    os.kill(first, signal.SIGKILL)
    second = _run_services(harness, process, previous_dispatcher=first)["dispatcher"]
    assert second != first
    harness.wait_done(len(appended), timeout=30)   # far less than the 120 s lease
    assert {r[1] for r in harness.records() if r[0] == "end"} == set(appended)
    assert "dispatcher_leases_expired" in harness.log_text()


def test_handlers_get_the_users_environment_through_frontdesk_run_but_no_credentials(harness, tmp_path):
    seen = tmp_path / "handler-env.txt"
    process = _start_run(harness, env={"FD_TEST_ENV_FILE": str(seen), "MY_BOT_SETTING": "x",
                                       "LINE_CHANNEL_ACCESS_TOKEN": "test-token"})
    _run_services(harness, process)
    names = set(seen.read_text().split())
    assert {"MY_BOT_SETTING", "PATH", "FRONTDESK_HANDLERS"} <= names
    assert not names & {"LINE_CHANNEL_SECRET", "LINE_CHANNEL_ACCESS_TOKEN"}
