"""`frontdesk top` against a real `frontdesk run --sandbox`: one frame, and the live view's keys
pressed through a pseudo-terminal, their effects checked in the store the dispatchers read."""
from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios

from frontdesk.dispatcher.arbiter import ROLLING_RESTART_CONTROL
from frontdesk.store import open_store
from tests.helpers import wait_until
from tests.test_webhooks import bench_system, running_system


def _dispatcher(store) -> dict | None:
    return next((doc for name, doc in store.get_statuses().items() if name.startswith("dispatcher:")), None)


def _ready_pids(store) -> set[int]:
    doc = _dispatcher(store) or {}
    return {h["pid"] for h in doc.get("handlers", []) if h["state"] == "ready"}


class Terminal:
    """`frontdesk top` on the slave side of a pty (80x50); everything it writes is collected."""

    def __init__(self, env: dict, cwd):
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
        self.process = subprocess.Popen([sys.executable, "-m", "frontdesk", "top"], stdin=slave, stdout=slave,
                                        stderr=slave, env={**env, "TERM": "xterm"}, cwd=cwd,
                                        start_new_session=True)
        os.close(slave)
        self.master = master
        self.output = b""

    def read(self) -> bytes:
        while select.select([self.master], [], [], 0.05)[0]:
            try:
                self.output += os.read(self.master, 65536)
            except OSError:    # the child closed the terminal
                break
        return self.output

    def press(self, key: str) -> None:
        os.write(self.master, key.encode())

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        os.close(self.master)


def test_top_once_prints_the_measured_frame_of_a_running_system(tmp_path):
    with running_system(tmp_path, handlers=2) as system:
        report = bench_system(system, "--count", "100", "--rate", "100", "--users", "10")
        assert report["delivered"] == 100
        env = system[2]
        store = open_store(env["FRONTDESK_STORE"])
        try:
            def published() -> bool:   # the dispatcher publishes what its rate limiter last reported
                doc = _dispatcher(store) or {}
                calls = ((doc.get("ratelimiter") or {}).get("stats") or {}).get("calls") or {}
                return doc.get("handled", 0) >= 100 and sum((calls.get("reply") or {}).values()) >= 100
            wait_until(published, timeout=30, message="the events' counters published")
            frame = subprocess.run([sys.executable, "-m", "frontdesk", "top", "--once"], env=env, cwd=tmp_path,
                                   capture_output=True, text=True, timeout=30)
            pids = _ready_pids(store)
        finally:
            store.close()
    assert frame.returncode == 0, frame.stderr
    text = frame.stdout
    assert "queue  pending 0" in text and "dead letters 0" in text and "arrivals/s" in text
    assert "handlers 2 (fixed)" in text
    handler_rows = [line.split() for line in text.splitlines() if line.strip().startswith("handler-")]
    assert {row[1] for row in handler_rows} == {str(pid) for pid in pids} and all(row[2] == "ready" for row in handler_rows)
    assert sum(int(row[8]) for row in handler_rows) >= 100          # handled, per process
    reply = next(line.split() for line in text.splitlines() if line.strip().startswith("reply "))
    assert float(reply[2]) == 2000 and int(reply[5]) >= 100         # limit/s and calls
    assert "advice: none, the figures look healthy" in text


def test_top_without_a_terminal_or_a_store_says_so(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRONTDESK_", "LINE_"))}
    missing = subprocess.run([sys.executable, "-m", "frontdesk", "top", "--store",
                              f"sqlite:///{tmp_path}/none.db"], env=env, capture_output=True, text=True, timeout=30)
    assert missing.returncode == 1 and "no store at sqlite:///" in missing.stderr
    assert not (tmp_path / "none.db").exists()
    store = open_store(f"sqlite:///{tmp_path}/empty.db")
    store.close()
    piped = subprocess.run([sys.executable, "-m", "frontdesk", "top", "--store", f"sqlite:///{tmp_path}/empty.db"],
                           env=env, capture_output=True, text=True, timeout=30)
    assert piped.returncode == 2 and "needs a terminal (use --once" in piped.stderr


def test_top_keys_scale_the_pool_restart_the_handlers_and_quit(tmp_path):
    with running_system(tmp_path, handlers=2) as system:
        env = system[2]
        store = open_store(env["FRONTDESK_STORE"])
        wait_until(lambda: len(_ready_pids(store)) == 2, timeout=30, message="two handlers ready")
        terminal = Terminal(env, tmp_path)   # its first frame, drawn whole, shows both handlers
        try:
            wait_until(lambda: b"handler-2" in terminal.read() and b"advice:" in terminal.output, timeout=30,
                       message="top drew its first frame")
            terminal.press("+")
            wait_until(lambda: len(_ready_pids(store)) == 3, timeout=30, message="a third handler after +")
            assert store.get_control("handlers") == 3
            terminal.press("-")
            wait_until(lambda: len(_ready_pids(store)) == 2 and (_dispatcher(store) or {}).get(
                "handlers_target") == 2, timeout=30, message="back to two after -")
            before = _ready_pids(store)
            terminal.press("h")
            wait_until(lambda: len(_ready_pids(store)) == 2 and not _ready_pids(store) & before, timeout=60,
                       message="every handler replaced after h")
            assert store.get_control(ROLLING_RESTART_CONTROL)
            terminal.press("q")
            wait_until(lambda: terminal.read() is not None and terminal.process.poll() is not None, timeout=15,
                       message="top quit after q")
            assert terminal.process.returncode == 0
        finally:
            terminal.close()
            store.close()


def test_top_says_more_handlers_will_not_help_when_the_rate_limiter_is_at_its_limit(tmp_path):
    with running_system(tmp_path, handlers=2, rate_limits="reply=20/s,default=2000/s") as (url, sandbox_url, env):
        bench = subprocess.Popen([sys.executable, "-m", "frontdesk", "bench", "--json", "--url", url, "--sandbox-url",
                                  sandbox_url, "--count", "130", "--rate", "60", "--users", "40", "--settle", "60"],
                                 env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            store = open_store(env["FRONTDESK_STORE"])
            try:
                def replies() -> int:
                    limiter = (_dispatcher(store) or {}).get("ratelimiter") or {}
                    return sum(((limiter.get("stats") or {}).get("calls") or {}).get("reply", {}).values())
                # 1.5 s of replies at the 20/s limit (the status top reads first was published in them), ~100
                # events still queued: 5 s more at the limit, top's two samples 1.5 s apart among them
                wait_until(lambda: replies() >= 30, timeout=30, message="replies for 1.5 s at the 20/s limit")
            finally:
                store.close()
            frame = subprocess.run([sys.executable, "-m", "frontdesk", "top", "--once"], env=env, cwd=tmp_path,
                                   capture_output=True, text=True, timeout=30).stdout
        finally:
            report = json.loads(bench.communicate(timeout=120)[0])
    assert "advice: rate limiter at its reply limit (" in frame and "more handlers will not help" in frame
    assert "frontdesk scale" not in frame
    assert report["delivered"] == 130 and report["http_429"] == 0 and report["lost"] == 0


def test_keys_other_than_the_documented_ones_change_nothing(tmp_path):
    from frontdesk.top import KEYS_HELP, handle_key

    store = open_store(f"sqlite:///{tmp_path}/fd.db")
    try:
        view = {"dispatchers": [{"state": "running", "stale": False, "handlers_target": 3}]}
        for key in ("", "x", "\n", " "):     # "" is what a resize or an arrow key becomes
            assert handle_key(key, view, store) == KEYS_HELP
        assert store.get_control("handlers") is None and store.get_control(ROLLING_RESTART_CONTROL) is None
        assert handle_key("-", view, store) == "handlers: 2 requested (frontdesk scale 2)"
        assert store.get_control("handlers") == 2
        assert handle_key("q", view, store) is None
    finally:
        store.close()
