"""Channel access tokens the rate limiter issues, renews and revokes itself (docs/tokens.md),
through real processes: `frontdesk run` against a `frontdesk sandbox` whose stateless tokens live
a few seconds, the bundled echo bot answering signed webhooks while the token is renewed under it.
The tokens the sandbox issued are then looked for where none may be: the log of every process,
every process's environment, the store's files."""
from __future__ import annotations

import contextlib
import glob
import json
import os
import signal
import subprocess
import sys

import pytest
import requests

from frontdesk.sandbox.webhooks import EventFactory, post_webhook, user_id, user_source
from tests.assertions import ASSERTION_TYPE, assertion, new_private_key, private_jwk, public_jwk
from tests.helpers import free_port, wait_until
from tests.sandbox_harness import SECRET, running_sandbox
from tests.test_webhooks import accepting

CHANNEL = "1600000042"
LIFETIME_S = 4            # the sandbox's stateless tokens: renewed at 80 %, every 3.2 s


@contextlib.contextmanager
def running_frontdesk(tmp_path, sandbox, environ: dict | None = None, **settings):
    """`frontdesk run` (echo bot) with the sandbox as LINE: (webhook URL, the run's process, its log)."""
    listen = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRONTDESK_", "LINE_"))}
    env.update({"FRONTDESK_LISTEN": listen, "FRONTDESK_ADMIN_LISTEN": "",
                "FRONTDESK_STORE": f"sqlite:///{tmp_path / 'frontdesk.db'}", "FRONTDESK_API_BASE": sandbox.url,
                "FRONTDESK_API_DATA_BASE": sandbox.url, "FRONTDESK_CHANNEL_ID": CHANNEL,
                "FRONTDESK_HANDLERS": "1", "LINE_CHANNEL_SECRET": SECRET,
                **{f"FRONTDESK_{name.upper()}": str(value) for name, value in settings.items()}, **(environ or {})})
    log_path = tmp_path / "run.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "frontdesk", "run"], env=env, cwd=tmp_path,
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: process.poll() is not None or accepting(listen), timeout=30,
                   message="frontdesk run listening")
        assert process.poll() is None, log_path.read_text(errors="replace")
        yield f"http://{listen}/callback", process, log_path
    finally:
        stop(process)


def stop(process) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def bench(url: str, sandbox, count: int, rate: float) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRONTDESK_", "LINE_"))}
    done = subprocess.run([sys.executable, "-m", "frontdesk", "bench", "--json", "--url", url, "--sandbox-url",
                           sandbox.url, "--count", str(count), "--rate", str(rate), "--users", "5", "--settle", "60"],
                          env={**env, "LINE_CHANNEL_SECRET": SECRET}, capture_output=True, text=True, timeout=180)
    assert done.stdout, done.stderr
    return json.loads(done.stdout)


def issued_tokens(sandbox) -> list[dict]:
    return requests.get(f"{sandbox.url}/sandbox/channel/tokens", timeout=10).json()["tokens"]


def descendants(pid: int) -> list[int]:
    children = []
    for path in glob.glob(f"/proc/{pid}/task/*/children"):
        with open(path) as f:
            children += [int(child) for child in f.read().split()]
    return [pid for child in children for pid in (child, *descendants(child))]


def environments(pid: int) -> bytes:
    """The environment of `pid` and of every process under it (all run as this user)."""
    found = b""
    for each in (pid, *descendants(pid)):
        with contextlib.suppress(OSError):
            with open(f"/proc/{each}/environ", "rb") as f:
                found += f.read()
    return found


def assert_nowhere(tokens: list[str], *places: bytes) -> None:
    for token in tokens:
        assert all(token.encode() not in place for place in places), "an issued token leaked"


def store_bytes(tmp_path) -> bytes:
    return b"".join(open(path, "rb").read() for path in glob.glob(str(tmp_path / "frontdesk.db*"))
                    if os.path.isfile(path))


def log_lines(log_path, event: str) -> list[str]:
    return [line for line in log_path.read_text(errors="replace").splitlines() if f"event={event} " in line]


def test_a_stateless_token_is_issued_used_renewed_before_expiry_and_never_leaves_the_rate_limiter(tmp_path):
    with running_sandbox(tmp_path, channel_id=CHANNEL, token="the-fixed-token-is-not-used",
                         sandbox_stateless_token_s=LIFETIME_S) as sandbox:
        with running_frontdesk(tmp_path, sandbox, token_source="stateless") as (url, process, log_path):
            report = bench(url, sandbox, count=40, rate=5)    # 8 s: over two lifetimes of a token
            wait_until(lambda: len(log_lines(log_path, "token_issued")) >= 3, timeout=30,
                       message="three stateless tokens issued")
            environ = environments(process.pid)
            tokens = [entry["access_token"] for entry in issued_tokens(sandbox)]
        calls = sandbox.stats()["calls"]
    assert report["sent"] == report["delivered"] == 40 and report["lost"] == report["duplicates"] == 0, report
    assert calls["reply"] == {"200": 40}, calls    # every reply accepted: no 401 while tokens were renewed
    assert len(tokens) >= 3
    issued = log_lines(log_path, "token_issued")
    assert all(f"source=stateless expires_in_s={LIFETIME_S} renew_in_s=3" in line for line in issued), issued
    assert log_lines(log_path, "token_not_revoked") and not log_lines(log_path, "token_issue_failed")
    assert_nowhere(tokens, log_path.read_bytes(), environ, store_bytes(tmp_path))


def test_a_v21_token_from_a_test_key_is_used_and_revoked_on_a_clean_stop(tmp_path):
    key = new_private_key()
    key_file = tmp_path / "assertion-key.jwk"
    key_file.write_text(json.dumps(private_jwk(key)))
    key_file.chmod(0o600)
    with running_sandbox(tmp_path, channel_id=CHANNEL, token="the-fixed-token-is-not-used") as sandbox:
        kid = requests.post(f"{sandbox.url}/sandbox/channel/keys", json=public_jwk(key), timeout=10).json()["kid"]
        with running_frontdesk(tmp_path, sandbox, token_source="v2.1", channel_key_id=kid,
                               token_lifetime_s=3600,
                               environ={"LINE_CHANNEL_PRIVATE_KEY_FILE": str(key_file)}) as (url, process, log_path):
            report = bench(url, sandbox, count=10, rate=10)
            environ = environments(process.pid)
            valid_kids = requests.get(f"{sandbox.url}/oauth2/v2.1/tokens/kid", timeout=10, params={
                "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion(key, kid, CHANNEL)}).json()
            stop(process)
        tokens = issued_tokens(sandbox)
        after = requests.get(f"{sandbox.url}/oauth2/v2.1/tokens/kid", timeout=10, params={
            "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion(key, kid, CHANNEL)}).json()
        calls = sandbox.stats()["calls"]
    assert report["delivered"] == 10 and calls["reply"] == {"200": 10}, (report, calls)
    assert len(tokens) == 1 and len(valid_kids["kids"]) == 1 and after["kids"] == []
    assert tokens[0]["valid"] is False                          # revoked on the clean stop
    assert log_lines(log_path, "token_revoked") and "source=v2.1 expires_in_s=3600" in log_path.read_text()
    assert_nowhere([tokens[0]["access_token"]], log_path.read_bytes(), environ, store_bytes(tmp_path))
    assert key_file.read_text().encode() not in environ


def test_a_key_that_is_not_a_jwk_stops_frontdesk_run_naming_the_setting(tmp_path):
    (tmp_path / "key").write_text("-----BEGIN PRIVATE KEY-----\nnot a jwk\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRONTDESK_", "LINE_"))}
    done = subprocess.run([sys.executable, "-m", "frontdesk", "run", "--sandbox"], cwd=tmp_path, timeout=60,
                          env={**env, "FRONTDESK_TOKEN_SOURCE": "v2.1", "FRONTDESK_CHANNEL_KEY_ID": "kid",
                               "LINE_CHANNEL_PRIVATE_KEY_FILE": str(tmp_path / "key")},
                          capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "channel_private_key is not an RSA private key as a JWK" in done.stderr
    assert "not a jwk" not in done.stderr


def test_a_token_revoked_behind_frontdesks_back_is_replaced_at_the_first_401(tmp_path):
    key = new_private_key()
    key_file = tmp_path / "assertion-key.jwk"
    key_file.write_text(json.dumps(private_jwk(key)))
    factory = EventFactory(SECRET)
    with running_sandbox(tmp_path, channel_id=CHANNEL, token="the-fixed-token-is-not-used") as sandbox:
        kid = requests.post(f"{sandbox.url}/sandbox/channel/keys", json=public_jwk(key), timeout=10).json()["kid"]
        with running_frontdesk(tmp_path, sandbox, token_source="v2.1", channel_key_id=kid, token_lifetime_s=3600,
                               environ={"LINE_CHANNEL_PRIVATE_KEY_FILE": str(key_file)}) as (url, _, log_path):
            wait_until(lambda: issued_tokens(sandbox), timeout=30, message="the first token issued")
            [first] = issued_tokens(sandbox)
            revoked = requests.post(f"{sandbox.url}/oauth2/v2.1/revoke", timeout=10, data={
                "client_id": CHANNEL, "client_secret": SECRET, "access_token": first["access_token"]})
            assert revoked.status_code == 200

            def answered() -> bool:   # each event's reply: refused (401) until the token is replaced
                body = factory.body([factory.event("text", user_source(user_id(1)))])
                assert post_webhook(url, SECRET, body) == 200
                return sandbox.stats()["calls"].get("reply", {}).get("200", 0) > 0
            wait_until(answered, timeout=60, interval=1.0, message="a reply accepted after the revocation")
            calls = sandbox.stats()["calls"]
        tokens = issued_tokens(sandbox)
    # the echo bot's first call (profile, else reply) refused with the revoked token; then replies go
    assert sum(by_status.get("401", 0) for by_status in calls.values()) >= 1 and calls["reply"]["200"] >= 1, calls
    assert len(tokens) == 2 and tokens[0]["valid"] is False and tokens[1]["valid"] is False   # revoked at the stop
    refused = log_lines(log_path, "token_refused")
    assert refused and "source=v2.1 action=renew_now" in refused[0]
