"""The sandbox's app in-process (falcon's test client): the token API's routes as LINE answers them,
the Messaging API opened by issued tokens only while they live, the webhook settings, and the
month's target limit and consumption as LINE counts them."""
from __future__ import annotations

import email.utils
import time
import urllib.parse

import pytest

from frontdesk.protocol import config
from frontdesk.sandbox.app import create_app
from frontdesk.sandbox.statistics import jst_month
from frontdesk.sandbox.webhooks import user_id

testing = pytest.importorskip("falcon.testing")

SECRET, TOKEN, CHANNEL = "unit-secret", "unit-token", "1234567890"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
TEXT = [{"type": "text", "text": "hi"}]
U1, U2 = user_id(1), user_id(2)


@pytest.fixture
def client():
    settings = config.load(environ={}).replace(channel_id=CHANNEL, public_url="https://bot.example.com/callback")
    return testing.TestClient(create_app(settings, SECRET, TOKEN))


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


# --- the token API over HTTP

def test_a_stateless_token_by_id_and_secret_opens_the_messaging_api(client):
    issued = client.simulate_post("/oauth2/v3/token", headers=FORM, body=(
        f"grant_type=client_credentials&client_id={CHANNEL}&client_secret={SECRET}"))
    assert issued.status_code == 200 and issued.json["token_type"] == "Bearer" and issued.json["expires_in"] == 900
    assert client.simulate_get("/v2/bot/info", headers=bearer(issued.json["access_token"])).status_code == 200
    refused = client.simulate_get("/v2/bot/info", headers=bearer(issued.json["access_token"] + "x"))
    assert refused.status_code == 401 and refused.json["message"].startswith("Authentication failed")


@pytest.mark.parametrize("path, body, headers, answer", [
    ("/oauth2/v3/token", f"grant_type=client_credentials&client_id={CHANNEL}&client_secret=wrong", FORM,
     {"error": "invalid_request", "error_description": "Invalid 'client_credentials'."}),
    ("/v2/oauth/accessToken", "grant_type=client_credentials&client_id=42&client_secret=x", FORM,
     {"error": "invalid_client", "error_description": "invalid client_id"}),
    ("/v2/oauth/accessToken", f"grant_type=client_credentials&client_id={CHANNEL}&client_secret=x", FORM,
     {"error": "invalid_client", "error_description": "invalid client_secret"}),
    ("/v2/oauth/accessToken", f"client_id={CHANNEL}&client_secret={SECRET}", FORM,
     {"error": "invalid_request",
      "error_description": "some parameters missed or invalid: grant_type must be client_credentials"}),
    ("/oauth2/v2.1/token", "grant_type=client_credentials&client_assertion_type=urn:x&client_assertion=a.b.c", FORM,
     {"error": "invalid_request", "error_description": "some parameters missed or invalid: client_assertion_type "
                                                       "must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}),
    ("/oauth2/v2.1/token", "grant_type=client_credentials", FORM,
     {"error": "invalid_request",
      "error_description": "some parameters missed or invalid: client_assertion_type, client_assertion"}),
    ("/oauth2/v3/token", '{"grant_type": "client_credentials"}', {"Content-Type": "application/json"},
     {"error": "invalid_request", "error_description": "Content-Type must be application/x-www-form-urlencoded"}),
    ("/oauth2/v2.1/revoke", f"client_id={CHANNEL}&client_secret={SECRET}&access_token=opaque", FORM,
     {"error": "invalid_request", "error_description": "The access token not JWS"}),
    ("/v2/oauth/revoke", "access_token=", FORM, {"error": "invalid_request"}),
    ("/v2/oauth/verify", "access_token=a.b.c", FORM,
     {"error": "invalid_request", "error_description": "access_token in invalid format"}),
])
def test_bad_requests_get_lines_oauth_errors(client, path, body, headers, answer):
    refused = client.simulate_post(path, headers=headers, body=body)
    assert (refused.status_code, refused.json) == (400, answer)


def test_the_fixed_token_revoked_through_the_api_opens_nothing_more(client):
    assert client.simulate_get("/v2/bot/info", headers=AUTH).status_code == 200
    verified = client.simulate_post("/v2/oauth/verify", headers=FORM, body=f"access_token={TOKEN}")
    assert verified.json["client_id"] == CHANNEL
    revoked = client.simulate_post("/v2/oauth/revoke", headers=FORM, body=f"access_token={TOKEN}")
    assert revoked.status_code == 200 and revoked.content == b""
    assert client.simulate_get("/v2/bot/info", headers=AUTH).status_code == 401


def test_a_short_lived_token_verifies_and_is_revoked(client):
    issued = client.simulate_post("/v2/oauth/accessToken", headers=FORM, body=(
        f"grant_type=client_credentials&client_id={CHANNEL}&client_secret={SECRET}")).json
    token = issued["access_token"]
    assert issued["expires_in"] == 30 * 86400 and len(token) == 172
    form = urllib.parse.urlencode({"access_token": token})   # + and / in it: the form must encode them
    verified = client.simulate_post("/v2/oauth/verify", headers=FORM, body=form).json
    assert verified["client_id"] == CHANNEL and verified["scope"] == "P CM"
    assert 30 * 86400 - 60 < verified["expires_in"] <= 30 * 86400
    assert client.simulate_get("/v2/bot/info", headers=bearer(token)).status_code == 200
    assert client.simulate_post("/v2/oauth/revoke", headers=FORM, body=form).status_code == 200
    assert client.simulate_get("/v2/bot/info", headers=bearer(token)).status_code == 401


def test_a_public_key_is_registered_or_refused_naming_why(client):
    pytest.importorskip("cryptography")
    from tests.assertions import new_private_key, public_jwk
    key = new_private_key()
    registered = client.simulate_post("/sandbox/channel/keys", json=public_jwk(key))
    assert registered.status_code == 200 and registered.json["kid"]
    assert client.simulate_get("/sandbox/channel").json["assertion_kids"] == [registered.json["kid"]]
    refused = client.simulate_post("/sandbox/channel/keys", json={**public_jwk(key), "kid": "x"})
    assert refused.status_code == 400
    assert refused.json["message"].startswith("Invalid public key: the key must have no kid")


# --- the webhook endpoint

def test_the_webhook_endpoint_starts_at_public_url_and_put_leaves_use_webhook_alone(client):
    assert client.simulate_get("/v2/bot/channel/webhook/endpoint", headers=AUTH).json == {
        "endpoint": "https://bot.example.com/callback", "active": True}
    assert client.simulate_put("/sandbox/channel", json={"webhook_active": False}).json["webhook"]["active"] is False
    client.simulate_put("/v2/bot/channel/webhook/endpoint", headers=AUTH,
                        json={"endpoint": "https://new.example.com/x"})
    assert client.simulate_get("/v2/bot/channel/webhook/endpoint", headers=AUTH).json == {
        "endpoint": "https://new.example.com/x", "active": False}


def test_no_webhook_endpoint_is_lines_404_and_a_bad_one_lines_400(client):
    client.simulate_put("/sandbox/channel", json={"webhook_endpoint": None})
    for answer in (client.simulate_get("/v2/bot/channel/webhook/endpoint", headers=AUTH),
                   client.simulate_post("/v2/bot/channel/webhook/test", headers=AUTH, json={})):
        assert (answer.status_code, answer.json) == (404, {"message": "Webhook endpoint not found"})
    bad = client.simulate_put("/v2/bot/channel/webhook/endpoint", headers=AUTH, json={"endpoint": "ftp://x/y"})
    assert bad.status_code == 400 and bad.json["message"] == "Invalid webhook endpoint URL"


def test_channel_settings_refuse_what_they_do_not_know(client):
    refused = client.simulate_put("/sandbox/channel", json={"quota": -1, "webhook_active": "yes", "colour": 1})
    assert refused.status_code == 400
    assert {d["property"] for d in refused.json["details"]} == {"quota", "webhook_active", "colour"}


# --- the month's target limit and consumption

def test_a_push_past_the_target_limit_is_lines_429_and_sends_nothing(client):
    assert client.simulate_get("/v2/bot/message/quota", headers=AUTH).json == {"type": "none"}
    client.simulate_put("/sandbox/channel", json={"quota": 3, "sent_by_manager": 1})
    assert client.simulate_get("/v2/bot/message/quota", headers=AUTH).json == {"type": "limited", "value": 3}
    consumption = lambda: client.simulate_get("/v2/bot/message/quota/consumption", headers=AUTH).json["totalUsage"]
    assert consumption() == 1
    assert client.simulate_post("/v2/bot/message/multicast", headers=AUTH,
                                json={"to": [U1, U2], "messages": TEXT * 2}).status_code == 200
    assert consumption() == 3    # once per recipient, whatever the number of message objects
    over = client.simulate_post("/v2/bot/message/push", headers=AUTH, json={"to": U1, "messages": TEXT})
    assert (over.status_code, over.json) == (429, {"message": "You have reached your monthly limit."})
    assert consumption() == 3 and len(client.simulate_get("/sandbox/deliveries").json) == 1
    client.simulate_put("/sandbox/channel", json={"quota": None})
    assert client.simulate_post("/v2/bot/message/push", headers=AUTH,
                                json={"to": U1, "messages": TEXT}).status_code == 200


def test_a_push_to_a_group_counts_once_per_member(client):
    group = "C" + "1" * 32
    members = client.simulate_get(f"/v2/bot/group/{group}/members/count", headers=AUTH).json["count"]
    assert members >= 2
    assert client.simulate_post("/v2/bot/message/push", headers=AUTH,
                                json={"to": group, "messages": TEXT * 3}).status_code == 200
    assert client.simulate_get("/v2/bot/message/quota/consumption", headers=AUTH).json["totalUsage"] == members


def test_the_quota_month_is_japans_calendar_month():
    # 2026-01-31 15:00 UTC is already February 1st in Japan
    end_of_january = 1_769_871_600_000 - 1
    assert jst_month(end_of_january) + 1 == jst_month(end_of_january + 1)
    assert jst_month(1_769_871_600_000) == (2026 - 1970) * 12 + 1


def test_api_answers_carry_a_date_header(client):
    answer = client.simulate_get("/v2/bot/info", headers=AUTH)
    assert abs(email.utils.parsedate_to_datetime(answer.headers["Date"]).timestamp() - time.time()) < 5
