"""The chat page's routes against a real `frontdesk run --sandbox` with the showcase bot: users of
the page talk to the bot through the real receiver, the history and the inspector show what
happened (the rate limiter's trace names the handler), transcripts, uploads through the content
API, rich menus made by the bot, groups, what `frontdesk say` and `frontdesk bench` report, and
the errors a bad request gets."""
from __future__ import annotations

import base64
import subprocess
import sys

import pytest
import requests

from frontdesk.protocol.config import SANDBOX_ACCESS_TOKEN
from tests.helpers import wait_until
from tests.test_webhooks import bench_system, running_system

SHOWCASE = f"{sys.executable} -m frontdesk.handlers.examples.showcase"
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg==")


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    with running_system(tmp_path_factory.mktemp("chatpage"), handler=SHOWCASE, handlers=1) as running:
        yield running


class Page:
    """The JSON routes the page uses, over HTTP."""

    def __init__(self, sandbox_url: str):
        self.url = sandbox_url

    def post(self, path: str, body: dict, status: int = 200) -> dict:
        answer = requests.post(self.url + path, json=body, timeout=30)
        assert answer.status_code == status, answer.text
        return answer.json()

    def get(self, path: str, **params) -> dict:
        answer = requests.get(self.url + path, params=params, timeout=40)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def person(self, name: str) -> str:
        return self.post("/sandbox/people", {"displayName": name}, 201)["userId"]

    def say(self, chat: str, user: str, kind: str = "text", **more) -> dict:
        sent = self.post(f"/sandbox/chats/{chat}/events", {"user": user, "kind": kind, **more})
        assert sent["status"] == 200, sent
        return sent["event"]

    def bot_messages(self, chat: str, count: int = 1) -> list[dict]:
        """The bot's messages in the chat, once there are `count` of them (long polls, no sleeping)."""
        def enough():
            messages = [m for item in self.get(f"/sandbox/chats/{chat}/history")["items"] if item["kind"] == "bot"
                        for m in item["delivery"]["messages"]]
            return messages if len(messages) >= count else None
        return wait_until(enough, timeout=60, interval=0.1, message=f"{count} bot messages in {chat}")


@pytest.fixture
def page(system):
    return Page(system[1])


def test_a_user_of_the_page_talks_to_the_bot_and_the_inspector_shows_the_events_path(page):
    aiko = page.person("Aiko Path")
    event = page.say(aiko, aiko, text="flex")
    [flex] = page.bot_messages(aiko)
    assert flex["type"] == "flex" and flex["contents"]["type"] == "bubble"
    trace = page.get(f"/sandbox/events/{event['webhookEventId']}/trace")
    assert trace["turn"]["status"] == 200 and trace["turn"]["by"] == "page" and trace["turn"]["ack_ms"] > 0
    [reply] = [c for c in trace["calls"] if c["endpoint"] == "reply"]
    assert reply["status"] == 200 and reply["request"]["messages"] == [flex] and "sentMessages" in reply["response"]
    [hop] = reply["trace"]
    assert hop["event"] == event["webhookEventId"] and hop["handler"] == "handler-1" and hop["call"] == 1
    assert event["timestamp"] <= hop["received_at"] <= hop["handed_at"] <= reply["time"]
    assert [d["delivery"]["endpoint"] for d in trace["deliveries"]] == ["reply"]


def test_a_chats_transcript_holds_the_users_events_and_the_bots_answers(page):
    aiko = page.person("Aiko Transcript")
    page.say(aiko, aiko, text="sticker")
    page.bot_messages(aiko)
    answer = requests.get(f"{page.url}/sandbox/chats/{aiko}/transcript", timeout=10)
    assert "attachment" in answer.headers["Content-Disposition"]
    transcript = answer.json()
    assert transcript["chat"] == {"type": "user", "id": aiko}
    assert transcript["users"] == [{"userId": aiko, "displayName": "Aiko Transcript"}]
    user_turn, bot_turn = transcript["turns"]
    assert user_turn["user"] == aiko and user_turn["event"]["message"] == {
        "type": "text", "text": "sticker", "quoteToken": user_turn["event"]["message"]["quoteToken"]}
    assert "replyToken" not in user_turn["event"] and "webhookEventId" not in user_turn["event"]
    assert bot_turn == {"bot": "reply", "messages": [{"type": "sticker", "packageId": "446", "stickerId": "1988"}]}


def test_an_exported_transcript_replays_green_and_red_with_a_diff_once_the_bot_changes(system, page, tmp_path):
    """The page's export is `frontdesk test`'s input: against the bot that made it, every answer
    matches; against another bot (the bundled echo, on a system `frontdesk test` starts itself)
    it fails naming the transcript, the turn and the field."""
    url, sandbox_url, env = system
    aiko = page.person("Aiko Replay")
    for count, word in enumerate(("sticker", "flex"), start=1):
        page.say(aiko, aiko, text=word)
        page.bot_messages(aiko, count)
    exported = tmp_path / "aiko.json"
    exported.write_bytes(requests.get(f"{page.url}/sandbox/chats/{aiko}/transcript", timeout=10).content)

    def frontdesk_test(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "frontdesk", "test", *args, str(exported)], env=env,
                              capture_output=True, text=True, timeout=180)
    green = frontdesk_test("--url", url, "--sandbox-url", sandbox_url)
    assert green.returncode == 0 and f"PASS {exported}" in green.stdout, green.stdout + green.stderr
    red = frontdesk_test("--handler", "")
    assert red.returncode == 1, red.stdout + red.stderr
    assert f"FAIL {exported}" in red.stdout and "turns[1].messages[0]" in red.stdout, red.stdout


def test_an_uploaded_picture_reaches_the_bot_through_the_content_api(page):
    aiko = page.person("Aiko Upload")
    event = page.say(aiko, aiko, "image", content={"data": base64.b64encode(PNG).decode(), "type": "image/png"})
    [answer] = page.bot_messages(aiko)
    assert answer["text"] == f"Got your picture: {len(PNG)} bytes of image/png."
    shown = requests.get(f"{page.url}/sandbox/uploads/{event['message']['id']}", timeout=10)
    assert shown.content == PNG and shown.headers["Content-Security-Policy"] == "default-src 'none'; sandbox"


def test_the_bot_makes_and_links_a_rich_menu_whose_image_the_page_shows(page):
    aiko = page.person("Aiko Menu")
    event = page.say(aiko, aiko, text="menu")
    page.bot_messages(aiko)
    menu = page.get(f"/sandbox/chats/{aiko}/richmenu")
    assert menu["source"] == "user" and menu["menu"]["chatBarText"] == "Menu"
    image = requests.get(page.url + menu["image"], timeout=10)
    assert image.headers["Content-Type"] == "image/png" and image.content.startswith(b"\x89PNG")
    # the image went through the handler's `call` with a body of bytes, journaled and sent as is
    calls = page.get(f"/sandbox/events/{event['webhookEventId']}/trace")["calls"]
    uploads = [c for c in calls if c["path"].endswith("/content") and c["method"] == "POST"]
    assert [(c["status"], c["request"]) for c in uploads] == [(200, f"<{len(image.content)} bytes, image/png>")]
    assert page.get(f"/sandbox/chats/{aiko}/richmenu", alias="no-such-alias") == {"richMenuId": None}


def test_a_group_made_on_the_page_has_its_members_names_and_a_mention_names_the_speaker(page):
    aiko, ben = page.person("Aiko Group"), page.person("Ben Group")
    group = page.post("/sandbox/groups", {"type": "group", "name": "Tea club", "members": [aiko, ben]}, 201)
    chat = page.get(f"/sandbox/chats/{group['chatId']}")
    assert chat["type"] == "group" and chat["name"] == "Tea club"
    assert [m["displayName"] for m in chat["members"]] == ["Aiko Group", "Ben Group"]
    page.say(group["chatId"], ben, text="mention")
    [answer] = page.bot_messages(group["chatId"])
    assert answer["substitution"]["you"]["mentionee"]["userId"] == ben
    headers = {"Authorization": f"Bearer {SANDBOX_ACCESS_TOKEN}"}
    assert requests.get(f"{page.url}/v2/bot/profile/{ben}", headers=headers, timeout=10).json()["displayName"] == "Ben Group"
    summary = requests.get(f"{page.url}/v2/bot/group/{group['chatId']}/summary", headers=headers, timeout=10).json()
    assert summary["groupName"] == "Tea club"


def test_what_say_and_bench_post_themselves_shows_in_the_chats(system, page):
    url, sandbox_url, env = system
    aiko = page.person("Aiko Say")
    said = subprocess.run([sys.executable, "-m", "frontdesk", "say", "flex", "--user", aiko, "--url", url,
                           "--sandbox-url", sandbox_url, "--timeout", "30"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert said.returncode == 0, said.stdout + said.stderr
    page.bot_messages(aiko)
    kinds = [(item["kind"], item.get("by")) for item in page.get(f"/sandbox/chats/{aiko}/history")["items"]]
    assert kinds == [("user", "say"), ("bot", None)]
    report = bench_system(system, "--count", "6", "--rate", "20", "--users", "2", "--mix", "text=1")
    assert report["delivered"] == 6
    bench_users = {c["chatId"]: c for c in page.get("/sandbox/chats")["chats"] if c["name"].startswith("User-")}
    turns = [item for chat in bench_users for item in page.get(f"/sandbox/chats/{chat}/history")["items"]
             if item["kind"] == "user" and item["by"] == "bench" and report["run_id"] in item["event"]["message"]["text"]]
    assert len(turns) == 6 and all(t["status"] == 200 for t in turns)


@pytest.mark.parametrize("path, body, status, words", [
    ("/sandbox/chats/nope/events", {"user": "U" + "0" * 32, "kind": "text"}, 400, "is not a user, group or room id"),
    ("/sandbox/chats/U" + "0" * 32 + "/events", {"user": "U" + "0" * 32, "kind": "dance"}, 400, "`kind` must be one of"),
    ("/sandbox/chats/U" + "0" * 32 + "/events", {"user": "U" + "1" * 32, "kind": "text"}, 400, "only its user speaks"),
    ("/sandbox/chats/U" + "0" * 32 + "/events", {"user": "U" + "0" * 32, "kind": "join"}, 400, "group or room source"),
    ("/sandbox/chats/U" + "0" * 32 + "/events", {"user": "U" + "0" * 32, "kind": "image",
                                                 "content": {"data": "not base64!", "type": "image/png"}}, 400, "base64"),
    ("/sandbox/chats/U" + "0" * 32 + "/events", {"user": "U" + "0" * 32, "kind": "image",
                                                 "content": {"data": "", "type": "image/png\r\nX-A: 1"}}, 400,
     "`content.type` must be a media type"),
    ("/sandbox/people", {"displayName": ""}, 400, "`displayName` must be a text"),
    ("/sandbox/groups", {"type": "group", "members": []}, 400, "`members` must be a list"),
    ("/sandbox/chats/sent", {"by": "say", "events": [{"event": {}}]}, 400, "each of `events`"),
])
def test_a_bad_request_gets_an_error_naming_the_problem(page, path, body, status, words):
    answer = requests.post(page.url + path, json=body, timeout=10)
    assert answer.status_code == status and words in answer.json()["message"], answer.text


def test_a_post_that_is_not_json_is_refused_so_no_other_site_can_make_users_speak(page):
    answer = requests.post(f"{page.url}/sandbox/people", data={"displayName": "Mallory"}, timeout=10)
    assert answer.status_code == 415 and "application/json" in answer.json()["message"]
    assert all(p["displayName"] != "Mallory" for p in page.get("/sandbox/chats")["people"])


def test_the_page_is_served_with_a_policy_that_runs_only_its_own_scripts(page):
    answer = requests.get(f"{page.url}/chat", timeout=10)
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/html")
    assert "script-src" not in answer.headers["Content-Security-Policy"]   # default-src 'self' covers scripts
    assert answer.headers["Content-Security-Policy"].startswith("default-src 'self'")
    script = requests.get(f"{page.url}/chat/static/chat.js", timeout=10)
    assert script.status_code == 200 and "innerHTML" not in script.text
    assert script.headers["Content-Type"].startswith("text/javascript")
    assert requests.get(f"{page.url}/chat/static/chatpage.py", timeout=10).status_code == 404   # named files only
