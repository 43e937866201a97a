"""`frontdesk run --sandbox --demo`, as a new user starts it: the report, what the users received,
then a line saying that everything keeps running and how to play a user."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

from tests.helpers import free_port, wait_until


def test_the_demo_reports_then_says_the_system_keeps_running(tmp_path):
    listen, sandbox = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRONTDESK_", "LINE_"))}
    out = tmp_path / "out.txt"
    with open(out, "wb") as stdout:
        process = subprocess.Popen([sys.executable, "-m", "frontdesk", "run", "--sandbox", "--demo", "--listen", listen,
                                    "--admin-listen", "", "--set", f"sandbox_listen={sandbox}"],
                                   cwd=tmp_path, env=env, stdout=stdout, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: process.poll() is not None or "demo: done" in out.read_text(), timeout=120,
                   interval=0.2, message="the demo's last line")
        lines = out.read_text().splitlines()
        assert process.poll() is None, lines
        received = lines.index("what the users received:")
        assert len([line for line in lines[received + 1:] if line.startswith("  #")]) == 5, lines
        assert lines[-1] == (f"demo: done; frontdesk keeps running: play a user with `frontdesk say hello --url "
                             f"http://{listen}/callback --sandbox-url http://{sandbox}`, Ctrl-C stops everything")
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
