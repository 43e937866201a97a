"""Least privilege (issue 14, defect 11): store files only their owner reads, secrets from files
so they need be in no environment, handlers without secrets and, when frontdesk starts as root,
as another user."""
from __future__ import annotations

import glob
import os
import pwd
import stat
import subprocess
import sys

import pytest

from frontdesk.protocol.config import ConfigError, load
from frontdesk.store import open_store
from tests.helpers import wait_until
from tests.test_receiver import SECRET, Receiver, make_body, make_event

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


def test_secrets_are_read_from_files_and_children_get_the_path_not_the_value(tmp_path):
    (tmp_path / "secret").write_text("from-a-file\n")
    (tmp_path / "credentials").mkdir()
    (tmp_path / "credentials" / "line-channel-access-token").write_text("a-token")
    settings = load(environ={"LINE_CHANNEL_SECRET_FILE": str(tmp_path / "secret"),
                             "CREDENTIALS_DIRECTORY": str(tmp_path / "credentials")}, config_file=os.devnull)
    assert settings.channel_secret == "from-a-file" and settings.channel_access_token == "a-token"
    assert settings.source("channel_access_token") == "systemd credential line-channel-access-token"
    environ = settings.to_environ()
    assert "from-a-file" not in environ.values() and "a-token" not in environ.values()
    assert environ["LINE_CHANNEL_SECRET_FILE"] == str(tmp_path / "secret")
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
