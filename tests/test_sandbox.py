"""The sandbox LINE API over real HTTP: a `frontdesk sandbox` process per configuration."""
from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest
import requests

from frontdesk.sandbox.webhooks import (EventFactory, group_id, group_source, message_content, mint_reply_token,
                              user_id, user_source)
from tests.helpers import wait_until
from tests.sandbox_harness import AUTH, SECRET, api_session, running_sandbox

TEXT = [{"type": "text", "text": "hello"}]
U1, U2 = user_id(1), user_id(2)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    # Broadcast raised so several tests can use it; narrowcast keeps LINE's 60/h (one per burst).
    with running_sandbox(tmp_path_factory.mktemp("sandbox"), sandbox_reply_token_ttl_s=5,
                         sandbox_rate_limits="broadcast=100/s") as running:
        yield running


@pytest.fixture
def api(sandbox):
    with api_session(sandbox.url, timeout=5) as call:
        yield call


def deliveries_after(sandbox, mark: int) -> list[dict]:
    return sandbox.deliveries(since=mark)


def last_id(sandbox) -> int:
    return sandbox.stats()["last_delivery_id"]


# --- authentication and the common answer shape

def test_missing_or_wrong_bearer_token_is_401_in_lines_words(sandbox):
    url = sandbox.url + "/v2/bot/message/push"
    missing = requests.post(url, json={"to": U1, "messages": TEXT}, timeout=5)
    assert missing.status_code == 401
    assert missing.json()["message"].startswith("Authorization header required")
    wrong = requests.post(url, json={"to": U1, "messages": TEXT}, timeout=5,
                          headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401
    assert wrong.json() == {"message": "Authentication failed. Confirm that the access token in the "
                                       "authorization header is valid."}


def test_every_answer_carries_a_request_id(sandbox, api):
    answers = [api("POST", "/v2/bot/message/push", json={"to": U1, "messages": TEXT}),
               api("POST", "/v2/bot/message/push", json={}),
               api("GET", "/v2/bot/no/such/thing"),
               requests.get(sandbox.url + "/v2/bot/info", timeout=5),
               api("GET", "/sandbox/stats")]
    assert [a.status_code for a in answers] == [200, 400, 404, 401, 200]
    ids = [a.headers.get("X-Line-Request-Id") for a in answers]
    assert all(ids) and len(set(ids)) == len(ids)


def test_unknown_path_and_method_answer_in_lines_shape(api):
    missing = api("GET", "/v2/bot/no/such/thing")
    assert missing.status_code == 404 and missing.json() == {"message": "Not found"}
    wrong_method = api("GET", "/v2/bot/message/push")
    assert wrong_method.status_code == 405 and "message" in wrong_method.json()


# --- sending: push, multicast, broadcast, narrowcast

def test_push_answers_sent_messages_and_is_recorded(sandbox, api):
    mark = last_id(sandbox)
    answer = api("POST", "/v2/bot/message/push",
                 json={"to": U1, "messages": TEXT + [{"type": "sticker", "packageId": "446", "stickerId": "1988"}]})
    assert answer.status_code == 200
    sent = answer.json()["sentMessages"]
    assert len(sent) == 2 and all(m["id"] and m["quoteToken"] for m in sent)
    [delivery] = deliveries_after(sandbox, mark)
    assert delivery["endpoint"] == "push" and delivery["to"] == [U1]
    assert delivery["messages"][0] == TEXT[0]
    assert delivery["request_id"] == answer.headers["X-Line-Request-Id"]
    assert delivery["retry_key"] is None and delivery["source_event"] is None
    assert abs(delivery["time"] - time.time() * 1000) < 5000


def test_multicast_records_every_recipient(sandbox, api):
    mark = last_id(sandbox)
    recipients = [user_id(n) for n in range(500)]
    answer = api("POST", "/v2/bot/message/multicast", json={"to": recipients, "messages": TEXT})
    assert answer.status_code == 200 and answer.json() == {}
    [delivery] = deliveries_after(sandbox, mark)
    assert delivery["endpoint"] == "multicast" and delivery["to"] == recipients


def test_broadcast_and_narrowcast(sandbox, api):
    mark = last_id(sandbox)
    assert api("POST", "/v2/bot/message/broadcast", json={"messages": TEXT}).json() == {}
    narrow = api("POST", "/v2/bot/message/narrowcast",
                 json={"messages": TEXT, "limit": {"max": 10}})
    assert narrow.status_code == 202 and narrow.json() == {}
    broadcast, narrowcast = deliveries_after(sandbox, mark)
    assert (broadcast["endpoint"], broadcast["to"]) == ("broadcast", [])
    assert narrowcast["audience"] == {"limit": {"max": 10}}
    # the progress moves forward through waiting, sending, succeeded
    order = ["waiting", "sending", "succeeded"]
    seen = []

    def progressed():
        seen.append(api("GET", "/v2/bot/message/progress/narrowcast",
                        params={"requestId": narrow.headers["X-Line-Request-Id"]}).json())
        return seen[-1]["phase"] == "succeeded"
    wait_until(progressed, timeout=10, message="narrowcast succeeded")
    phases = [order.index(p["phase"]) for p in seen]
    assert phases == sorted(phases)
    done = seen[-1]
    assert done["successCount"] == done["targetCount"] == 10 and done["failureCount"] == 0
    unknown = api("GET", "/v2/bot/message/progress/narrowcast", params={"requestId": str(uuid.uuid4())})
    assert unknown.status_code == 404
    # LINE's figure for narrowcast is 60 per hour: an hour's worth may come at once, not more.
    more = [api("POST", "/v2/bot/message/narrowcast", json={"messages": TEXT}).status_code for _ in range(60)]
    assert more == [202] * 59 + [429]
    assert done["acceptedTime"] < done["completedTime"]


# --- validation, as LINE does it

LONG = "x" * 5001
VALIDATION_CASES = [
    ("push", {"messages": TEXT}, "to", "must be specified"),
    ("push", {"to": "someone", "messages": TEXT}, "to", "must be a user, group or room ID"),
    ("push", {"to": U1}, "messages", "must be specified"),
    ("push", {"to": U1, "messages": []}, "messages", "Size must be between 1 and 5"),
    ("push", {"to": U1, "messages": TEXT * 6}, "messages", "Size must be between 1 and 5"),
    ("push", {"to": U1, "messages": [{"type": "text", "text": LONG}]}, "messages[0].text",
     "Length must be between 0 and 5000"),
    ("push", {"to": U1, "messages": [{"type": "text", "text": "😀" * 2501}]}, "messages[0].text",
     "Length must be between 0 and 5000"),
    ("push", {"to": U1, "messages": [{"type": "text", "text": ""}]}, "messages[0].text", "May not be empty"),
    ("push", {"to": U1, "messages": [{"type": "text"}]}, "messages[0].text", "must be specified"),
    ("push", {"to": U1, "messages": [{"text": "hi"}]}, "messages[0].type", "must be specified"),
    ("push", {"to": U1, "messages": [{"type": "fax"}]}, "messages[0].type", "Must be one of"),
    ("push", {"to": U1, "messages": [{"type": "image", "originalContentUrl": "http://x/a.jpg",
                                      "previewImageUrl": "https://x/p.jpg"}]},
     "messages[0].originalContentUrl", "must be an HTTPS URL"),
    ("push", {"to": U1, "messages": [{"type": "sticker", "packageId": "1"}]}, "messages[0].stickerId",
     "must be specified"),
    ("push", {"to": U1, "messages": [{"type": "flex", "contents": {}}]}, "messages[0].altText",
     "must be specified"),
    ("push", {"to": U1, "messages": [{"type": "coupon"}]}, "messages[0].couponId", "must be specified"),
    ("push", {"to": U1, "messages": [{"type": "coupon", "couponId": "C1", "deliveryTag": "x" * 31}]},
     "messages[0].deliveryTag", "Length must be between 0 and 30"),
    ("push", {"to": U1, "messages": TEXT, "notificationDisabled": "yes"}, "notificationDisabled",
     "must be a boolean"),
    ("multicast", {"messages": TEXT}, "to", "must be specified"),
    ("multicast", {"to": [], "messages": TEXT}, "to", "Size must be between 1 and 500"),
    ("multicast", {"to": [user_id(n) for n in range(501)], "messages": TEXT}, "to",
     "Size must be between 1 and 500"),
    ("multicast", {"to": [U1, group_id(1)], "messages": TEXT}, "to[1]", "must be a user ID"),
    ("reply", {"messages": TEXT}, "replyToken", "must be specified"),
    ("broadcast", {"messages": [{"type": "text", "text": LONG}]}, "messages[0].text", "Length must be"),
]


@pytest.mark.parametrize("endpoint, body, prop, message", VALIDATION_CASES,
                         ids=[f"{c[0]}-{c[2]}-{i}" for i, c in enumerate(VALIDATION_CASES)])
def test_validation_errors_name_the_property(sandbox, api, endpoint, body, prop, message):
    mark = last_id(sandbox)
    answer = api("POST", f"/v2/bot/message/{endpoint}", json=body)
    assert answer.status_code == 400, answer.text
    error = answer.json()
    assert error["message"].startswith("The request body has")
    assert any(d["property"] == prop and d["message"].startswith(message) for d in error["details"]), error
    assert deliveries_after(sandbox, mark) == []


def test_limits_are_inclusive(api):
    assert api("POST", "/v2/bot/message/push",
               json={"to": U1, "messages": [{"type": "text", "text": "😀" * 2500}] + TEXT * 4}).status_code == 200
    assert api("POST", "/v2/bot/message/validate/push",
               json={"messages": [{"type": "text", "text": "x" * 5000}]}).status_code == 200
    assert api("POST", "/v2/bot/message/validate/push", json={"messages": []}).status_code == 400


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"\xff\xfe"])
def test_a_body_that_is_not_a_json_object_is_400(api, raw):
    answer = api("POST", "/v2/bot/message/push", data=raw, headers={"Content-Type": "application/json"})
    assert answer.status_code == 400
    assert "JSON" in answer.json()["message"]


# --- reply tokens

def test_reply_token_is_single_use_and_goes_to_the_events_source(sandbox, api):
    factory = EventFactory(SECRET)
    event = factory.event("text", group_source(group_id(7), U1), text="hi")
    mark = last_id(sandbox)
    first = api("POST", "/v2/bot/message/reply", json={"replyToken": event["replyToken"], "messages": TEXT})
    assert first.status_code == 200 and len(first.json()["sentMessages"]) == 1
    second = api("POST", "/v2/bot/message/reply", json={"replyToken": event["replyToken"], "messages": TEXT})
    assert second.status_code == 400 and second.json() == {"message": "Invalid reply token"}
    [delivery] = deliveries_after(sandbox, mark)
    assert delivery["to"] == [group_id(7)]
    assert delivery["source_event"] == event["webhookEventId"]


def test_concurrent_replies_with_one_token_deliver_once(sandbox, api):
    token = mint_reply_token(SECRET, U2, "evt-race")
    mark = last_id(sandbox)
    statuses = []

    def reply():
        statuses.append(requests.post(sandbox.url + "/v2/bot/message/reply", headers=AUTH, timeout=5,
                                      json={"replyToken": token, "messages": TEXT}).status_code)

    threads = [threading.Thread(target=reply) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200] + [400] * 7
    assert len(deliveries_after(sandbox, mark)) == 1


def test_reply_token_expires_after_the_configured_ttl(api):
    now_ms = int(time.time() * 1000)
    fresh = mint_reply_token(SECRET, U1, "e1", issued_ms=now_ms - 3000)    # ttl is 5 s here
    stale = mint_reply_token(SECRET, U1, "e2", issued_ms=now_ms - 6000)
    assert api("POST", "/v2/bot/message/reply", json={"replyToken": fresh, "messages": TEXT}).status_code == 200
    expired = api("POST", "/v2/bot/message/reply", json={"replyToken": stale, "messages": TEXT})
    assert expired.status_code == 400 and expired.json() == {"message": "Invalid reply token"}


@pytest.mark.parametrize("token", [
    "0123456789abcdef0123456789abcdef",                      # LINE-shaped, but not from this channel
    mint_reply_token("another-channel-secret", U1, "e3"),
    mint_reply_token(SECRET, U1, "e4")[:-2] + "AA",        # altered seal
])
def test_reply_tokens_not_minted_for_this_channel_are_invalid(api, token):
    answer = api("POST", "/v2/bot/message/reply", json={"replyToken": token, "messages": TEXT})
    assert answer.status_code == 400 and answer.json() == {"message": "Invalid reply token"}


# --- retry keys

@pytest.mark.parametrize("endpoint, body", [
    ("push", {"to": U1, "messages": TEXT}),
    ("multicast", {"to": [U1, U2], "messages": TEXT}),
    ("broadcast", {"messages": TEXT}),
])
def test_a_repeated_retry_key_is_409_and_not_delivered_again(sandbox, api, endpoint, body):
    key = str(uuid.uuid4())
    mark = last_id(sandbox)
    first = api("POST", f"/v2/bot/message/{endpoint}", json=body, headers={"X-Line-Retry-Key": key})
    assert first.status_code == 200
    repeat = api("POST", f"/v2/bot/message/{endpoint}", json=body, headers={"X-Line-Retry-Key": key.upper()})
    assert repeat.status_code == 409
    # LINE's 409 repeats the accepted request's sentMessages where its answer had them (push)
    accepted = {"sentMessages": first.json()["sentMessages"]} if endpoint == "push" else {}
    assert repeat.json() == {"message": "The retry key is already accepted", **accepted}
    assert repeat.headers["X-Line-Accepted-Request-Id"] == first.headers["X-Line-Request-Id"]
    [delivery] = deliveries_after(sandbox, mark)
    assert delivery["retry_key"] == key


def test_a_refused_call_does_not_spend_its_retry_key(api):
    key = str(uuid.uuid4())
    invalid = api("POST", "/v2/bot/message/push", json={"to": U1, "messages": []},
                  headers={"X-Line-Retry-Key": key})
    assert invalid.status_code == 400
    assert api("POST", "/v2/bot/message/push", json={"to": U1, "messages": TEXT},
               headers={"X-Line-Retry-Key": key}).status_code == 200


@pytest.mark.parametrize("method, path, body", [
    ("POST", "/v2/bot/message/reply", {"replyToken": "x", "messages": TEXT}),
    ("GET", f"/v2/bot/profile/{U1}", None),
])
def test_retry_key_on_other_endpoints_is_400(api, method, path, body):
    answer = api(method, path, json=body, headers={"X-Line-Retry-Key": str(uuid.uuid4())})
    assert answer.status_code == 400 and "X-Line-Retry-Key" in answer.json()["message"]


def test_retry_key_must_be_a_uuid(api):
    answer = api("POST", "/v2/bot/message/push", json={"to": U1, "messages": TEXT},
                 headers={"X-Line-Retry-Key": "retry-1"})
    assert answer.status_code == 400 and "UUID" in answer.json()["message"]


# --- profiles, content, the rest

def test_profile_names_are_deterministic(api):
    profile = api("GET", f"/v2/bot/profile/{U1}").json()
    assert profile["userId"] == U1 and profile["displayName"] == f"User-{U1[-4:]}"
    member = api("GET", f"/v2/bot/group/{group_id(1)}/member/{U2}").json()
    assert member == {"userId": U2, "displayName": f"User-{U2[-4:]}", "pictureUrl": member["pictureUrl"]}
    missing = api("GET", "/v2/bot/profile/nobody")
    assert missing.status_code == 404 and missing.json() == {"message": "Not found"}


def test_content_of_media_messages_and_404_for_text(api):
    factory = EventFactory(SECRET)
    image = factory.event("image", user_source(U1))["message"]["id"]
    answer = api("GET", f"/v2/bot/message/{image}/content")
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "image/jpeg"
    assert answer.content == message_content(image)[1]
    text = factory.event("text", user_source(U1))["message"]["id"]
    assert api("GET", f"/v2/bot/message/{text}/content").status_code == 404


def test_quota_info_and_loading_animation(api):
    assert api("GET", "/v2/bot/message/quota").json() == {"type": "none"}
    assert isinstance(api("GET", "/v2/bot/message/quota/consumption").json()["totalUsage"], int)
    assert api("GET", "/v2/bot/info").json()["chatMode"] == "bot"
    assert api("POST", "/v2/bot/chat/loading/start", json={"chatId": U1, "loadingSeconds": 5}).status_code == 202
    assert api("POST", "/v2/bot/chat/loading/start", json={"chatId": U1, "loadingSeconds": 7}).status_code == 400


# --- the recorder

def test_deliveries_paging_long_poll_and_reset(sandbox, api):
    mark = last_id(sandbox)
    for n in range(5):
        api("POST", "/v2/bot/message/push", json={"to": user_id(n), "messages": TEXT})
    page = requests.get(sandbox.url + "/sandbox/deliveries", params={"since": mark, "limit": 2}, timeout=5).json()
    assert [d["to"] for d in page] == [[user_id(0)], [user_id(1)]]
    rest = sandbox.deliveries(since=page[-1]["id"])
    assert [d["to"] for d in rest] == [[user_id(n)] for n in (2, 3, 4)]

    waited = {}

    def long_poll():
        started = time.monotonic()
        waited["answer"] = requests.get(sandbox.url + "/sandbox/deliveries",
                                        params={"since": rest[-1]["id"], "wait": 10}, timeout=15).json()
        waited["seconds"] = time.monotonic() - started

    poller = threading.Thread(target=long_poll)
    poller.start()
    api("POST", "/v2/bot/message/push", json={"to": U2, "messages": TEXT})
    poller.join(timeout=12)
    assert [d["to"] for d in waited["answer"]] == [[U2]] and waited["seconds"] < 9

    assert api("DELETE", "/sandbox/deliveries").json()["deleted"] >= 6
    assert sandbox.deliveries() == [] and sandbox.stats()["api_calls"] == 0
    api("POST", "/v2/bot/message/push", json={"to": U1, "messages": TEXT})
    [after] = sandbox.deliveries()
    assert after["id"] > rest[-1]["id"]   # ids keep growing, so `since` stays meaningful
    assert requests.get(sandbox.url + "/sandbox/deliveries", params={"since": "x"}, timeout=5).status_code == 400


# --- other configurations: limits, faults, drops, latency, dev credentials

def test_rate_limit_answers_429_beyond_the_configured_rate(tmp_path):
    with running_sandbox(tmp_path, secret=None, token=None, sandbox_rate_limits="push=5/s") as sandbox:
        assert "frontdesk-sandbox-token" in sandbox.log()   # the dev token is printed
        session = requests.Session()
        session.headers["Authorization"] = "Bearer frontdesk-sandbox-token"
        started = time.monotonic()
        answers = [session.post(sandbox.url + "/v2/bot/message/push", timeout=5,
                                json={"to": U1, "messages": TEXT}) for _ in range(20)]
        elapsed = time.monotonic() - started
        accepted = sum(a.status_code == 200 for a in answers)
        limited = [a for a in answers if a.status_code == 429]
        assert 5 <= accepted <= 5 + int(elapsed * 5) + 1
        assert accepted + len(limited) == 20
        assert limited[0].json() == {"message": "The API rate limit has been exceeded. Try again later."}
        stats = sandbox.stats()
        assert stats["http_429"] == len(limited) and stats["calls"]["push"]["429"] == len(limited)
        assert len(sandbox.deliveries()) == accepted
        # other endpoints keep LINE's defaults
        assert session.get(f"{sandbox.url}/v2/bot/profile/{U1}", timeout=5).status_code == 200


def test_fault_injection_answers_500_after_the_latency_and_does_nothing(tmp_path):
    with running_sandbox(tmp_path, sandbox_fault_rate=1, sandbox_latency_ms=150) as sandbox:
        started = time.monotonic()
        answer = requests.post(sandbox.url + "/v2/bot/message/push", headers=AUTH, timeout=5,
                               json={"to": U1, "messages": TEXT})
        assert time.monotonic() - started >= 0.15
        assert answer.status_code == 500 and "injected" in answer.json()["message"]
        assert sandbox.deliveries() == [] and sandbox.stats()["faults"] == 1
        # the recorder is never faulted nor delayed
        started = time.monotonic()
        assert requests.get(sandbox.url + "/sandbox/stats", timeout=5).status_code == 200
        assert time.monotonic() - started < 0.15


def _raw_post(port: int, body: bytes, headers: dict) -> bytes:
    """Everything the server sends back before closing, on a fresh connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        lines = ["POST /v2/bot/message/push HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json",
                 f"Content-Length: {len(body)}"] + [f"{k}: {v}" for k, v in headers.items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def test_dropped_connection_closes_without_an_answer_after_the_call_took_effect(tmp_path):
    with running_sandbox(tmp_path, sandbox_drop_rate=1) as sandbox:
        key = str(uuid.uuid4())
        body = b'{"to": "%s", "messages": [{"type": "text", "text": "hi"}]}' % U1.encode()
        headers = {**AUTH, "X-Line-Retry-Key": key}
        assert _raw_post(sandbox.port, body, headers) == b""
        with pytest.raises(requests.ConnectionError):
            requests.post(sandbox.url + "/v2/bot/message/push", data=body, headers=headers, timeout=5)
        [delivery] = sandbox.deliveries()   # the first call was done; the retry was a (dropped) 409
        assert delivery["retry_key"] == key
        stats = sandbox.stats()
        assert stats["dropped"] == 2 and stats["calls"]["push"] == {"200": 1, "409": 1}


def test_sigterm_stops_the_sandbox_cleanly(tmp_path):
    with running_sandbox(tmp_path) as sandbox:
        connection = http.client.HTTPConnection("127.0.0.1", sandbox.port, timeout=5)
        connection.request("GET", "/sandbox/stats")
        assert connection.getresponse().status == 200   # an idle keep-alive connection stays open
        sandbox.process.terminate()
        assert sandbox.process.wait(timeout=5) == 0
        connection.close()
        assert "event=stopped" in sandbox.log()


def test_a_busy_address_is_a_clear_error(tmp_path):
    with running_sandbox(tmp_path) as first:
        env = {**os.environ, "FRONTDESK_SANDBOX_LISTEN": f"127.0.0.1:{first.port}"}
        done = subprocess.run([sys.executable, "-m", "frontdesk", "sandbox"], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=20)
        assert done.returncode == 1
        assert "event=listen_failed" in done.stderr and "Traceback" not in done.stderr


def test_the_recorder_keeps_the_newest_deliveries_and_says_which_it_dropped(tmp_path):
    with running_sandbox(tmp_path, sandbox_recorder_size=10) as small:
        for n in range(25):
            answer = requests.post(small.url + "/v2/bot/message/push", headers=AUTH, timeout=5,
                                   json={"to": user_id(n), "messages": TEXT})
            assert answer.status_code == 200
        page = requests.get(small.url + "/sandbox/deliveries", params={"since": 0}, timeout=5)
        kept = page.json()
        assert [d["to"] for d in kept] == [[user_id(n)] for n in range(15, 25)]   # the newest 10
        assert int(page.headers["X-Sandbox-Oldest-Delivery"]) == kept[0]["id"] == 16
        stats = small.stats()
        assert stats["deliveries"] == 10 and stats["deliveries_dropped"] == 15
