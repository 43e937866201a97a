"""check-handler: both examples pass through the real command; broken handlers fail the right check."""
import io
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from frontdesk.handlers.conformance import Kit
from frontdesk.protocol import config

ROOT = Path(__file__).resolve().parents[1]
BROKEN = [sys.executable, str(ROOT / "tests" / "handlers" / "broken.py")]


def check_handler(*command: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "frontdesk", "check-handler", "--", *command],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def verdicts(output: str) -> dict[str, str]:
    """{check name: PASS|FAIL|SKIP} from the kit's one line per check."""
    result = {}
    for line in output.splitlines():
        verdict, name = line.split(" ", 2)[:2]
        result[name] = verdict
    return result


@pytest.mark.parametrize("command", [
    [sys.executable, "handlers/examples/echo.py"],
    [sys.executable, "-m", "frontdesk.handlers.examples.echo"],
], ids=["script", "module"])
def test_python_echo_passes(command):
    done = check_handler(*command)
    assert done.returncode == 0, done.stdout + done.stderr
    found = verdicts(done.stdout)
    assert set(found.values()) == {"PASS"}
    for name in ("handshake", "event:text", "event:follow", "event:unfollow", "api-error", "in-flight",
                 "eof-exit", "stdout-clean", "malformed-frame", "oversize-frame", "unsupported-version",
                 "eof-with-event-in-flight"):
        assert name in found


def test_node_echo_passes():
    node = shutil.which("node")
    assert node, "node is needed for the Node.js example (see .ci/run)"
    assert (ROOT / "handlers/examples/node_modules/@msgpack/msgpack").is_dir(), \
        "run `npm install` in handlers/examples (.ci/run does)"
    done = check_handler(node, "handlers/examples/echo.js")
    assert done.returncode == 0, done.stdout + done.stderr
    assert set(verdicts(done.stdout).values()) == {"PASS"}
    assert "name='echo-js'" in done.stdout


@pytest.mark.parametrize("mode, failing, passing", [
    ("noise", {"event:text", "stdout-clean", "eof-with-event-in-flight"},
     {"handshake", "malformed-frame", "oversize-frame"}),
    ("silent", {"event:text", "eof-with-event-in-flight"}, {"handshake", "stdout-clean"}),
    ("ignore-eof", {"eof-exit", "eof-with-event-in-flight"}, {"event:text", "in-flight", "stdout-clean"}),
    ("lax", {"malformed-frame", "oversize-frame"}, {"event:text", "eof-exit", "unsupported-version"}),
])
def test_broken_handler_fails_the_right_checks(mode, failing, passing):
    out = io.StringIO()
    status = Kit([*BROKEN, mode], config.load(environ={}), timeout=1.0, out=out).run()
    found = verdicts(out.getvalue())
    assert status == 1
    assert {name for name, verdict in found.items() if verdict == "FAIL"} == failing, out.getvalue()
    assert all(found[name] == "PASS" for name in passing), out.getvalue()


def test_missing_command_is_a_clear_error():
    done = check_handler()
    assert done.returncode == 2
    assert "give the handler command after --" in done.stderr


def test_command_that_does_not_exist_fails_cleanly():
    done = check_handler("/nonexistent/handler-binary")
    assert done.returncode == 1
    assert "FAIL start — cannot start '/nonexistent/handler-binary'" in done.stdout
    assert "Traceback" not in done.stderr
