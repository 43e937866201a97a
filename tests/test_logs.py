"""log_file and `frontdesk logs`: a real system writes every process's lines to one file, and one
role's lines are followed as they are written."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

from frontdesk.testing import start_system
from tests.helpers import wait_until


def clean_environment(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith(("FRONTDESK_", "LINE_"))}, **extra}


def frontdesk(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "frontdesk", *args], env=env or clean_environment(),
                          capture_output=True, text=True, timeout=60)


def pid_of(line: str) -> str:
    return re.match(r"\S+ \S+ [A-Z]+ [\w.\-]+\[(\d+)\] ", line).group(1)


def test_every_process_logs_to_the_file_and_one_role_is_followed(tmp_path):
    log = tmp_path / "frontdesk.log"
    # DEBUG: the receiver's line for a stored webhook
    with start_system(environ=clean_environment(FRONTDESK_LOG_FILE=str(log), FRONTDESK_LOG_LEVEL="DEBUG")) as system:
        followed = tmp_path / "followed.txt"
        with open(followed, "wb") as out:
            follow = subprocess.Popen([sys.executable, "-m", "frontdesk", "logs", "receiver", "-f", "-n", "0",
                                       "--log-file", str(log)], env=clean_environment(), stdout=out)
        try:
            said = frontdesk("say", "hi", "--url", system.url, "--sandbox-url", system.sandbox_url)
            assert said.returncode == 0, said.stdout + said.stderr
            wait_until(lambda: "status=200 events=1" in followed.read_text(), timeout=30, interval=0.1,
                       message="the receiver's line for the webhook, followed")
        finally:
            follow.send_signal(signal.SIGINT)
            assert follow.wait(timeout=30) == 0
        lines = followed.read_text().splitlines()
        assert lines and all(" frontdesk.receiver[" in line or " frontdesk.http[" in line for line in lines), lines
    text = log.read_text()
    for logger in ("frontdesk.run[", "frontdesk.receiver[", "frontdesk.dispatcher[", "frontdesk.ratelimiter[",
                   "frontdesk.sandbox["):
        assert logger in text, logger
    dispatcher = frontdesk("logs", "dispatcher", "-n", "1000", "--log-file", str(log))
    assert dispatcher.returncode == 0 and "from=starting to=ready handler=" in dispatcher.stdout   # a handler ready
    assert len({pid_of(line) for line in dispatcher.stdout.splitlines()}) == 1   # one process: the dispatcher
    assert frontdesk("logs", "-n", "3", "--log-file", str(log)).stdout.splitlines() == text.splitlines()[-3:]


def test_no_log_file_a_missing_one_and_one_that_cannot_be_opened_are_named(tmp_path):
    unset = frontdesk("logs")
    assert unset.returncode == 2 and "log_file is not set" in unset.stderr and "journalctl -u frontdesk" in unset.stderr
    missing = frontdesk("logs", "--log-file", str(tmp_path / "none.log"))
    assert missing.returncode == 1 and f"{tmp_path / 'none.log'} does not exist" in missing.stderr
    bad = frontdesk("run", "--sandbox", "--log-file", str(tmp_path / "no-such-folder" / "x.log"))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip() == (f"frontdesk: configuration error: log_file '{tmp_path}/no-such-folder/x.log': "
                                  "cannot open it: No such file or directory")
