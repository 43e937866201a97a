"""`frontdesk test` and frontdesk.testing: transcripts replayed against real systems (`frontdesk run
--sandbox` on free ports), green when the bot answers as recorded, red with a diff when it does not."""
from __future__ import annotations

import copy
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from frontdesk.testing import System, SystemUnavailable, replay, start_system
from frontdesk.transcript import load
from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[1]
TRANSCRIPTS = ROOT / "tests" / "data" / "transcripts"
CHATBOT = shlex.join([sys.executable, str(ROOT / "tests" / "handlers" / "chatbot.py")])
ALICE, BEN = "U4c03c4bc48a952cae3f278b77939fb7c", "Udd178ab4d7d371bdd475dddea5aa71b2"   # User-fb7c, User-71b2
ROOM = "Rbed91e00e4d4f9b2a9bd13c6a2b555b6"


def frontdesk(*args: str, timeout: float = 180, **settings: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRONTDESK_", "LINE_"))}
    env.update({f"FRONTDESK_{name.upper()}": value for name, value in settings.items()})
    return subprocess.run([sys.executable, "-m", "frontdesk", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def chatbot():
    """One system with tests/handlers/chatbot.py for the tests that replay through the Python API."""
    with start_system(handler=CHATBOT) as system:
        yield system


def group_document() -> dict:
    return json.loads((TRANSCRIPTS / "chatbot-group.json").read_text())


def room_turn(user: str, text: str) -> dict:
    return {"user": user, "event": {"type": "message", "message": {"type": "text", "text": text},
                                    "source": {"type": "room", "roomId": ROOM, "userId": user}}}


def reply(text: str) -> dict:
    return {"bot": "reply", "messages": [{"type": "text", "text": text}]}


# --- the command ------------------------------------------------------------------------------------

def test_a_transcript_of_the_echo_bot_replays_green():
    done = frontdesk("test", "--handler", "", "tests/data/transcripts/echo-one-to-one.json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == ["PASS tests/data/transcripts/echo-one-to-one.json (6 user turns, 4 bot turns)",
                                        "1 transcript: 1 passed, 0 failed"]


def test_a_bot_that_answers_differently_is_red_with_a_diff_naming_transcript_turn_and_field():
    done = frontdesk("test", "--handler", f"{CHATBOT} 'robot: '", "tests/data/transcripts/chatbot-group.json")
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "FAIL tests/data/transcripts/chatbot-group.json"
    assert '  turns[1].messages[0].text: expected "bot: User-fb7c: hi all", got "robot: User-fb7c: hi all"' in lines
    assert '  turns[8].messages[0].text: expected "bot: postback buy=1", got "robot: postback buy=1"' in lines
    assert not any("turns[4]" in line or "turns[6]" in line for line in lines)   # the push and the flex match
    assert lines[-1] == "1 transcript: 0 passed, 1 failed"


def test_bad_transcript_files_are_named_with_what_is_wrong_before_anything_starts(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**group_document(), "chat": {"type": "group", "id": "nope"}}))
    broken = tmp_path / "broken.json"
    broken.write_text('{"frontdesk_transcript": 1,')
    done = frontdesk("test", "--handler", "/nonexistent/bot", str(bad), str(broken), str(tmp_path / "gone.json"),
                     timeout=30)
    assert done.returncode == 2 and done.stdout == "", done.stdout + done.stderr
    assert done.stderr.splitlines() == [
        f'frontdesk test: {bad}: chat.id: a group chat\'s id is C and 32 hex digits, got "nope"',
        f"frontdesk test: {broken}: not valid JSON: line 1 column 28: Expecting property name enclosed in double quotes",
        f"frontdesk test: {tmp_path / 'gone.json'}: cannot read it: No such file or directory"]


def test_a_system_that_cannot_be_reached_or_started_is_a_clear_error():
    nowhere = f"http://127.0.0.1:{free_port()}"
    done = frontdesk("test", "--url", nowhere + "/callback", "--sandbox-url", nowhere,
                     "tests/data/transcripts/echo-one-to-one.json", timeout=30)
    assert done.returncode == 2 and f"frontdesk test: cannot reach the sandbox at {nowhere}" in done.stderr
    # degraded after the second failed start, not the sixth: the same error without 3 s of restart backoff
    done = frontdesk("test", "--handler", "/nonexistent/bot", "tests/data/transcripts/echo-one-to-one.json",
                     restart_intensity="1")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("frontdesk test: the handler does not start (degraded: "), done.stderr
    both = frontdesk("test", "--handler", "", "--url", nowhere, "x.json", timeout=30)
    assert both.returncode == 2 and "not both" in both.stderr


def test_against_a_running_system_by_its_addresses(chatbot):
    done = frontdesk("test", "--url", chatbot.url, "--sandbox-url", chatbot.sandbox_url, "--store", chatbot.store,
                     "tests/data/transcripts/chatbot-group.json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("PASS tests/data/transcripts/chatbot-group.json (6 user turns, 6 bot turns)")


# --- from Python ------------------------------------------------------------------------------------

def test_a_group_with_two_users_a_push_flex_and_a_postback_replays_green(chatbot):
    result = replay(TRANSCRIPTS / "chatbot-group.json", chatbot)
    assert result.ok, result.report()
    assert result.notes == []


def test_a_room_replays_and_a_changed_flex_field_is_named_by_its_path(chatbot):
    room = {"frontdesk_transcript": 1, "chat": {"type": "room", "id": ROOM},
            "users": [{"userId": ALICE, "displayName": "User-fb7c"}, {"userId": BEN, "displayName": "User-71b2"}],
            "turns": [room_turn(BEN, "hello"), reply("bot: User-71b2: hello"),
                      room_turn(ALICE, "push"), reply("bot: User-fb7c: push"),
                      {"bot": "multicast", "messages": [{"type": "text", "text": "pushed to the chat"}]}]}
    assert replay(room, chatbot).ok
    group = group_document()
    changed = copy.deepcopy(group)
    changed["turns"][6]["messages"][0]["contents"]["body"]["contents"][1]["action"]["label"] = "Sell"
    result = replay(changed, chatbot)
    assert not result.ok
    assert [str(d) for d in result.differences] == [
        'turns[6].messages[0].contents.body.contents[1].action.label: expected "Sell", got "Buy"']


def test_missing_and_unexpected_answers_and_dead_letters_are_reported(chatbot):
    doc = {"frontdesk_transcript": 1, "chat": {"type": "user", "id": ALICE},
           "users": [{"userId": ALICE, "displayName": "User-fb7c"}],
           "turns": [{"user": ALICE, "event": {"type": "message", "message": {"type": "text", "text": "fail"},
                                               "source": {"type": "user", "userId": ALICE}}},
                     reply("bot: User-fb7c: fail"),
                     {"user": ALICE, "event": {"type": "message", "message": {"type": "text", "text": "push"},
                                               "source": {"type": "user", "userId": ALICE}}},
                     reply("bot: User-fb7c: push")]}
    result = replay(doc, chatbot, timeout=20)
    assert [str(d) for d in result.differences] == [
        'turns[1]: expected a reply (text "bot: User-fb7c: fail"), got nothing',
        'after turns[3]: unexpected push: text "pushed to the chat"']
    assert result.notes == ["turns[0]: the event became a dead letter after 1 attempt: handler nack: asked to fail"]
    report = result.report()
    assert report.startswith("FAIL <transcript>\n  turns[1]: expected a reply") and "  note: turns[0]" in report


def test_display_names_that_the_sandbox_does_not_know_are_noted(chatbot):
    doc = group_document()
    doc["users"][0]["displayName"] = "Aiko"
    result = replay(doc, chatbot)
    assert result.ok   # the chatbot names the sender by its profile: the sandbox's name, as recorded
    assert result.notes == [f"the sandbox's profile of {ALICE} is named 'User-fb7c', the transcript's 'Aiko': "
                            "answers that use the name will differ"]


def test_an_event_the_receiver_refuses_stops_the_replay_with_the_reason(chatbot):
    wrong = System(chatbot.url.replace("/callback", "/elsewhere"), chatbot.sandbox_url, store=chatbot.store)
    result = replay(TRANSCRIPTS / "chatbot-group.json", wrong)
    assert not result.ok and result.differences == []
    assert result.error == f"turns[0]: the receiver at {wrong.url} answered 404 to the event; later turns were not replayed"
    assert "  stopped: turns[0]: the receiver" in result.report()


def test_replay_says_when_it_cannot_reach_the_system():
    nowhere = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(SystemUnavailable, match="cannot reach the sandbox"):
        replay(load(TRANSCRIPTS / "chatbot-group.json"), System(nowhere + "/callback", nowhere))


# --- frontdesk say ----------------------------------------------------------------------------------

def test_say_names_a_dead_letter_and_a_bot_that_answered_nothing(chatbot):
    common = ("--url", chatbot.url, "--sandbox-url", chatbot.sandbox_url, "--store", chatbot.store)
    failed = frontdesk("say", "fail", "--user", "9", *common, timeout=60)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert failed.stdout.splitlines()[-1] == ("say: the event became a dead letter after 1 attempt: "
                                              "handler nack: asked to fail (frontdesk dead-letters list)")
    quiet = frontdesk("say", "quiet", "--user", "9", *common, timeout=60)
    assert quiet.returncode == 1
    assert quiet.stdout.splitlines()[-1] == "say: nothing received: the bot finished the event without sending anything"
