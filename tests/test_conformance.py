"""check-handler: both examples pass through the real command; broken handlers fail the right check."""
import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from frontdesk.handlers.conformance import Kit
from frontdesk.protocol import config

ROOT = Path(__file__).resolve().parents[1]
BROKEN = [sys.executable, "-m", "tests.handlers.broken"]


def check_handler(*command: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "frontdesk", "check-handler", "--", *command],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def verdicts(output: str) -> dict[str, str]:
    """{check name: PASS|FAIL|SKIP} from the kit's one line per check (the summary line aside)."""
    result = {}
    for line in output.splitlines()[:-1]:
        verdict, name = line.split(" ", 2)[:2]
        result[name] = verdict
    return result


def summary(output: str) -> str:
    return output.splitlines()[-1]


@pytest.mark.parametrize("command", [
    [sys.executable, "handlers/examples/echo.py"],
    [sys.executable, "-m", "frontdesk.handlers.examples.echo"],
], ids=["script", "module"])
def test_python_echo_passes(command):
    done = check_handler(*command)
    assert done.returncode == 0, done.stdout + done.stderr
    found = verdicts(done.stdout)
    assert set(found.values()) == {"PASS"}
    assert summary(done.stdout) == f"{len(found)} passed, 0 failed"
    for name in ("handshake", "event:text", "event:follow", "event:unfollow", "api-error", "in-flight",
                 "eof-exit", "stdout-clean", "malformed-frame", "oversize-frame", "unsupported-version",
                 "eof-with-event-in-flight"):
        assert name in found


@pytest.fixture(scope="module")
def node():
    """node, with the Node.js example's packages: where they are missing the suite installs them
    itself (`npm install` in handlers/examples, as the README says), so that one test command
    passes on a fresh machine."""
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "node and npm are needed for the Node.js example handler (Debian: apt-get install nodejs npm)"
    examples = ROOT / "handlers" / "examples"
    if not (examples / "node_modules" / "@msgpack" / "msgpack").is_dir():
        done = subprocess.run([npm, "install", "--no-audit", "--no-fund"], cwd=examples, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, f"npm install in {examples} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
    return node


def test_node_echo_passes(node):
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
    ("nack-unknown", {"event:future-type", "event:future-message-type"},
     {"event:text", "event:botSuspended", "event:messageEdited", "eof-exit"}),
    ("drop-on-eof", {"eof-with-event-in-flight"}, {"event:text", "in-flight", "eof-exit"}),
    ("wrong-exit", {"malformed-frame", "oversize-frame", "unsupported-version"},
     {"event:text", "eof-with-event-in-flight"}),
    ("batch-reversed", {"batch", "batch-nack"}, {"handshake", "event:text", "in-flight", "eof-exit"}),
])
def test_broken_handler_fails_the_right_checks(mode, failing, passing):
    out = io.StringIO()
    status = Kit([*BROKEN, mode], config.load(environ={}), timeout=1.0, out=out).run()
    found = verdicts(out.getvalue())
    assert status == 1
    assert {name for name, verdict in found.items() if verdict == "FAIL"} == failing, out.getvalue()
    words = [line.split(" ", 1)[0] for line in out.getvalue().splitlines()[:-1]]
    assert re.fullmatch(rf"{words.count('PASS')} passed, {words.count('FAIL')} failed(, \d+ skipped)?",
                        summary(out.getvalue()))
    assert all(found[name] == "PASS" for name in passing), out.getvalue()


def test_a_handler_speaking_only_todays_protocol_passes_with_events_one_at_a_time():
    """The kit offers the `batch` feature in its hello; a handler that declares none passes every
    check, its batch checks saying that events come to it one at a time."""
    out = io.StringIO()
    status = Kit([*BROKEN, "none"], config.load(environ={}), timeout=5.0, out=out).run()
    found = verdicts(out.getvalue())
    assert status == 0 and set(found.values()) == {"PASS"}, out.getvalue()
    assert "PASS batch — the `batch` feature is not declared: events come one at a time" in out.getvalue()
    assert "features=[]" in out.getvalue()


def test_the_bundled_examples_declare_batches_and_pass_the_batch_checks(node):
    for command in ([sys.executable, "handlers/examples/echo.py"], [node, "handlers/examples/echo.js"]):
        done = check_handler(*command)
        assert "features=['batch']" in done.stdout, done.stdout
        assert "PASS batch — a batch of 3 events of one conversation handled in order: ack, ack, ack" in done.stdout
        assert "PASS batch-nack — first event nacked after a failed API call; the other 2 answered without an API " \
               "call" in done.stdout


def test_a_msgid_of_the_wrong_type_is_named_with_its_type():
    out = io.StringIO()
    assert Kit([*BROKEN, "string-msgid"], config.load(environ={}), timeout=1.0, out=out).run() == 1
    assert "msgid must be an unsigned 32-bit integer, got str '1'" in out.getvalue()
    assert "FAIL stdout-clean" in out.getvalue()
    out = io.StringIO()
    assert Kit([*BROKEN, "string-protocol"], config.load(environ={}), timeout=1.0, out=out).run() == 1
    assert "hello result `protocol` must be the integer 1, got str '1'" in out.getvalue()


def test_a_handler_that_never_shakes_hands_is_one_failure_not_a_page_of_skips():
    done = check_handler(sys.executable, "-c", "import sys; sys.exit(3)")
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("FAIL handshake — ") and "exit status 3" in lines[0]
    assert len(lines) <= 4 and not any(line.startswith("PASS") for line in lines), done.stdout
    assert re.fullmatch(r"0 passed, 1 failed, \d\d skipped", lines[-1]), lines[-1]   # every check accounted for


@pytest.mark.parametrize("program, problem", [
    ("/nonexistent/handler-binary", "no such file"),
    ("tests/handlers/broken.py", "not an executable file (try: python tests/handlers/broken.py"),
    ("no-such-handler-command-xyz", "not found on PATH"),
])
def test_a_command_that_cannot_run_is_reported_once(program, problem):
    done = check_handler(program)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stdout.splitlines()[0].startswith(f"FAIL start — cannot start {program!r}: {problem}")
    assert done.stdout.splitlines()[1:] == ["0 passed, 1 failed"]


def test_missing_command_is_a_clear_error():
    done = check_handler()
    assert done.returncode == 2
    assert "give the handler command after --" in done.stderr


