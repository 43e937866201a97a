"""`frontdesk doctor` through real processes: green against a healthy `frontdesk run --sandbox`
(LINE's webhook test included); against a sandbox with one planted fault, exit 1 and exactly one
PROBLEM line, naming that fault and its fix."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import requests

from frontdesk.sandbox.webhooks import user_id
from tests.helpers import free_port, wait_until
from tests.sandbox_harness import SECRET, TOKEN, running_sandbox
from tests.test_webhooks import running_system

PUBLIC_URL = "https://bot.example.com/callback"
CHANNEL = "1700000000"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def doctor(env: dict, cwd, *args: str) -> tuple[int, list[str]]:
    done = subprocess.run([sys.executable, "-m", "frontdesk", "doctor", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120)
    assert not done.stderr, done.stderr
    return done.returncode, done.stdout.splitlines()


def problems(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("PROBLEM")]


def test_green_on_a_healthy_frontdesk_run_sandbox_with_the_webhook_test(tmp_path):
    with running_system(tmp_path) as (_, _, env):
        status, lines = doctor(env, tmp_path, "--sandbox", "--test-webhook")
    assert status == 0, "\n".join(lines)
    checks = [line.split()[1] for line in lines[1:-1]]
    assert checks == ["credentials", "token", "webhook", "webhook", "quota", "clock", "store"]
    assert all(line.startswith("ok") for line in lines[1:-1]), "\n".join(lines)
    assert "test webhook" in lines[4] and "got 200" in lines[4]
    assert lines[-1] == "frontdesk doctor: all 7 checks passed"


# --- one planted fault at a time, against a standalone sandbox

@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    with running_sandbox(tmp_path_factory.mktemp("doctor"), channel_id=CHANNEL, public_url=PUBLIC_URL) as running:
        yield running


@pytest.fixture
def env(sandbox, tmp_path):
    """A healthy channel (counters reset, webhook on and at PUBLIC_URL, no target limit) and the
    environment of a frontdesk configured for it."""
    requests.delete(f"{sandbox.url}/sandbox/deliveries", timeout=10).raise_for_status()
    requests.put(f"{sandbox.url}/sandbox/channel", timeout=10, json={
        "webhook_active": True, "webhook_endpoint": PUBLIC_URL, "quota": None, "sent_by_manager": 0}).raise_for_status()
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("FRONTDESK_", "LINE_"))}
    environ.update({"FRONTDESK_API_BASE": sandbox.url, "LINE_CHANNEL_ACCESS_TOKEN": TOKEN,
                    "LINE_CHANNEL_SECRET": SECRET, "FRONTDESK_CHANNEL_ID": CHANNEL,
                    "FRONTDESK_PUBLIC_URL": PUBLIC_URL, "FRONTDESK_STORE": f"sqlite:///{tmp_path / 'f.db'}"})
    return environ


def test_the_planted_faults_healthy_baseline_is_green(env, tmp_path):
    status, lines = doctor(env, tmp_path)
    assert status == 0 and problems(lines) == [], "\n".join(lines)


def test_a_wrong_token(env, tmp_path):
    status, lines = doctor({**env, "LINE_CHANNEL_ACCESS_TOKEN": "not-this-channels-token"}, tmp_path)
    assert status == 1 and problems(lines) == [
        "PROBLEM  credentials  LINE refuses the channel access token (401: access_token in invalid format): issue a "
        "new one (LINE Developers Console, Messaging API tab) and set LINE_CHANNEL_ACCESS_TOKEN"]
    assert [line.split()[0] for line in lines if line.split()[1] in ("webhook", "quota")] == ["skipped", "skipped"]


def test_webhook_use_switched_off(sandbox, env, tmp_path):
    requests.put(f"{sandbox.url}/sandbox/channel", json={"webhook_active": False}, timeout=10).raise_for_status()
    status, lines = doctor(env, tmp_path)
    assert status == 1 and problems(lines) == [
        f'PROBLEM  webhook      "Use webhook" is off, so LINE sends no events to {PUBLIC_URL}: turn it on (LINE '
        'Developers Console, Messaging API tab, Webhook settings)']


def test_a_webhook_url_that_is_not_public_url(sandbox, env, tmp_path):
    old = "https://old-tunnel.example.com/callback"
    set_url = requests.put(f"{sandbox.url}/v2/bot/channel/webhook/endpoint", json={"endpoint": old}, headers=AUTH,
                           timeout=10)
    assert set_url.status_code == 200
    status, lines = doctor(env, tmp_path)
    assert status == 1 and problems(lines) == [
        f"PROBLEM  webhook      LINE sends webhooks to {old}, not to public_url {PUBLIC_URL}: set the Webhook URL to "
        f"{PUBLIC_URL} (LINE Developers Console, Messaging API tab), or correct public_url"]


def test_no_webhook_url_at_all(sandbox, env, tmp_path):
    requests.put(f"{sandbox.url}/sandbox/channel", json={"webhook_endpoint": None}, timeout=10).raise_for_status()
    status, lines = doctor(env, tmp_path)
    assert status == 1 and problems(lines) == [
        f"PROBLEM  webhook      the channel has no webhook URL: set it to {PUBLIC_URL} (LINE Developers Console, "
        "Messaging API tab, Webhook URL)"]


def test_the_months_quota_nearly_spent_by_real_pushes(sandbox, env, tmp_path):
    requests.put(f"{sandbox.url}/sandbox/channel", json={"quota": 10}, timeout=10).raise_for_status()
    for count in (5, 4):   # LINE counts each recipient once, whatever the message objects
        pushed = requests.post(f"{sandbox.url}/v2/bot/message/multicast", headers=AUTH, timeout=10, json={
            "to": [user_id(n) for n in range(count)], "messages": [{"type": "text", "text": "sale"}] * 2})
        assert pushed.status_code == 200
    status, lines = doctor(env, tmp_path)
    assert status == 1 and problems(lines) == [
        "PROBLEM  quota        9 of this month's 10 messages used (90%): pushes past the limit are refused (429 "
        '"You have reached your monthly limit."); raise the target limit in LINE Official Account Manager, or push '
        "less (replies are free)"]


def test_a_token_about_to_expire(sandbox, env, tmp_path):
    stateless = requests.post(f"{sandbox.url}/oauth2/v3/token", timeout=10, data={
        "grant_type": "client_credentials", "client_id": CHANNEL, "client_secret": SECRET})
    status, lines = doctor({**env, "LINE_CHANNEL_ACCESS_TOKEN": stateless.json()["access_token"]}, tmp_path)
    assert status == 1 and problems(lines) == [
        "PROBLEM  token        the token expires in 15 minutes: issue a new one (LINE Developers Console, Messaging "
        "API tab, or the channel access token API) before then"]


def test_an_expired_token_is_named_expired(sandbox, env, tmp_path):
    from tests.assertions import ASSERTION_TYPE, assertion, new_private_key, public_jwk
    key = new_private_key()
    kid = requests.post(f"{sandbox.url}/sandbox/channel/keys", json=public_jwk(key), timeout=10).json()["kid"]
    issued = requests.post(f"{sandbox.url}/oauth2/v2.1/token", timeout=10, data={
        "grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion(key, kid, CHANNEL, token_exp=1)}).json()["access_token"]
    wait_until(lambda: requests.get(f"{sandbox.url}/v2/bot/info", headers={"Authorization": f"Bearer {issued}"},
                                    timeout=10).status_code == 401, timeout=15, message="the token expired")
    status, lines = doctor({**env, "LINE_CHANNEL_ACCESS_TOKEN": issued}, tmp_path)
    assert status == 1 and problems(lines) == [
        "PROBLEM  credentials  LINE refuses the channel access token (401: The access token expired): issue a new "
        "one (LINE Developers Console, Messaging API tab) and set LINE_CHANNEL_ACCESS_TOKEN"]


def test_the_token_of_another_channel(env, tmp_path):
    status, lines = doctor({**env, "FRONTDESK_CHANNEL_ID": "1999999999"}, tmp_path)
    assert status == 1 and problems(lines) == [
        f"PROBLEM  token        the token belongs to channel {CHANNEL}, not to channel_id 1999999999: use that "
        "channel's token, or correct channel_id"]


def test_a_receiver_that_does_not_answer_the_webhook_test(sandbox, env, tmp_path):
    nobody = f"http://127.0.0.1:{free_port()}/callback"
    requests.put(f"{sandbox.url}/sandbox/channel", json={"webhook_endpoint": nobody}, timeout=10).raise_for_status()
    status, lines = doctor({**env, "FRONTDESK_PUBLIC_URL": nobody}, tmp_path, "--test-webhook")
    assert status == 1 and problems(lines) == [
        f"PROBLEM  webhook test LINE's test webhook to {nobody} failed (COULD_NOT_CONNECT: no answer (connection "
        "failed or timed out)): check that the receiver runs and that this URL reaches it (TLS proxy, firewall, DNS)"]


def test_a_store_that_cannot_be_opened(env, tmp_path):
    (tmp_path / "not-a-folder").write_text("a file")
    status, lines = doctor({**env, "FRONTDESK_STORE": f"sqlite:///{tmp_path / 'not-a-folder' / 'f.db'}"}, tmp_path)
    assert status == 1 and len(problems(lines)) == 1
    assert problems(lines)[0].startswith(f"PROBLEM  store        cannot open sqlite:///{tmp_path}/not-a-folder/f.db (")
    assert problems(lines)[0].endswith("check store (FRONTDESK_STORE), and that this user may read and write it")


def test_line_out_of_reach(env, tmp_path):
    nowhere = f"http://127.0.0.1:{free_port()}"
    status, lines = doctor({**env, "FRONTDESK_API_BASE": nowhere}, tmp_path)
    assert status == 1 and problems(lines) == [
        f"PROBLEM  credentials  cannot reach {nowhere} ([Errno 111] Connection refused): check api_base and this "
        "machine's network or proxy"]


def test_a_stateless_token_source_is_checked_by_issuing_one_and_a_wrong_secret_is_named(sandbox, env, tmp_path):
    renewing = {**env, "FRONTDESK_TOKEN_SOURCE": "stateless", "LINE_CHANNEL_ACCESS_TOKEN": ""}
    status, lines = doctor(renewing, tmp_path)
    assert status == 0, "\n".join(lines)
    assert lines[1] == ("ok       token source a stateless token issued, for 15 minutes (frontdesk renews its own "
                        "before expiry)")
    assert lines[2].startswith("ok       credentials") and lines[3].startswith("ok       token")
    status, lines = doctor({**renewing, "LINE_CHANNEL_SECRET": "not-the-secret"}, tmp_path)
    assert status == 1 and problems(lines) == [
        "PROBLEM  token source LINE issues no stateless token (HTTP 400 invalid_request Invalid "
        "'client_credentials'.): check channel_id and the channel secret"]
    assert "not-the-secret" not in "\n".join(lines)
