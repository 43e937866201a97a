"""The channel access token API of a real `frontdesk sandbox` process, driven by the official SDK
(line-bot-sdk v3's ChannelAccessToken) as a bot would: a key registered, tokens of every kind
issued from a test key or the channel secret, used on the Messaging API, verified, listed,
revoked, and refused with LINE's 401 once expired or revoked."""
from __future__ import annotations

import json

import pytest
import requests

from tests.assertions import ASSERTION_TYPE, assertion, new_private_key, public_jwk
from tests.helpers import wait_until
from tests.sandbox_harness import SECRET, running_sandbox

oauth = pytest.importorskip("linebot.v3.oauth")

CHANNEL = "1600000000"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    with running_sandbox(tmp_path_factory.mktemp("tokens"), channel_id=CHANNEL) as running:
        yield running


@pytest.fixture(scope="module")
def key():
    return new_private_key()


@pytest.fixture(scope="module")
def kid(sandbox, key):
    registered = requests.post(f"{sandbox.url}/sandbox/channel/keys", json=public_jwk(key), timeout=10)
    assert registered.status_code == 200, registered.text
    return registered.json()["kid"]


@pytest.fixture
def tokens(sandbox):
    client = oauth.ApiClient(oauth.Configuration())
    api = oauth.ChannelAccessToken(client)
    api.line_base_path = sandbox.url
    yield api
    client.close()


def bot_info(sandbox, token: str) -> requests.Response:
    return requests.get(f"{sandbox.url}/v2/bot/info", headers={"Authorization": f"Bearer {token}"}, timeout=10)


def refusal(call) -> tuple[int, dict]:
    with pytest.raises(oauth.ApiException) as refused:
        call()
    return refused.value.status, json.loads(refused.value.body)


def test_a_stateless_token_from_the_channel_secret_and_one_from_a_test_key(sandbox, tokens, key, kid):
    by_secret = tokens.issue_stateless_channel_token_by_client_secret(CHANNEL, SECRET)
    assert (by_secret.token_type, by_secret.expires_in) == ("Bearer", 900)
    by_key = tokens.issue_stateless_channel_token_by_jwt_assertion(assertion(key, kid, CHANNEL))
    for token in (by_secret.access_token, by_key.access_token):
        answer = bot_info(sandbox, token)
        assert answer.status_code == 200 and answer.json()["basicId"] == "@frontdesk"
    assert refusal(lambda: tokens.issue_stateless_channel_token_by_client_secret(CHANNEL, "wrong")) == (
        400, {"error": "invalid_request", "error_description": "Invalid 'client_credentials'."})


def test_a_v21_token_is_issued_verified_listed_and_revoked(sandbox, tokens, key, kid):
    issued = tokens.issue_channel_token_by_jwt("client_credentials", ASSERTION_TYPE,
                                               assertion(key, kid, CHANNEL, token_exp=7 * 86400))
    assert issued.expires_in == 7 * 86400 and issued.token_type == "Bearer"
    assert bot_info(sandbox, issued.access_token).status_code == 200
    verified = tokens.verify_channel_token_by_jwt(issued.access_token)
    assert verified.client_id == CHANNEL and 7 * 86400 - 60 < verified.expires_in <= 7 * 86400
    assert issued.key_id in tokens.gets_all_valid_channel_access_token_key_ids(
        ASSERTION_TYPE, assertion(key, kid, CHANNEL)).kids
    tokens.revoke_channel_token_by_jwt(CHANNEL, SECRET, issued.access_token)
    refused = bot_info(sandbox, issued.access_token)
    assert refused.status_code == 401 and refused.json() == {
        "message": "Authentication failed. Confirm that the access token in the authorization header is valid."}
    assert issued.key_id not in tokens.gets_all_valid_channel_access_token_key_ids(
        ASSERTION_TYPE, assertion(key, kid, CHANNEL)).kids


def test_a_v21_token_is_refused_once_expired(sandbox, tokens, key, kid):
    issued = tokens.issue_channel_token_by_jwt("client_credentials", ASSERTION_TYPE,
                                               assertion(key, kid, CHANNEL, token_exp=1))
    wait_until(lambda: bot_info(sandbox, issued.access_token).status_code == 401, timeout=15,
               message="the one-second token refused")
    assert refusal(lambda: tokens.verify_channel_token_by_jwt(issued.access_token)) == (
        400, {"error": "invalid_request", "error_description": "The access token expired"})


def test_assertions_breaking_lines_rules_are_refused_as_line_refuses_them(tokens, key, kid):
    def issue(text):
        return lambda: tokens.issue_channel_token_by_jwt("client_credentials", ASSERTION_TYPE, text)
    assert refusal(issue(assertion(key, kid, "1111111111", token_exp=60))) == (
        400, {"error": "invalid_client", "error_description": "iss and clientId of key do not match"})
    assert refusal(issue(assertion(key, kid, CHANNEL, token_exp=60, exp=2_000_000_000_000))) == (
        400, {"error": "invalid_client", "error_description": "Invalid exp"})
    assert refusal(issue(assertion(new_private_key(), "unregistered", CHANNEL, token_exp=60))) == (
        404, {"message": "Cannot find channel key that satisfies the conditions"})


def test_a_short_lived_token_lives_until_revoked(sandbox, tokens):
    issued = tokens.issue_channel_token("client_credentials", CHANNEL, SECRET)
    assert issued.expires_in == 30 * 86400
    assert bot_info(sandbox, issued.access_token).status_code == 200
    assert tokens.verify_channel_token(issued.access_token).client_id == CHANNEL
    tokens.revoke_channel_token(issued.access_token)
    assert bot_info(sandbox, issued.access_token).status_code == 401
    assert refusal(lambda: tokens.verify_channel_token(issued.access_token)) == (
        400, {"error": "invalid_request", "error_description": "access_token invalid"})
