"""The status page: a real `frontdesk run --sandbox` whose admin listener is read over HTTP and
rendered by headless Chromium (the page's tables carry the live values, its charts move as events
flow). Its Prometheus text in-process: tests/unit/test_prometheus.py."""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys

import pytest
import requests

from frontdesk.statuspage import Sampler
from frontdesk.store import open_store
from tests.helpers import free_port, wait_until
from tests.prometheus_text import parse_families
from tests.test_webhooks import bench_system, running_system

CHROMIUM = next((path for path in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if path),
                None)


def healthy(admin: str) -> bool:
    """The status page answers /healthz with 200 (it may still be starting: not listening yet)."""
    try:
        return requests.get(f"http://{admin}/healthz", timeout=5).status_code == 200
    except requests.ConnectionError:
        return False


def _dom(url: str) -> str:
    """The page after its scripts ran (virtual time lets its first fetches finish)."""
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=3000",
                           "--dump-dom", url], capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _series(dom: str) -> dict[str, tuple[int, float, str]]:
    """chart series name -> (points, last value, the polyline's points)."""
    found = {}
    for match in re.finditer(r'<polyline class="series" data-name="([^"]+)" data-count="(\d+)" '
                             r'data-last="([^"]*)"[^>]* points="([^"]*)"', dom):
        found[match[1]] = (int(match[2]), float(match[3] or 0), match[4])
    return found


def _rises(points: str) -> bool:
    """Does a chart line leave its zero line (y = height - 12 = 98) anywhere?"""
    return any(float(point.split(",")[1]) < 97.5 for point in points.split())


def _table_rows(dom: str, first_cell: str) -> list[list[str]]:
    rows = re.findall(r"<tr>(<td[^>]*>" + re.escape(first_cell) + r"[^<]*</td>.*?)</tr>", dom)
    return [re.findall(r"<td[^>]*>([^<]*)</td>", row) for row in rows]


def test_the_admin_listener_serves_status_json_metrics_and_healthz(tmp_path):
    admin = f"127.0.0.1:{free_port()}"
    with running_system(tmp_path, admin_listen=admin, handlers=2) as system:
        wait_until(lambda: healthy(admin), timeout=30, message="status page healthy")
        report = bench_system(system, "--count", "100", "--rate", "100", "--users", "10")
        assert report["delivered"] == 100

        def handled() -> int:
            status = requests.get(f"http://{admin}/status.json", timeout=5).json()
            return sum(d["handled"] for d in status["view"]["dispatchers"])
        wait_until(lambda: handled() >= 100, timeout=30, message="the page saw the events handled")
        metrics = parse_families(requests.get(f"http://{admin}/metrics", timeout=5).text)
        assert sum(int(line.rsplit(" ", 1)[1]) for line in metrics["frontdesk_handler_events_total"]) >= 100
        e2e_count = next(line for line in metrics["frontdesk_event_e2e_seconds"] if "_count" in line)
        assert int(e2e_count.rsplit(" ", 1)[1]) >= 100
        missing = requests.get(f"http://{admin}/nope", timeout=5)
        assert missing.status_code == 404 and "/status.json" in missing.json()["error"]


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium found (Debian: apt-get install -y chromium; "
                                             ".ci/run installs it where apt-get exists)")
def test_the_page_renders_live_values_and_its_charts_move_in_headless_chromium(tmp_path):
    admin = f"127.0.0.1:{free_port()}"
    with running_system(tmp_path, admin_listen=admin, handlers=2) as system:
        store = open_store(system[2]["FRONTDESK_STORE"])
        try:
            def ready_pids() -> set[str]:
                doc = next((d for n, d in store.get_statuses().items() if n.startswith("dispatcher:")), {})
                return {str(h["pid"]) for h in doc.get("handlers", []) if h["state"] == "ready"}
            wait_until(lambda: len(ready_pids()) == 2, timeout=30, message="two handlers ready")
            pids = ready_pids()
        finally:
            store.close()
        wait_until(lambda: healthy(admin), timeout=30, message="status page healthy")
        # the page draws what /status.json says: wait until that has caught up, then render it
        wait_until(lambda: _page_figures(admin)["ready_pids"] == pids, timeout=30, message="the page sees the pool")
        before = _dom(f"http://{admin}/")
        assert "frontdesk" in before and "<li>none, the figures look healthy</li>" in before
        assert {row[1] for row in _table_rows(before, "handler-")} == pids    # the live pids
        assert _series(before)["arrivals"][1] == 0

        report = bench_system(system, "--count", "150", "--rate", "100", "--users", "10")
        assert report["delivered"] == 150
        wait_until(lambda: _page_figures(admin)["handled"] >= 150 and _page_figures(admin)["reply_calls"] >= 150,
                   timeout=30, message="the page saw the events and their replies")
        after = _dom(f"http://{admin}/")
    charts = _series(after)
    assert charts["pending"][0] > _series(before)["pending"][0]          # more points: the charts move
    assert charts["pending"][2] != _series(before)["pending"][2]
    assert _rises(charts["arrivals"][2]) and _rises(charts["completions"][2]) and _rises(charts["reply"][2])
    reply = _table_rows(after, "reply")
    assert reply and int(reply[0][5]) >= 150                              # calls to the reply endpoint
    handled = sum(int(row[8]) for row in _table_rows(after, "handler-"))
    assert handled >= 150


def _page_figures(admin: str) -> dict:
    """What /status.json (the page's source) says now: ready pids, events handled, reply calls."""
    view = requests.get(f"http://{admin}/status.json", timeout=5).json()["view"] or {"dispatchers": []}
    handlers = [h for d in view["dispatchers"] for h in d["handlers"]]
    endpoints = [e for d in view["dispatchers"] for e in d["ratelimiter"]["endpoints"]]
    return {"ready_pids": {str(h["pid"]) for h in handlers if h["state"] == "ready"},
            "handled": sum(h["handled"] for h in handlers),
            "reply_calls": sum(e["calls"] for e in endpoints if e["endpoint"] == "reply")}


def test_a_taken_or_malformed_admin_address_fails_at_once_naming_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRONTDESK_", "LINE_"))}
    store = f"sqlite:///{tmp_path}/fd.db"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = "127.0.0.1:%d" % taken.getsockname()[1]
        busy = subprocess.run([sys.executable, "-m", "frontdesk", "statuspage", "--store", store, "--admin-listen",
                               address], env=env, capture_output=True, text=True, timeout=30)
    assert busy.returncode == 2 and f"listen_failed address={address} error=Address already in use" in busy.stderr
    malformed = subprocess.run([sys.executable, "-m", "frontdesk", "statuspage", "--store", store,
                                "--admin-listen", "8001"], env=env, capture_output=True, text=True, timeout=30)
    assert malformed.returncode == 2 and "admin_listen_invalid value='8001' expected=HOST:PORT" in malformed.stderr
    assert not list(tmp_path.iterdir())     # the store was never opened
