"""The webhook generator, the open-loop sender and the e2e bench's accounting.

The bench is checked against the real sandbox and a stand-in for the system: a small echo bot
that answers inside the webhook request (the official SDK pattern), with switches to lose,
duplicate or refuse events, so every figure of the report is tested against a known answer.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests
import waitress
from hypothesis import given, settings as hsettings, strategies as st

from frontdesk.bench.e2e import Matcher, parse_mix, percentiles
from frontdesk.bench.load import WebhookSender
from frontdesk.demo import accepting
from frontdesk.protocol.config import ConfigError
from frontdesk.protocol.events import conversation_key, parse_webhook_body, signature_ok
from frontdesk.sandbox.webhooks import (ANY_SOURCE_KINDS, EVENT_KINDS, GROUP_CHAT_KINDS, GROUP_ONLY_KINDS,
                                        NO_REPLY_KINDS, NO_SOURCE_KINDS, ONE_TO_ONE_KINDS, USER_EVENT_KINDS,
                                        EventFactory, ReplyToken, ReplyTokenError, group_id, group_source,
                                        mint_reply_token, post_webhook, read_reply_token, room_id,
                                        room_source, signature, source_for, user_id, user_source)
from tests.helpers import free_port, wait_until
from tests.sandbox_harness import AUTH, SECRET, running_sandbox

CROCKFORD = set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")


def sources_for(kind: str) -> list[dict | None]:
    """Every source LINE sends `kind` from."""
    if kind in NO_SOURCE_KINDS:
        return [None]
    if kind in GROUP_ONLY_KINDS:
        return [group_source(group_id(1), user_id(1)), room_source(room_id(1), user_id(2))]
    if kind in GROUP_CHAT_KINDS:
        return [group_source(group_id(1), user_id(1))]
    if kind in ONE_TO_ONE_KINDS:
        return [user_source(user_id(1))]
    return [user_source(user_id(1)), group_source(group_id(2), user_id(3)), room_source(room_id(2), user_id(4))]


@pytest.mark.parametrize("kind", EVENT_KINDS)
def test_every_event_kind_is_a_valid_signed_webhook(kind):
    factory = EventFactory(SECRET)
    events = [factory.event(kind, source, text="テキスト") for source in sources_for(kind)]
    body = factory.body(events)
    assert signature_ok(SECRET.encode(), body, signature(body, SECRET))
    destination, parsed = parse_webhook_body(body)
    assert destination == factory.destination and parsed == events
    for event in parsed:
        assert event["type"] == ("message" if kind not in GROUP_CHAT_KINDS and "message" in event else kind)
        assert event["deliveryContext"] == {"isRedelivery": False} and event["mode"] == "active"
        assert len(event["webhookEventId"]) == 26 and set(event["webhookEventId"]) <= CROCKFORD
        assert abs(event["timestamp"] - time.time() * 1000) < 5000
        if kind in NO_REPLY_KINDS:
            assert "replyToken" not in event
        else:
            token = read_reply_token(SECRET, event["replyToken"])
            assert token.source_key == conversation_key(event)
            assert token.event_id == event["webhookEventId"] and token.issued_ms == event["timestamp"]


def test_message_events_carry_their_kind_specific_fields():
    factory = EventFactory(SECRET)
    source = user_source(user_id(1))
    assert factory.event("text", source, text="hi")["message"]["text"] == "hi"
    assert {"packageId", "stickerId"} <= set(factory.event("sticker", source)["message"])
    assert {"latitude", "longitude", "address"} <= set(factory.event("location", source)["message"])
    assert factory.event("postback", source, text="a=1")["postback"]["data"] == "a=1"
    assert factory.event("follow", source)["follow"] == {"isUnblocked": False}
    ids = {factory.event("image", source)["message"]["id"] for _ in range(200)}
    assert len(ids) == 200


def test_ids_are_unique_and_bad_kinds_are_refused():
    factory = EventFactory(SECRET)
    events = [factory.event("text", user_source(user_id(n % 3))) for n in range(2000)]
    assert len({e["webhookEventId"] for e in events}) == 2000
    assert len({e["replyToken"] for e in events}) == 2000
    with pytest.raises(ValueError, match="group or room"):
        factory.event("join", user_source(user_id(1)))
    with pytest.raises(ValueError, match="unknown event kind"):
        factory.event("body", user_source(user_id(1)))
    with pytest.raises(ValueError, match="one-to-one chat"):
        factory.event("follow", group_source(group_id(1), user_id(1)))
    with pytest.raises(ValueError, match="has no source"):
        factory.event("botSuspended", user_source(user_id(1)))
    with pytest.raises(ValueError, match="needs a source"):
        factory.event("text", None)
    with pytest.raises(ValueError, match="group source"):
        factory.event("messageEdited", room_source(room_id(1), user_id(1)))


def test_every_kind_of_lines_webhook_yml_is_generated():
    """The event types of webhook.yml (line/line-openapi), and messageEdited added since."""
    types = {"message", "unsend", "follow", "unfollow", "join", "leave", "memberJoined", "memberLeft", "postback",
             "videoPlayComplete", "beacon", "accountLink", "membership", "module", "activated", "deactivated",
             "botSuspended", "botResumed", "delivery", "messageEdited"}
    factory = EventFactory(SECRET)
    made = {factory.event(kind, source_for(kind, user_id(1)))["type"] for kind in EVENT_KINDS}
    assert made == types
    assert set(ANY_SOURCE_KINDS + ONE_TO_ONE_KINDS) == set(USER_EVENT_KINDS)


def test_sources_are_shaped_as_line_sends_them():
    factory = EventFactory(SECRET)
    for kind in GROUP_ONLY_KINDS:    # from the group or room itself: no userId in the source
        event = factory.event(kind, room_source(room_id(3), user_id(5)))
        assert event["source"] == {"type": "room", "roomId": room_id(3)}
    joined = factory.event("memberJoined", group_source(group_id(3), user_id(5)))
    assert joined["joined"]["members"] == [{"type": "user", "userId": user_id(5)}]
    for kind in NO_SOURCE_KINDS:
        event = factory.event(kind, None)
        assert "source" not in event and "replyToken" not in event
    assert source_for("follow", user_id(1)) == user_source(user_id(1))
    assert source_for("join", user_id(1))["type"] == "group" and source_for("delivery", user_id(1)) is None
    # postback.params only when LINE sets it (a datetime picker)
    assert "params" not in factory.event("postback", user_source(user_id(1)), text="a=1")["postback"]
    picked = factory.event("postback", user_source(user_id(1)), text="datetime=pick")["postback"]
    assert picked["params"] == {"datetime": "2026-01-01T09:00"}


def test_the_official_sdk_parses_every_generated_event_as_its_type():
    webhook = pytest.importorskip("linebot.v3.webhook")
    models = pytest.importorskip("linebot.v3.webhooks")
    factory = EventFactory(SECRET)
    events = [factory.event(kind, source) for kind in EVENT_KINDS for source in sources_for(kind)]
    body = factory.body(events).decode()
    parsed = webhook.WebhookParser(SECRET).parse(body, signature(body.encode(), SECRET))
    expected = {"message": "MessageEvent", "delivery": "PnpDeliveryCompletionEvent"}
    for event, model in zip(events, parsed):
        name = expected.get(event["type"], event["type"][0].upper() + event["type"][1:] + "Event")
        assert type(model).__name__ == name
        assert isinstance(model, getattr(models, name))
        assert (model.source is None) == ("source" not in event)


def test_events_without_a_source_get_keys_that_keep_their_order_apart():
    factory = EventFactory(SECRET)
    keys = {kind: conversation_key(factory.event(kind, None)) for kind in NO_SOURCE_KINDS}
    assert keys["botSuspended"] == keys["botResumed"] == "-bot"
    assert keys["activated"] == keys["deactivated"] == "-chatControl"
    assert keys["module"].startswith("-module:") and keys["delivery"].startswith("-delivery:")
    assert len(set(keys.values())) == 4    # four streams, none blocking the others
    assert conversation_key({"type": "somethingNew", "timestamp": 1}) == "-somethingNew"


@hsettings(max_examples=200, deadline=None)
@given(key=st.text(min_size=1, max_size=40), event_id=st.text(max_size=30),
       issued=st.integers(min_value=0, max_value=2**53), flip=st.integers(min_value=0))
def test_reply_tokens_round_trip_and_any_change_is_detected(key, event_id, issued, flip):
    token = mint_reply_token(SECRET, key, event_id, issued)
    assert read_reply_token(SECRET, token) == ReplyToken(key, event_id, issued)
    position = flip % len(token)
    replacement = "A" if token[position] != "A" else "B"
    with pytest.raises(ReplyTokenError):
        read_reply_token(SECRET, token[:position] + replacement + token[position + 1:])
    with pytest.raises(ReplyTokenError):
        read_reply_token("other secret", token)


# --- a stand-in system: the in-request echo pattern, with switches for failures

class EchoStandIn:
    """Verifies, parses, and for each answerable event fetches the profile and replies in-request."""

    def __init__(self, sandbox_url: str, lose_every: int = 0, duplicate_every: int = 0, refuse_every: int = 0):
        self.sandbox_url = sandbox_url
        self.lose_every, self.duplicate_every, self.refuse_every = lose_every, duplicate_every, refuse_every
        self.requests = 0
        self.lock = threading.Lock()
        self.session = requests.Session()
        self.session.headers.update(AUTH)
        self.port = free_port()
        self.server = waitress.create_server(self.app, listen=f"127.0.0.1:{self.port}", threads=8)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def app(self, environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        with self.lock:
            self.requests += 1
            number = self.requests
        if not signature_ok(SECRET.encode(), body, environ.get("HTTP_X_LINE_SIGNATURE", "")):
            start_response("401 Unauthorized", [])
            return [b""]
        if self.refuse_every and number % self.refuse_every == 0:
            start_response("503 Service Unavailable", [])
            return [b""]
        for event in parse_webhook_body(body)[1]:
            self.answer(event)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"OK"]

    def answer(self, event):
        message = event.get("message", {})
        if message.get("type") != "text" and event["type"] != "follow":
            return
        n = int(message["text"].rsplit(" ", 1)[1]) if message else None   # "bench <run> <n>"
        if self.lose_every and n is not None and n % self.lose_every == 0:
            return
        user = event["source"]["userId"]
        name = self.session.get(f"{self.sandbox_url}/v2/bot/profile/{user}", timeout=5).json()["displayName"]
        text = f"{name}さん、はい、{message.get('text', 'ようこそ')}、ですね。"
        self.session.post(f"{self.sandbox_url}/v2/bot/message/reply", timeout=5,
                          json={"replyToken": event["replyToken"], "messages": [{"type": "text", "text": text}]})
        if self.duplicate_every and n is not None and n % self.duplicate_every == 0:
            self.session.post(f"{self.sandbox_url}/v2/bot/message/push", timeout=5,
                              json={"to": user, "messages": [{"type": "text", "text": text}]})

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.close()
        self.thread.join(timeout=5)
        self.session.close()


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    with running_sandbox(tmp_path_factory.mktemp("bench-sandbox")) as running:
        yield running


def run_bench(sandbox, url: str, *extra: str) -> dict:
    env = {"LINE_CHANNEL_SECRET": SECRET, "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "frontdesk", "bench", "--json", "--url", url,
                           "--sandbox-url", sandbox.url, "--settle", "5", *extra],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.stdout, done.stderr
    report = json.loads(done.stdout)
    assert done.returncode == (0 if report["lost"] == report["duplicates"] == report["rejected"] == 0 else 1)
    assert "bench" in done.stderr and "Traceback" not in done.stderr   # the progress line, no crash
    return report


def test_sender_keeps_an_open_loop_schedule_and_records_every_answer(sandbox):
    with EchoStandIn(sandbox.url) as stand_in:
        factory = EventFactory(SECRET)
        sender = WebhookSender(f"http://127.0.0.1:{stand_in.port}/callback", SECRET, connections=4)
        bodies = [factory.body([factory.event("follow", user_source(user_id(k)))]) for k in range(40)]
        bodies[5] = b'{"destination": "x", "events": []}'
        started = time.monotonic()
        posted = sender.run(40, rate=100.0, build=lambda k: bodies[k])
        elapsed = time.monotonic() - started
    assert 0.39 <= elapsed < 5
    assert [p.index for p in sorted(posted, key=lambda p: p.index)] == list(range(40))
    assert all(p.status == 200 for p in posted)
    for p in posted:
        assert abs((p.due - sender.started_mono) - p.index / 100.0) < 1e-9
        assert p.sent >= p.due - 0.002 and p.answered >= p.sent


def test_sender_records_refusals_and_unreachable_receivers():
    port = free_port()   # nothing listens there
    assert post_webhook(f"http://127.0.0.1:{port}/callback", SECRET, b"{}") == 0
    sender = WebhookSender(f"http://127.0.0.1:{port}/callback", SECRET, connections=2)
    posted = sender.run(4, rate=1000.0, build=lambda k: b"{}")
    assert sorted(p.status for p in posted) == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="not an http"):
        post_webhook("ftp://127.0.0.1/x", SECRET, b"{}")


def test_bench_counts_a_clean_run(sandbox):
    with EchoStandIn(sandbox.url) as stand_in:
        report = run_bench(sandbox, f"http://127.0.0.1:{stand_in.port}/callback",
                           "--count", "60", "--rate", "300", "--users", "5", "--events-per-request", "2",
                           "--connections", "4", "--mix", "text=3,follow=1,unfollow=1")
    assert report["sent"] == report["acked"] == 60 and report["rejected"] == 0
    assert report["expected"] == report["delivered"] > 0        # unfollows expect nothing
    assert report["lost"] == report["duplicates"] == report["http_429"] == report["out_of_order"] == 0
    assert report["api_calls"] == 2 * report["expected"]        # a profile and a reply each
    assert 0 < report["ack_ms"]["p50"] <= report["ack_ms"]["p99"] <= report["ack_ms"]["max"]
    assert report["e2e_ms"]["p50"] > 0
    # CPU per role: the stand-in (this test process) is found listening on the webhook port, the
    # sandbox on its own; a stand-in has no dispatcher, handlers or rate limiter, and says so
    cpu = report["cpu_ms_per_event"]
    assert cpu["receiver"] > 0 and cpu["sandbox"] > 0 and cpu["bench"] > 0, report
    assert cpu["dispatcher"] is cpu["handlers"] is cpu["ratelimiter"] is None
    assert report["frontdesk_cpu_ms_per_event"] is None
    assert "not found on this host: dispatcher, handlers, ratelimiter" in report["cpu_note"]


def test_bench_reports_lost_duplicated_and_refused_events(sandbox):
    with EchoStandIn(sandbox.url, lose_every=10, duplicate_every=7, refuse_every=6) as stand_in:
        report = run_bench(sandbox, f"http://127.0.0.1:{stand_in.port}/callback",
                           "--count", "60", "--rate", "400", "--users", "3", "--connections", "1",
                           "--settle", "1.5")   # the lost ones never come: do not wait long
    # one event per request; requests 6, 12, ... (events 5, 11, ...) are refused: 10 of 60
    refused = {n for n in range(60) if (n + 1) % 6 == 0}
    acked = set(range(60)) - refused
    assert (report["sent"], report["acked"], report["rejected"]) == (60, 50, 10)
    assert report["statuses"] == {"200": 50, "503": 10}
    assert report["lost"] == len({n for n in acked if n % 10 == 0})
    assert report["duplicates"] == len({n for n in acked if n % 7 == 0 and n % 10 != 0})
    assert report["delivered"] == report["expected"] - report["lost"]


def test_bench_against_nothing_is_a_clear_error(sandbox):
    dead = f"http://127.0.0.1:{free_port()}"
    done = subprocess.run([sys.executable, "-m", "frontdesk", "bench", "--count", "1", "--url", dead,
                           "--sandbox-url", dead], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "cannot reach the sandbox" in done.stderr
    assert "Traceback" not in done.stderr
    report = run_bench(sandbox, dead + "/callback", "--count", "3", "--rate", "100")
    assert report["rejected"] == 3 and report["statuses"] == {"0": 3}


def test_mix_parsing_and_percentiles():
    assert parse_mix("text=8, sticker=1,follow") == [("text", 8.0), ("sticker", 1.0), ("follow", 1.0)]
    for bad in ("", "fax=1", "text=x", "text=-1", "text=0"):
        with pytest.raises(ConfigError):
            parse_mix(bad)
    assert set(USER_EVENT_KINDS) >= {"text", "image", "video", "audio", "location", "sticker", "follow",
                                     "unfollow", "postback"}
    assert percentiles([]) == {"p50": None, "p99": None, "max": None}
    assert percentiles(list(range(1, 101))) == {"p50": 50, "p99": 99, "max": 100}


def test_matcher_uses_source_event_then_text():
    matcher = Matcher("abc123", ["E0", "E1", "E2"])
    matcher.add({"id": 5, "source_event": "E1", "messages": [{"type": "text", "text": "bench abc123 2"}]})
    matcher.add({"id": 6, "source_event": None, "messages": [{"type": "text", "text": "X、bench abc123 2、ですね"}]})
    matcher.add({"id": 7, "source_event": None, "messages": [{"type": "text", "text": "bench other 0"}]})
    matcher.add({"id": 8, "source_event": None, "messages": [{"type": "text", "text": "bench abc123 99"}]})
    assert {n: [d["id"] for d in ds] for n, ds in matcher.deliveries.items()} == {1: [5], 2: [6]}
    assert matcher.last_id == 8


# --- the whole system: `frontdesk run --sandbox` with the bundled echo handler

@pytest.fixture(scope="module")
def system(tmp_path_factory):
    """A running `frontdesk run --sandbox`: (webhook URL, sandbox URL, environment), one for the
    tests that only send through it: each bench run and `say` matches what it receives to its own
    events, so they stay independent of each other and of their order."""
    with running_system(tmp_path_factory.mktemp("system")) as running:
        yield running


@contextlib.contextmanager
def running_system(tmp_path, **settings):
    listen, sandbox_listen = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRONTDESK_", "LINE_"))}
    env.update({"FRONTDESK_LISTEN": listen, "FRONTDESK_SANDBOX_LISTEN": sandbox_listen,
                "FRONTDESK_ADMIN_LISTEN": f"127.0.0.1:{free_port()}",
                "FRONTDESK_STORE": f"sqlite:///{tmp_path / 'frontdesk.db'}",
                **{f"FRONTDESK_{name.upper()}": str(value) for name, value in settings.items()}})
    log_path = tmp_path / "run.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "frontdesk", "run", "--sandbox"], env=env,
                                   cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: process.poll() is not None or (accepting(listen) and accepting(sandbox_listen)),
                   timeout=30, message="frontdesk run listening")
        assert process.poll() is None, log_path.read_text(errors="replace")
        yield f"http://{listen}/callback", f"http://{sandbox_listen}", env
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def bench_system(system, *extra: str) -> dict:
    url, sandbox_url, env = system
    done = subprocess.run([sys.executable, "-m", "frontdesk", "bench", "--json", "--url", url,
                           "--sandbox-url", sandbox_url, "--settle", "60", *extra],
                          env=env, cwd=os.path.dirname(env["FRONTDESK_STORE"][len("sqlite:///"):]),
                          capture_output=True, text=True, timeout=120)
    assert done.stdout, done.stderr
    return json.loads(done.stdout)


def test_a_burst_through_frontdesk_run_sandbox_is_delivered_exactly_once(system):
    report = bench_system(system, "--count", "60", "--rate", "200", "--users", "7",
                          "--mix", "text=4,sticker=1,image=1,follow=1")
    assert report["sent"] == report["acked"] == report["expected"] == report["delivered"] == 60
    assert report["lost"] == report["duplicates"] == report["http_429"] == report["out_of_order"] == 0
    assert report["replies_as_push"] == 0 and report["sandbox_cpu_ms_per_api_call"] > 0
    cpu = report["cpu_ms_per_event"]    # every process of the system, read from /proc
    assert all(cpu[role] > 0 for role in ("receiver", "dispatcher", "handlers", "ratelimiter", "sandbox"))
    assert report["cpu_processes"]["handlers"] == 2 and report["cpu_processes"]["receiver"] == 1
    rss = report["rss_mb"]   # resident memory per role at the start and the end of the run
    assert all(rss[role]["start"] > 5 and rss[role]["end"] > 5
               for role in ("receiver", "dispatcher", "handlers", "ratelimiter", "sandbox"))
    assert report["frontdesk_cpu_ms_per_event"] == pytest.approx(
        sum(cpu[role] for role in ("receiver", "dispatcher", "handlers", "ratelimiter")), abs=0.01)


def test_every_webhook_event_type_goes_through_the_system(system):
    """`--mix` takes every event type, each from its source (no source for botSuspended & co.)."""
    count = 3 * len(EVENT_KINDS)
    report = bench_system(system, "--count", str(count), "--rate", "200", "--users", "5",
                          "--mix", ",".join(EVENT_KINDS))
    assert report["sent"] == report["acked"] == count, report
    assert report["expected"] == report["delivered"] > 0 and report["lost"] == report["duplicates"] == 0


def test_bench_show_prints_what_each_user_received(system):
    report = bench_system(system, "--count", "4", "--rate", "50", "--users", "2", "--mix", "text=1,botSuspended=1",
                          "--show")
    received = report["received"]
    assert [item["n"] for item in received] == [0, 1, 2, 3]
    for item in received:
        if item["kind"] == "text":
            [delivery] = item["deliveries"]
            assert delivery["endpoint"] == "reply" and "、ですね。" in delivery["messages"][0]["text"]
        else:
            assert item["from"] == "no source" and item["deliveries"] == []


def say(system, *args: str) -> subprocess.CompletedProcess:
    url, sandbox_url, env = system
    return subprocess.run([sys.executable, "-m", "frontdesk", "say", "--url", url, "--sandbox-url", sandbox_url,
                           *args], env=env, capture_output=True, text=True, timeout=60)


def test_say_sends_one_event_as_a_user_and_prints_what_they_received(system):
    done = say(system, "fail", "--user", "4")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f'say: text "fail" from user {user_id(4)} -> ') and lines[0].endswith(": 200")
    assert lines[1] == f"say: {user_id(4)} received (reply):"
    assert json.loads(lines[2]) == {"type": "text", "text": f"User-{user_id(4)[-4:]}さん、はい、fail、ですね。"}
    sticker = say(system, "--kind", "sticker", "--user", user_id(5))
    assert "スタンプですね" in sticker.stdout
    silent = say(system, "--kind", "botSuspended", "--timeout", "1")
    assert silent.returncode == 1 and "from no source" in silent.stdout
    assert "nothing received: the bot finished the event without sending anything" in silent.stdout
    url, _, env = system
    nowhere = subprocess.run([sys.executable, "-m", "frontdesk", "say", "hi", "--url", url, "--sandbox-url",
                              f"http://127.0.0.1:{free_port()}"], env=env, capture_output=True, text=True, timeout=60)
    assert nowhere.returncode == 2 and "cannot reach the sandbox" in nowhere.stderr
    bad = say(system, "--kind", "fax")
    assert bad.returncode == 2 and "unknown event kind 'fax'" in bad.stderr and "Traceback" not in bad.stderr


def test_bench_counts_replies_that_went_out_as_pushes(tmp_path):
    with running_system(tmp_path, reply_max_age_s=0) as system:   # every reply token "too old"
        report = bench_system(system, "--count", "10", "--rate", "50", "--users", "3")
    assert report["delivered"] == report["replies_as_push"] == 10 and report["lost"] == 0


def test_chaos_kills_handlers_the_rate_limiter_and_the_dispatcher_and_nothing_is_lost(tmp_path):
    with running_system(tmp_path) as system:   # its own: the kills disturb the system
        report = bench_system(system, "--chaos", "--count", "300", "--rate", "100", "--users", "20")
    counts = {k: report[k] for k in ("sent", "acked", "delivered", "lost", "duplicates")}
    assert counts == {"sent": 300, "acked": 300, "delivered": 300, "lost": 0, "duplicates": 0}, report
    assert {k["role"] for k in report["chaos_kills"]} == {"handler", "ratelimiter", "dispatcher"}, report["chaos_kills"]
