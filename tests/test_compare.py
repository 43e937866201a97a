"""`frontdesk bench --suite compare`: both systems started, benched and stopped in one command.

The full comparison needs the official line-bot-sdk (the optional `baseline` extra), which CI
does not install: that test is skipped there. The error paths run everywhere.
"""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
from urllib.parse import urlsplit

import pytest

from tests.helpers import wait_until

SDK_INSTALLED = importlib.util.find_spec("linebot") is not None


def compare(tmp_path, *flags: str, env_extra: dict | None = None, timeout: float = 150):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRONTDESK_", "LINE_"))}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "frontdesk", "bench", "--suite", "compare", *flags],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=timeout)


def _accepting(url: str) -> bool:
    address = urlsplit(url)
    try:
        with socket.create_connection((address.hostname, address.port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not SDK_INSTALLED, reason="line-bot-sdk not installed (pip install '.[baseline]')")
def test_both_systems_get_the_same_load_and_frontdesk_delivers_everything(tmp_path):
    done = compare(tmp_path, "--json", "--count", "30", "--rate", "60", "--users", "5", "--settle", "60")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["latency_ms"] == 20 and summary["repeat"] == 1
    sdk, frontdesk = summary["sdk_echo"]["runs"][0], summary["frontdesk"]["runs"][0]
    assert sdk["url"] != frontdesk["url"]                    # two separate systems
    for report in (sdk, frontdesk):
        assert report["sent"] == 30 and report["lost"] == 0 and report["duplicates"] == 0, report
    assert frontdesk["acked"] == frontdesk["delivered"] == frontdesk["sent"], frontdesk
    assert sdk["delivered"] == sdk["acked"], sdk             # the SDK replied inside every 200
    assert sdk["api_calls"] == sdk["delivered"]              # one reply call per event, nothing batched
    # the injected latency sits inside the SDK pattern's ack, and only there
    assert sdk["ack_ms"]["p50"] >= 20, sdk
    assert summary["frontdesk"]["median"]["lost"] == 0
    # every process the command started is gone
    assert not _accepting(sdk["url"]) and not _accepting(frontdesk["url"])


def test_without_the_sdk_a_one_line_hint_and_exit_2(tmp_path):
    # a `linebot` that fails to import as an absent package does, ahead of any installed one
    shadow = tmp_path / "shadow" / "linebot"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'linebot'\", name='linebot')\n")
    done = compare(tmp_path, "--count", "5", timeout=30,
                   env_extra={"PYTHONPATH": str(shadow.parent)})
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "frontdesk bench --suite compare: the official line-bot-sdk is not installed: pip install '.[baseline]'"]


@pytest.mark.parametrize("flags, complaint", [
    (["--chaos"], "--chaos does not apply"),
    (["--url", "http://127.0.0.1:9/callback"], "--url and --sandbox-url do not apply"),
    (["--mix", "text=1,sticker=1"], "text events only"),
])
def test_options_that_cannot_apply_are_refused_by_name(tmp_path, flags, complaint):
    done = compare(tmp_path, *flags, timeout=30)
    assert done.returncode == 2 and complaint in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        try:
            with open(f"/proc/{parent}/task/{parent}/children") as f:
                children = {int(c) for c in f.read().split()}
        except OSError:
            continue
        found |= children
        todo += children
    return found


def _is_bench(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"--json" in f.read().split(b"\0")
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not SDK_INSTALLED, reason="line-bot-sdk not installed (pip install '.[baseline]')")
@pytest.mark.parametrize("stop, exit_code", [(signal.SIGINT, 130), (signal.SIGTERM, 130),
                                              (signal.SIGKILL, -signal.SIGKILL)])
def test_interrupted_mid_run_it_stops_every_process_it_started(tmp_path, stop, exit_code):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRONTDESK_", "LINE_"))}
    process = subprocess.Popen([sys.executable, "-m", "frontdesk", "bench", "--suite", "compare",
                                "--rate", "50", "--duration", "60"], env=env, cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        # sandbox, baseline and a bench: the warm-up run's, which stops as the measured run's does
        def all_started():
            found = _descendants(process.pid)
            return found if len(found) >= 3 and any(_is_bench(pid) for pid in found) else None

        started = wait_until(all_started, timeout=60, message="the bench started")
        process.send_signal(stop)
        assert process.wait(timeout=45) == exit_code
        wait_until(lambda: not any(_alive(pid) for pid in started), timeout=15, message="children gone")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
