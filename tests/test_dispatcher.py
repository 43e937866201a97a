"""Dispatcher routing with real processes: per-key order, parallelism, acks, nacks, scale-out."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest

from tests.dispatcher_harness import ready_pids
from tests.helpers import wait_until
from tests.sandbox_harness import TOKEN, running_sandbox


def test_per_key_order_under_load_with_random_delays_and_parallel_keys(harness):
    appended = harness.append(keys=12, per_key=25)
    harness.start(handlers=3, env={"FD_TEST_DELAY_MS": "8"})
    harness.wait_done(len(appended))
    history = harness.check_history(appended)
    assert history["max_parallel"] >= 4, history       # different keys ran at the same time
    assert len(history["pids"]) == 3                     # on every handler process


def test_hot_key_does_not_starve_other_keys(harness):
    hot = harness.append({"Uhot": ["slow"] * 6})
    dispatcher = harness.start(handlers=1)
    wait_until(lambda: any(r[0] == "start" for r in harness.records()), 10, message="hot key started")
    others = harness.append(keys=5, per_key=4)
    # the five other keys finish while the hot key is still working through its slow events
    wait_until(lambda: all(any(r[0] == "end" and r[1] == i for r in harness.records()) for i in others),
               10, message="other keys handled")
    assert sum(1 for r in harness.records() if r[0] == "end" and r[2] == "Uhot") < len(hot)
    harness.wait_done(len(hot) + len(others))
    harness.check_history(hot + others)
    harness.wait_status(dispatcher, lambda d: d["handled"] == len(hot) + len(others) and d["in_flight"] == 0,
                        message="status counts every handled event")


def test_two_dispatchers_on_one_sqlite_file_never_double_deliver(harness):
    first = harness.start(handlers=2, env={"FD_TEST_DELAY_MS": "10"})
    second = harness.start(handlers=2, env={"FD_TEST_DELAY_MS": "10"})
    for dispatcher in (first, second):
        harness.wait_status(dispatcher, lambda d: len(ready_pids(d)) == 2, message="2 ready")
    appended = harness.append(keys=20, per_key=15)
    harness.wait_done(len(appended), timeout=30)
    history = harness.check_history(appended)
    starts = [r[1] for r in harness.records() if r[0] == "start"]
    assert len(starts) == len(set(starts)) == len(appended)   # each delivered once, no retries
    assert len(history["pids"]) == 4                          # both dispatchers' handlers worked
    for dispatcher in (first, second):
        assert harness.status(dispatcher)["state"] == "running"


def drain_bench(tmp_path, *args: str) -> dict:
    """`frontdesk bench --suite drain` with the sandbox as LINE: the rate limiter of each of its
    dispatchers reads the quota and the webhook endpoint at start, and with no LINE to reach it
    retried those reads ~5 s before it stopped (3 stops: 16.5 s of a 2,000-event run, now 3.3)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRONTDESK_", "LINE_"))}
    with running_sandbox(tmp_path) as sandbox:
        env.update({"FRONTDESK_API_BASE": sandbox.url, "FRONTDESK_API_DATA_BASE": sandbox.url,
                    "LINE_CHANNEL_ACCESS_TOKEN": TOKEN})
        done = subprocess.run([sys.executable, "-m", "frontdesk", "bench", "--suite", "drain", "--json", *args],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_drain_suite_empties_a_queue_laid_out_both_ways_and_reports_its_costs(tmp_path):
    report = drain_bench(tmp_path, "--count", "2000", "--users", "50", "--duration", "0.5")
    (run,) = report["runs"]
    assert [(d["order"], d["events"], d["users"]) for d in run["drain"]] == [("round-robin", 2000, 50),
                                                                             ("random", 2000, 50)]
    for drain in run["drain"]:
        assert drain["events_per_s"] > 0 and drain["dispatcher_cpu_us_per_event"] > 0
        assert drain["wal_peak_mb"] >= 0 and drain["database_mb"] >= 0
    assert run["latency"]["events"] == 500 and run["latency"]["p99_ms"] > 0


def test_the_wal_stays_bounded_while_a_random_order_queue_drains(tmp_path):
    """Without the bound, 40,000 events in random order grew the WAL past 400 MB while draining."""
    report = drain_bench(tmp_path, "--count", "40000", "--order", "random", "--duration", "0.2")
    (drain,) = report["runs"][0]["drain"]
    assert drain["events"] == 40000 and 0 < drain["wal_peak_mb"] <= 256, drain


# --- runs (claim_run): a busy key's next events leased together, handed on from memory -------------
def test_a_run_keeps_its_keys_order_through_nacks_and_crashes_and_charges_only_real_deliveries(harness):
    appended = harness.append({"Ua": ["hi", "nack", "hi", "hi", "crash", "hi", "nack", "hi", "hi", "hi"],
                               "Ub": ["hi"] * 10})
    harness.start(handlers=2, claim_run=16)
    harness.wait_done(len(appended))
    harness.check_history(appended)   # nothing of a key overtook its nacked or crashed event
    attempts = {}
    for what, event_id, _, _, attempt in harness.records():
        if what == "start":
            attempts.setdefault(event_id, []).append(attempt)
    # followers given back behind a failure were never charged: every first delivery is attempt 1
    assert all(tries[0] == 1 for tries in attempts.values()), attempts
    assert attempts[appended[2]] == attempts[appended[12]] == [1, 2]   # Ua's nacks: charged once each


@pytest.mark.parametrize("mode", ["ok", "batch"])
def test_a_run_in_batches_keeps_its_order_through_nacks_and_crashes_as_one_at_a_time_does(harness, mode):
    """The same events to a handler speaking today's protocol (`ok`) and to one that takes the
    `batch` feature: the same guarantees; only the second is sent batches."""
    appended = harness.append({"Ua": ["hi", "hi", "nack", "hi", "hi", "crash", "hi", "hi", "hi", "hi"] * 2,
                               "Ub": ["hi"] * 20})
    harness.start(handlers=1, claim_run=16, mode=mode)
    harness.wait_done(len(appended))
    harness.check_history(appended)
    first_attempts = {}
    for what, event_id, _, _, attempt in harness.records():
        if what == "start":
            first_attempts.setdefault(event_id, attempt)
    assert set(first_attempts.values()) == {1}           # the rest of a batch given back: never charged
    batches = [int(size) for size in re.findall(r"text=batch of (\d+)", harness.log_text())]
    if mode == "batch":
        assert batches and max(batches) > 1
    else:
        assert batches == []


def test_a_drain_gives_back_a_run_uncharged_and_a_new_dispatcher_finishes_it(harness):
    dispatcher = harness.start(handlers=1, claim_run=16, env={"FD_TEST_DELAY_MS": "40"})
    harness.wait_status(dispatcher, lambda d: len(ready_pids(d)) == 1, message="ready")
    appended = harness.append({"U1": ["hi"] * 30})
    wait_until(lambda: sum(r[0] == "end" for r in harness.records()) >= 3, 10, message="3 handled")
    dispatcher.send_signal(signal.SIGTERM)
    assert dispatcher.wait(timeout=10) == 0
    stats = harness.store.stats()
    assert stats["in_flight"] == 0 and stats["done"] + stats["pending"] == len(appended)
    assert stats["pending"] > 0   # the run behind the last event was given back, not kept
    harness.start(handlers=1, claim_run=16)
    harness.wait_done(len(appended))
    harness.check_history(appended)
    assert all(r[4] == 1 for r in harness.records())   # released followers were never charged


def test_a_long_run_keeps_its_leases_so_another_dispatcher_never_takes_a_follower(harness):
    """lease_s=1 while one key's run takes ~3 s to handle: the leases of the followers held in
    memory are extended with the ones in flight, so the second dispatcher waits its turn."""
    first, second = (harness.start(handlers=1, claim_run=16, lease_s=1, feed_rescan_s=0.1)
                     for _ in range(2))   # each looks for claimable events ten times a second
    for dispatcher in (first, second):
        harness.wait_status(dispatcher, lambda d: len(ready_pids(d)) == 1, message="ready")
    appended = harness.append({"U1": ["slow"] * 10})   # 0.3 s each
    harness.wait_done(len(appended), timeout=30)
    harness.check_history(appended)   # exactly once, in order
    assert len({r[3] for r in harness.records()}) == 1   # one dispatcher's handler held the whole run
