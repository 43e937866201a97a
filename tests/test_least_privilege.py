"""Least privilege (README, "Least privilege"): store files only their owner reads; secrets from
files so they need be in no environment; each secret only to the process that uses it, as an
inherited descriptor, and every process holding one closed to its own user (tried as an
unprivileged user: root may read any process); handlers without secrets and, when frontdesk
starts as root, as another user."""
from __future__ import annotations

import glob
import json
import os
import pwd
import signal
import stat
import subprocess
import sys
import uuid

import pytest

from frontdesk.protocol.config import ConfigError, load
from frontdesk.sandbox.webhooks import EventFactory, post_webhook, user_id, user_source
from frontdesk.store import open_store
from tests.helpers import free_port, wait_until
from tests.sandbox_harness import running_sandbox
from tests.test_receiver import SECRET, Receiver, make_body, make_event
from tests.unprivileged import USER, Unprivileged

TOKEN = "test-access-token-0123456789"


def test_every_file_of_the_sqlite_store_is_created_0600(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'fd.db'}")
    try:
        store.append("Ubot", [make_event()], 0)
        store.change_feed()
        created = glob.glob(str(tmp_path / "fd.db*")) + glob.glob(str(tmp_path / "fd.db.feed" / "*"))
        assert {os.path.basename(p) for p in created} >= {"fd.db", "fd.db-wal", "fd.db-shm",
                                                          "fd.db.writelock", "fd.db.feed"}
        for path in created:
            mode = stat.S_IMODE(os.stat(path).st_mode)
            assert mode == (0o700 if os.path.isdir(path) else 0o600), f"{path}: {oct(mode)}"
    finally:
        store.close()


def test_secrets_are_read_from_files_and_children_get_neither_the_value_nor_the_path(tmp_path):
    (tmp_path / "secret").write_text("from-a-file\n")
    (tmp_path / "credentials").mkdir()
    (tmp_path / "credentials" / "line-channel-access-token").write_text("a-token")
    settings = load(environ={"LINE_CHANNEL_SECRET_FILE": str(tmp_path / "secret"),
                             "CREDENTIALS_DIRECTORY": str(tmp_path / "credentials")}, config_file=os.devnull)
    assert settings.channel_secret == "from-a-file" and settings.channel_access_token == "a-token"
    assert settings.source("channel_access_token") == "systemd credential line-channel-access-token"
    environ = settings.to_environ()
    assert not {"from-a-file", "a-token", str(tmp_path / "secret")} & set(environ.values())
    assert not {name for name in environ if name.startswith("LINE_")}
    # an environment value still wins, as for every setting
    assert load(environ={"LINE_CHANNEL_SECRET": "env", "LINE_CHANNEL_SECRET_FILE": str(tmp_path / "secret")},
                config_file=os.devnull).channel_secret == "env"


def test_an_unreadable_secret_file_is_a_clear_error_that_names_it(tmp_path):
    with pytest.raises(ConfigError, match=r"LINE_CHANNEL_SECRET_FILE: cannot read .*/nope"):
        load(environ={"LINE_CHANNEL_SECRET_FILE": str(tmp_path / "nope")}, config_file=os.devnull)


def test_a_receiver_with_its_secret_in_a_file_has_it_in_no_environment(tmp_path):
    (tmp_path / "secret").write_text(SECRET + "\n")
    running = Receiver(tmp_path, extra_env={"LINE_CHANNEL_SECRET": None,
                                            "LINE_CHANNEL_SECRET_FILE": str(tmp_path / "secret")})
    try:
        running.wait_ready()
        assert running.post(make_body(make_event())).status_code == 200   # signed with SECRET
        with open(f"/proc/{running.proc.pid}/environ", "rb") as f:
            assert SECRET.encode() not in f.read()
    finally:
        running.stop()


def _dispatcher(tmp_path, handler_user: str) -> subprocess.Popen:
    """A dispatcher whose one handler is `sleep` (it never shakes hands: alive long enough to look
    at), its access token in a file, its log in tmp_path/dispatcher.log."""
    (tmp_path / "token").write_text(TOKEN)
    os.chmod(tmp_path / "token", 0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRONTDESK_", "LINE_"))}
    env["LINE_CHANNEL_ACCESS_TOKEN_FILE"] = str(tmp_path / "token")
    argv = [sys.executable, "-m", "frontdesk", "dispatcher", "--store", f"sqlite:///{tmp_path / 'fd.db'}",
            "--handler", "sleep 60", "--handlers", "1", "--set", f"handler_user={handler_user}",
            "--set", "handler_start_timeout_s=60"]
    with open(tmp_path / "dispatcher.log", "wb") as log:
        return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can start a handler as another user")
def test_handlers_run_as_handler_user_without_any_secret_and_cannot_read_the_dispatchers_environment(tmp_path):
    nobody = pwd.getpwnam("nobody")
    dispatcher = _dispatcher(tmp_path, "nobody")
    store = open_store(f"sqlite:///{tmp_path / 'fd.db'}")
    try:
        def handler_pid():
            assert dispatcher.poll() is None, (tmp_path / "dispatcher.log").read_text()
            for name, doc in store.get_statuses().items():
                if name.endswith(f":{dispatcher.pid}"):
                    return next((h["pid"] for h in doc["handlers"] if h.get("pid")), None)
        pid = wait_until(handler_pid, timeout=20, message="the handler started")
        with open(f"/proc/{pid}/status") as f:
            uids = next(line for line in f if line.startswith("Uid:")).split()[1:]
        assert {int(uid) for uid in uids} == {nobody.pw_uid}
        with open(f"/proc/{pid}/environ", "rb") as f:
            names = {entry.split(b"=", 1)[0] for entry in f.read().split(b"\0") if entry}
        assert not names & {b"LINE_CHANNEL_ACCESS_TOKEN", b"LINE_CHANNEL_ACCESS_TOKEN_FILE",
                            b"LINE_CHANNEL_SECRET", b"LINE_CHANNEL_SECRET_FILE", b"CREDENTIALS_DIRECTORY"}
        as_handler = subprocess.run(["cat", f"/proc/{dispatcher.pid}/environ", str(tmp_path / "token")],
                                    user="nobody", capture_output=True)
        assert as_handler.returncode != 0 and TOKEN.encode() not in as_handler.stdout
    finally:
        dispatcher.kill()
        dispatcher.wait()
        store.close()


def test_a_handler_user_that_does_not_exist_stops_the_dispatcher_with_a_clear_error(tmp_path):
    dispatcher = _dispatcher(tmp_path, "no-such-user-here")
    try:
        assert dispatcher.wait(timeout=20) == 2
    finally:
        if dispatcher.poll() is None:
            dispatcher.kill()
    log = (tmp_path / "dispatcher.log").read_text()
    assert "handler_user: there is no user 'no-such-user-here'" in log and "Traceback" not in log


@pytest.fixture(scope="module")
def unprivileged():
    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc and prctl: Linux only")
    try:
        account = Unprivileged()
    except KeyError:
        pytest.skip(f"there is no user {USER!r} on this machine to run frontdesk as")
    yield account
    account.close()


def _scan(run, sandbox, listen: str, secret: str, report, log) -> dict:
    """Two signed webhooks to the run, one after the other: the handler's reply to each (through
    the rate limiter, with the token) says its scan is written. The first makes sure that every
    process has read its settings (a process just started may still be dumpable for a moment:
    README, "Least privilege", what this leaves); the second one's report is returned."""
    factory = EventFactory(secret)
    for _ in range(2):
        body = factory.body([factory.event("text", user_source(user_id(1)), text="scan")])
        since = sandbox.stats()["last_delivery_id"]
        wait_until(lambda: run.poll() is not None or post_webhook(f"http://{listen}/callback", secret, body) == 200,
                   timeout=60, interval=0.2, message="the webhook stored (signed with the channel secret)")
        assert run.poll() is None, log.read_text()
        wait_until(lambda: any(d["messages"][0].get("text") == "scanned" for d in sandbox.deliveries(since)),
                   timeout=60, interval=0.2, message="the handler's reply (made with the access token)")
    return json.loads(report.read_text())


def _roles(findings: dict) -> dict[str, dict]:
    assert findings["self"]["found"] == ["mem:channel_access_token", "mem:channel_secret"]   # the search works
    roles = {process["role"]: process for process in findings["processes"]}
    assert {"run", "receiver", "dispatcher", "ratelimiter", "statuspage"} <= set(roles), sorted(roles)
    leaks = {f"{p['role']}[{p['pid']}]": p["found"] for p in findings["processes"] if p["found"]}
    assert not leaks, leaks
    # those holding a secret (a value, or the dispatcher the token's descriptor) are closed to the
    # handler; the status page holds none and is open to it, so the search did reach into processes
    open_holders = [role for role in ("run", "receiver", "dispatcher", "ratelimiter")
                    if roles[role]["environ_read"] or roles[role]["descriptors_taken"]]
    assert not open_holders, findings
    assert roles["statuspage"]["mem_bytes_read"] > 0 and roles["statuspage"]["descriptors_taken"] > 0
    return roles


def test_a_handler_running_as_frontdesks_own_user_finds_no_secret_in_any_frontdesk_process(unprivileged, tmp_path):
    """frontdesk run as an unprivileged user, both secrets in its environment (as systemd's
    EnvironmentFile= gives them); its handler, as that same user, reads /proc/<pid>/environ,
    cmdline and mem and takes the descriptors of every process of the run (tests/handlers/snoop.py);
    again after the receiver and the rate limiter were killed and restarted with their secrets."""
    secret, token = f"secret-{uuid.uuid4().hex}", f"token-{uuid.uuid4().hex}"
    home = unprivileged.folder
    (home / "needles.json").write_text(json.dumps({"channel_secret": secret, "channel_access_token": token}))
    report, log = home / "report.json", tmp_path / "run.log"
    listen = f"127.0.0.1:{free_port()}"
    python = unprivileged.python
    with running_sandbox(tmp_path, secret=secret, token=token) as sandbox, open(log, "wb") as output:
        run = unprivileged.popen(
            [python, "-m", "frontdesk", "run", "--store", f"sqlite:///{home / 'fd.db'}", "--listen", listen,
             "--admin-listen", f"127.0.0.1:{free_port()}", "--handler", f"{python} -m tests.handlers.snoop",
             "--handlers", "1", "--set", f"api_base={sandbox.url}", "--set", f"api_data_base={sandbox.url}",
             "--set", "restart_backoff_max_s=0.5"],
            {"LINE_CHANNEL_SECRET": secret, "LINE_CHANNEL_ACCESS_TOKEN": token, "PYTHONUNBUFFERED": "1",
             "FD_TEST_NEEDLES": str(home / "needles.json"), "FD_TEST_REPORT": str(report)},
            stdout=output, stderr=subprocess.STDOUT)
        try:
            first = _roles(_scan(run, sandbox, listen, secret, report, log))
            for role in ("receiver", "ratelimiter"):
                os.kill(first[role]["pid"], signal.SIGKILL)
            again = _roles(_scan(run, sandbox, listen, secret, report, log))
            assert again["receiver"]["pid"] != first["receiver"]["pid"]
            assert again["ratelimiter"]["pid"] != first["ratelimiter"]["pid"]
        finally:
            run.send_signal(signal.SIGINT)
            try:
                assert run.wait(timeout=60) == 0, log.read_text()
            except subprocess.TimeoutExpired:
                run.kill()
                run.wait()
                raise
