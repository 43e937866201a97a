"""`frontdesk status | scale | dead-letters | config`, run as real commands against real store files."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from frontdesk.demo import accepting
from frontdesk.store import open_store
from tests.helpers import free_port, wait_until

REPO = Path(__file__).resolve().parents[1]


def frontdesk(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("FRONTDESK_", "LINE_"))}
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "frontdesk", *args], cwd=REPO, env=environ,
                          capture_output=True, text=True, timeout=30)


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path}/fd.db"


def event(n: int, user: str) -> dict:
    return {"type": "message", "timestamp": 1_700_000_000_000 + n, "webhookEventId": f"ev{n}",
            "source": {"type": "user", "userId": user}, "message": {"type": "text", "id": str(n), "text": "x"}}


@pytest.mark.parametrize("folder", ["", "no-such-folder/"])
def test_status_where_there_is_no_store_says_so_exits_4_and_creates_nothing(tmp_path, folder):
    url = f"sqlite:///{tmp_path}/{folder}fd.db"
    for args in (("status",), ("status", "--json")):
        result = frontdesk(*args, "--store", url)
        assert result.returncode == 4 and result.stdout == "", result.stdout + result.stderr
        assert result.stderr == (f"frontdesk status: no store at {url}: {tmp_path}/{folder}fd.db does not exist "
                                 "(nothing has run with this store here: give the system's --store, or run this "
                                 "in its folder)\n")
    assert list(tmp_path.iterdir()) == []


def test_status_reports_queue_and_processes(url):
    store = open_store(url)
    try:
        store.append("Udest", [event(1, "A"), event(2, "A"), event(3, "B"), event(4, "C")],
                     int(time.time() * 1000))
        store.claim("d1", 10, 60)
        store.ack("d1", ["ev1"])
        store.nack("d1", "ev3", "handler crashed", False, 5, 1, 10)
        store.put_status("dispatcher-h1", {"pid": 123, "degraded": "handlers: 6 crashes within 60 s", "handlers": [
            {"name": "handler-1", "pid": 4001, "state": "ready", "in_flight": 3, "handled": 250, "restarts": 0},
            {"name": "handler-2", "pid": None, "state": "waiting_restart", "in_flight": 0, "handled": 7,
             "restarts": 6}]})
    finally:
        store.close()
    report = json.loads(frontdesk("status", "--json", "--store", url).stdout)
    assert {k: report["events"][k] for k in ("pending", "in_flight", "done", "dead")} == \
        {"pending": 1, "in_flight": 1, "done": 1, "dead": 1}
    assert report["processes"]["dispatcher-h1"]["pid"] == 123
    table = frontdesk("status", "--store", url).stdout
    assert "dispatcher-h1" in table and "handlers 1 of 2 ready (waiting_restart 1)" in table
    assert "DEGRADED: handlers: 6 crashes within 60 s" in table
    rows = {line.split()[0]: line.split()[1:] for line in table.splitlines() if line.strip().startswith("handler-")}
    assert rows == {"handler-1": ["4001", "ready", "3", "250", "0"],
                    "handler-2": ["-", "waiting_restart", "0", "7", "6"]}


def test_status_shows_each_rate_limiters_share_of_the_shared_budget(url):
    store = open_store(url)
    try:
        for host, share in (("h1", 0.62), ("h2", 0.375)):
            store.put_status(f"dispatcher:{host}:1", {"pid": 1, "handlers": [], "ratelimiter": {"pid": 2, "stats": {
                "budget": {"reply": {"share": share, "sent": int(200 * share), "expired": 0, "leases": 7}}}}})
    finally:
        store.close()
    shown = [line.split("rate budget share: ")[1] for line in frontdesk("status", "--store", url).stdout.splitlines()
             if "rate budget share" in line]
    assert shown == ["reply 62% (124 sent)", "reply 38% (75 sent)"]


def test_status_with_a_bad_store_url_is_one_clear_line():
    result = frontdesk("status", "--store", "postgres://db")
    assert result.returncode == 1
    assert "not supported" in result.stderr and "Traceback" not in result.stderr


def test_status_on_a_corrupt_file(tmp_path):
    (tmp_path / "junk.db").write_text("not a database " * 200)
    result = frontdesk("status", "--store", f"sqlite:///{tmp_path}/junk.db")
    assert result.returncode == 1 and "not a database" in result.stderr and "Traceback" not in result.stderr


def test_status_hides_store_password():
    result = frontdesk("status", "--store", "mongodb://bot:s3cret@127.0.0.1:1/db?serverSelectionTimeoutMS=200")
    assert result.returncode == 1 and "s3cret" not in result.stderr + result.stdout


def test_scale_sets_the_control(url):
    assert frontdesk("scale", "3", "--store", url).returncode == 0
    store = open_store(url)
    try:
        assert store.get_control("handlers") == 3
    finally:
        store.close()
    assert frontdesk("scale", "--", "-1", "--store", url).returncode == 2


def test_dead_letters_list_retry_drop(url):
    store = open_store(url)
    try:
        store.append("Udest", [event(n, f"U{n}") for n in range(1, 4)], 0)
        for doc in store.claim("d1", 10, 60):
            store.nack("d1", doc["o"]["_id"], f"bad input {doc['o']['_id']}", False, 5, 1, 10)
    finally:
        store.close()
    listed = json.loads(frontdesk("dead-letters", "list", "--json", "--store", url).stdout)
    assert [d["id"] for d in listed] == ["ev1", "ev2", "ev3"] and listed[0]["error"] == "bad input ev1"
    table = frontdesk("dead-letters", "list", "--store", url).stdout
    assert "ev2" in table and "bad input ev2" in table

    refused = frontdesk("dead-letters", "retry", "--store", url)
    assert refused.returncode == 2 and "--all" in refused.stderr
    retried = frontdesk("dead-letters", "retry", "ev1", "nope", "ev1", "--store", url)
    assert retried.returncode == 1 and "re-queued 1 dead letter(s)" in retried.stdout
    assert retried.stderr.splitlines()[-1] == "frontdesk dead-letters: not dead letters: nope"
    assert frontdesk("dead-letters", "--store", url).stdout == \
        frontdesk("dead-letters", "list", "--store", url).stdout       # list is the default action
    assert json.loads(frontdesk("dead-letters", "drop", "--all", "--json", "--store", url).stdout) == {"dropped": 2}
    store = open_store(url)
    try:
        assert store.dead_letters() == [] and [d["o"]["_id"] for d in store.claim("d1", 10, 60)] == ["ev1"]
    finally:
        store.close()


def test_config_masks_secrets_and_names_sources(url):
    result = frontdesk("config", "--store", url, env={"LINE_CHANNEL_SECRET": "topsecretvalue"})
    assert result.returncode == 0
    assert "topsecretvalue" not in result.stdout
    assert "channel_secret" in result.stdout and "environment LINE_CHANNEL_SECRET" in result.stdout
    assert f"{url}  (command line)" in result.stdout
    assert frontdesk("config", "--markdown").stdout.startswith("| key |")


def test_config_takes_the_settings_flags_and_prints_rates_as_one_types_them():
    result = frontdesk("config", "--handlers", "3", "--listen", "127.0.0.1:9000", "--admin-listen", "",
                       "--set", "rate_limits=reply=100/s,broadcast=60/h")
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert lines["handlers"].split()[1:] == ["3", "(command", "line)"]
    assert lines["listen"].split()[1] == "127.0.0.1:9000" and lines["admin_listen"].split()[1] == "(command"
    assert lines["rate_limits"].split()[1] == "reply=100/s,broadcast=60/h"


def test_status_advises_from_what_it_measures(url):
    store = open_store(url)
    try:
        store.append("Udest", [event(1, "A"), event(2, "B"), event(3, "C")], int(time.time() * 1000) - 45_000)
        store.claim("d1", 1, 60)
        store.nack("d1", "ev1", "handler refused it", False, 5, 1, 10)
    finally:
        store.close()
    table = frontdesk("status", "--store", url).stdout
    advice = [line for line in table.splitlines() if line.startswith("advice") or line.startswith(" " * 11)]
    assert re.search(r"^advice     2 events pending \(oldest 4[5-9] s\) and no dispatcher publishing a status: "
                     r"start one \(`frontdesk run` or `frontdesk dispatcher`\)$", table, re.MULTILINE)
    assert "           1 dead letters: see `frontdesk dead-letters list`, then retry or drop them" in advice
    report = json.loads(frontdesk("status", "--json", "--store", url).stdout)
    assert len(report["advice"]) == 2 and report["view"]["queue"]["pending"] == 2


def test_status_names_a_hot_key(url):
    store = open_store(url)
    try:
        store.append("Udest", [event(n, "Uhot") for n in range(1, 21)] + [event(n, f"U{n}") for n in range(21, 31)],
                     int(time.time() * 1000))
    finally:
        store.close()
    report = json.loads(frontdesk("status", "--json", "--store", url).stdout)
    assert report["view"]["queue"]["busiest_key"] == {"key": "Uhot", "events": 20, "share": 0.667}
    assert any(line.startswith("one conversation (Uhot) holds 67 % of the waiting events (20)")
               for line in report["advice"])


def test_status_says_everything_in_words_and_times_not_raw_values(url):
    started = time.time() - 125
    store = open_store(url)
    try:
        store.put_status("dispatcher:h1:7", {
            "pid": 7, "host": "h1", "owner": "h1:7:abcd", "state": "running", "started_at": started,
            "handlers_target": 2, "in_flight": 1, "handled": 42, "degraded": None, "store_error": None,
            "autoscale": None, "e2e_s": 3.5, "e2e_counts": [1, 2],
            "handlers": [{"name": "handler-1", "pid": 70, "state": "ready", "in_flight": 1, "handled": 42,
                          "restarts": 0}],
            "ratelimiter": {"pid": 8, "restarts": 1, "degraded": None, "pending_calls": 0,
                            "limits_per_s": {"reply": 2000.0, "broadcast": 0.016666666666666666},
                            "stats": {"calls": {"reply": {"200": 40, "400": 2}, "profile": {"200": 3}},
                                      "queues": {}, "budget": {}}},
            "a_future_field": {"nested": [1, 2, 3] * 30}})
        store.put_status("run:h1:5", {"pid": 5, "host": "h1", "state": "running", "started_at": started - 1,
                                      "services": {"receiver": {"pid": 6, "address": "http://127.0.0.1:8000/callback",
                                                                "restarts": 0, "degraded": None},
                                                   "dispatcher": {"pid": None, "address": "", "restarts": 3,
                                                                  "degraded": "6 crashes within 60 s"}}})
    finally:
        store.close()
    table = frontdesk("status", "--store", url).stdout
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))
    assert f"running, pid 7 on h1, up 2 min (since {since}), handlers 1 of 2 ready, in flight 1, handled 42" in table
    assert "rate limiter: pid 8, restarts 1, pending calls 0; calls: profile 3 (200 ×3), reply 42 (200 ×40, 400 ×2)" \
        in table
    assert "receiver   pid 6  http://127.0.0.1:8000/callback" in table
    assert "dispatcher pid - (not running)  restarts 3" in table and "DEGRADED dispatcher: 6 crashes within 60 s" in table
    assert "a_future_field: " + json.dumps({"nested": [1, 2, 3] * 30}) in table      # whole, not cut
    for raw in ("None", "started_at", str(round(started, 1))[:8], "...", "owner", "e2e", "limits_per_s"):
        assert raw not in table, raw
    assert "rates      none: no status page of this store answers (--interval 1.5 measures them)" in table


def test_status_takes_its_rates_from_the_running_status_page(url, tmp_path):
    admin = f"127.0.0.1:{free_port()}"
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("FRONTDESK_", "LINE_"))}
    store = open_store(url)
    page = subprocess.Popen([sys.executable, "-m", "frontdesk", "statuspage", "--store", url, "--admin-listen", admin],
                            env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        publish = lambda: store.put_status("run:h1:5", {"pid": 5, "state": "running", "services": {
            "statuspage": {"pid": page.pid, "address": f"http://{admin}/", "restarts": 0, "degraded": None}}})
        publish()
        wait_until(lambda: page.poll() is not None or accepting(admin), timeout=30, message="the page listens")
        publish()   # fresh again after the wait
        report = json.loads(frontdesk("status", "--json", "--store", url).stdout)
        assert report["rates"] == f"from the status page http://{admin}/"
        assert report["view"]["processes"]["run:h1:5"]["pid"] == 5    # the page's view of this store
    finally:
        page.terminate()
        page.wait(timeout=30)
        store.close()


def test_a_cleanly_stopped_dispatcher_leaves_no_status(harness):
    process = harness.start(handlers=2, drain_grace_s=5)
    harness.wait_status(process, lambda d: len([h for h in d["handlers"] if h["state"] == "ready"]) == 2, timeout=30)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert harness.status(process) is None


def test_status_advises_a_handler_count_for_a_real_busy_pool(harness):
    # no loading animation: the backlog's 50 chats, all past its threshold at once, would put its
    # endpoint at its limit in the measured interval (advice that rightly comes first)
    process = harness.start(handlers=1, env={"FD_TEST_WINDOW": "1", "FD_TEST_DELAY_MS": "60"}, loading_after_s=0)
    harness.wait_status(process, lambda d: [h["state"] for h in d["handlers"]] == ["ready"], timeout=30)
    # 400 events received 6 s ago, a backlog that has waited (not waited out here): at ~30/s one
    # handler needs over 10 s, busy all through the measurement
    harness.append(keys=50, per_key=8, age_s=6)
    assert harness.store.stats()["oldest_pending_s"] > 5
    # a status published while the handler works: both documents the rates come from show it busy
    harness.wait_status(process, lambda d: d["handlers"][0]["handled"] >= 1, timeout=30)
    report = json.loads(frontdesk("status", "--json", "--interval", "1.5", "--store", harness.url).stdout)
    assert report["rates"] == "measured over 1.5 s"
    (handler,) = report["view"]["dispatchers"][0]["handlers"]
    assert handler["busy_share"] >= 0.9 and handler["events_per_s"] > 0
    assert any(re.fullmatch(r"handlers \d+ % busy and the oldest event waits \d+ s: about [2-9] handlers would "
                            r"keep up \(frontdesk scale [2-9]\)", line) for line in report["advice"]), report["advice"]
