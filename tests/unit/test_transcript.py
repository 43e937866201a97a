"""The transcript format: what a bad file is told, and how a replay's answers are compared."""
from __future__ import annotations

from pathlib import Path

import pytest

from frontdesk.sandbox.webhooks import EventFactory, read_reply_token
from frontdesk.testing import fresh_event
from frontdesk.transcript import (BotTurn, Step, TranscriptError, UserTurn, compare_step, compare_values, describe,
                                  load, parse)

USER = "U4c03c4bc48a952cae3f278b77939fb7c"
OTHER = "Udd178ab4d7d371bdd475dddea5aa71b2"
GROUP = "Ca16d937489ab24c325f35873896461e5"


def text_event(text: str, user: str = USER, group: str | None = None) -> dict:
    source = {"type": "group", "groupId": group, "userId": user} if group else {"type": "user", "userId": user}
    return {"type": "message", "message": {"type": "text", "text": text}, "source": source}


def document(**changes) -> dict:
    doc = {"frontdesk_transcript": 1, "chat": {"type": "user", "id": USER},
           "users": [{"userId": USER, "displayName": "Aiko"}],
           "turns": [{"user": USER, "event": text_event("hi")},
                     {"bot": "reply", "messages": [{"type": "text", "text": "hello"}]}]}
    doc.update(changes)
    return doc


def test_turns_are_split_into_steps_with_the_bot_turns_that_follow_each_user_turn():
    transcript = parse(document(
        chat={"type": "group", "id": GROUP},
        users=[{"userId": USER, "displayName": "Aiko"}, {"userId": OTHER, "displayName": "Ben"}],
        turns=[{"bot": "push", "messages": [{"type": "text", "text": "welcome"}]},
               {"user": USER, "event": text_event("hi", USER, GROUP)},
               {"bot": "reply", "messages": [{"type": "text", "text": "hello"}]},
               {"bot": "push", "messages": [{"type": "text", "text": "and more"}]},
               {"user": OTHER, "event": text_event("quiet", OTHER, GROUP)}]))
    assert [(s.user_turn.index, [b.index for b in s.bot_turns]) for s in transcript.steps] == [(1, [2, 3]), (4, [])]
    assert [t.index for t in transcript.unprompted] == [0]
    assert transcript.users == {USER: "Aiko", OTHER: "Ben"} and transcript.chat_id == GROUP


@pytest.mark.parametrize("changes, message", [
    ({"frontdesk_transcript": 2}, "frontdesk_transcript: format 2 is not supported (this frontdesk reads 1)"),
    ({"chat": {"type": "channel", "id": USER}}, "chat.type: must be one of user, group, room, got \"channel\""),
    ({"chat": {"type": "group", "id": USER}}, "chat.id: a group chat's id is C and 32 hex digits"),
    ({"users": {"a": 1}}, "users: must be an array"),
    ({"users": [{"userId": "x", "displayName": "A"}]}, "users[0].userId: must be a user id (U…), got \"x\""),
    ({"turns": []}, "turns: no user turn: nothing to replay"),
    ({"turns": [{"user": USER, "bot": "reply"}]}, "turns[0]: must be an object with either \"user\""),
    ({"turns": [{"user": OTHER, "event": text_event("hi", OTHER)}]},
     f"turns[0].user: \"{OTHER}\" is not one of the transcript's users"),
    ({"turns": [{"user": USER, "event": {"type": "message", "message": {"type": "text"}}}]},
     "turns[0].event.source: missing"),
    ({"turns": [{"user": USER, "event": text_event("hi", USER, GROUP)}]},
     "turns[0].event.source.type: is \"group\", but the chat is a user chat"),
    ({"turns": [{"user": USER, "event": {**text_event("hi"), "source": {"type": "user", "userId": OTHER}}}]},
     f"turns[0].event.source.userId: is \"{OTHER}\", but the chat is {USER}"),
    ({"turns": [{"user": USER, "event": {"type": "message", "source": {"type": "user", "userId": USER}}}]},
     "turns[0].event.message: a message event needs a message object with a type"),
    ({"turns": [{"user": USER, "event": text_event("hi")}, {"bot": "email", "messages": []}]},
     "turns[1].bot: must be one of reply, push, multicast, broadcast, narrowcast"),
    ({"turns": [{"user": USER, "event": text_event("hi")}, {"bot": "reply", "messages": []}]},
     "turns[1].messages: must be an array of 1 to 5 LINE message objects"),
    ({"turns": [{"user": USER, "event": text_event("hi")}, {"bot": "reply", "messages": ["hello"]}]},
     "turns[1].messages[0]: must be a LINE message object (with a type)"),
])
def test_a_bad_transcript_is_told_where_and_what(changes, message):
    with pytest.raises(TranscriptError) as raised:
        parse(document(**changes), "chats/bad.json")
    assert str(raised.value).startswith("chats/bad.json: ") and message in str(raised.value), str(raised.value)


def test_a_group_member_turn_must_come_from_its_user():
    doc = document(chat={"type": "group", "id": GROUP}, users=[{"userId": USER, "displayName": "A"}],
                   turns=[{"user": USER, "event": text_event("hi", OTHER, GROUP)}])
    with pytest.raises(TranscriptError, match=r"turns\[0\].event.source.userId: .* but the turn's user is"):
        parse(doc, "g.json")


@pytest.mark.parametrize("content, message", [
    (b"{not json", "not valid JSON: line 1 column 2"),
    (b"\xff\xfe", "not UTF-8 text"),
    (b"[1, 2]", "not a transcript: expected a JSON object, got an array"),
    (b"{}", 'not a frontdesk transcript: no "frontdesk_transcript" key'),
])
def test_a_file_that_is_no_transcript_is_named(tmp_path, content, message):
    path = tmp_path / "chat.json"
    path.write_bytes(content)
    with pytest.raises(TranscriptError) as raised:
        load(path)
    assert str(raised.value) == f"{path}: {message}" or str(raised.value).startswith(f"{path}: {message}")
    with pytest.raises(TranscriptError, match="cannot read it: No such file"):
        load(tmp_path / "missing.json")


def test_values_differ_by_json_path_and_any_matches_everything():
    expected = {"type": "flex", "altText": "<any>", "contents": {"body": [{"text": "a"}, {"text": "b"}], "size": 1}}
    actual = {"type": "flex", "altText": "whatever", "contents": {"body": [{"text": "a"}, {"text": "c"}, {"x": 1}],
                                                                   "size": 1.0, "extra": True}}
    assert [str(d) for d in compare_values(expected, actual, "turns[1].messages[0]")] == [
        'turns[1].messages[0].contents.body[1].text: expected "b", got "c"',
        'turns[1].messages[0].contents.body[2]: unexpected (got {"x": 1})',
        "turns[1].messages[0].contents.extra: unexpected (got true)",
    ]
    assert compare_values({"a": "<any>"}, {"a": {"deep": [1]}}, "p") == []
    assert [str(d) for d in compare_values({"a": 1, "b": True}, {"b": 1}, "p")] == [
        "p.a: missing (expected 1)", "p.b: expected true, got 1"]


def test_ids_tokens_and_times_are_never_compared():
    expected = {"type": "text", "text": "hi", "quoteToken": "abc", "id": "1", "timestamp": 1}
    actual = {"type": "text", "text": "hi", "quoteToken": "xyz", "id": "2"}
    assert compare_values(expected, actual, "m") == []


def step(*bot_turns: BotTurn) -> Step:
    return Step(UserTurn(4, USER, text_event("hi")), list(bot_turns))


def test_bot_turns_are_compared_in_order_and_missing_or_extra_ones_are_named():
    recorded = step(BotTurn(5, "reply", [{"type": "text", "text": "hello"}]),
                    BotTurn(6, "push", [{"type": "sticker", "packageId": "446", "stickerId": "1988"}]))
    assert compare_step(recorded, [BotTurn(None, "reply", [{"type": "text", "text": "hello"}]),
                                   BotTurn(None, "multicast", [{"type": "sticker", "packageId": "446",
                                                                "stickerId": "1988"}])]) == []
    differences = [str(d) for d in compare_step(recorded, [BotTurn(None, "push", [{"type": "text", "text": "hello"}])])]
    assert differences == ["turns[5].bot: expected reply, got push",
                           "turns[6]: expected a push (sticker 446/1988), got nothing"]
    extra = compare_step(step(), [BotTurn(None, "reply", [{"type": "text", "text": "surprise"}])])
    assert [str(d) for d in extra] == ['after turns[4]: unexpected reply: text "surprise"']


def test_describe_says_what_messages_are_in_a_few_words():
    assert describe([{"type": "text", "text": "hi"}, {"type": "flex", "altText": "card", "contents": {}},
                     {"type": "image"}]) == 'text "hi", flex "card", image'
    long = describe([{"type": "text", "text": "x" * 500}])
    assert len(long) < 200 and long.endswith("…")


def test_a_replayed_event_gets_fresh_ids_a_valid_reply_token_and_keeps_its_content():
    factory = EventFactory("secret")
    ids: dict[str, str] = {}
    recorded = {"type": "message", "webhookEventId": "01OLD", "replyToken": "old", "timestamp": 1,
                "message": {"type": "image", "id": "4711", "quoteToken": "q", "contentProvider": {"type": "line"}},
                "source": {"type": "group", "groupId": GROUP, "userId": USER}}
    event = fresh_event(recorded, factory, ids)
    assert event["webhookEventId"] != "01OLD" and event["timestamp"] > 1 and event["mode"] == "active"
    assert event["deliveryContext"] == {"isRedelivery": False}
    token = read_reply_token("secret", event["replyToken"])
    assert token.source_key == GROUP and token.event_id == event["webhookEventId"]
    assert event["message"]["id"] != "4711" and int(event["message"]["id"]) % 10 == 1   # still an image's content
    assert event["message"]["quoteToken"] != "q" and event["message"]["contentProvider"] == {"type": "line"}
    assert recorded["message"]["id"] == "4711"   # the transcript itself is left as it was
    unsend = fresh_event({"type": "unsend", "unsend": {"messageId": "4711"}, "replyToken": "x",
                          "source": {"type": "group", "groupId": GROUP, "userId": USER}}, factory, ids)
    assert unsend["unsend"]["messageId"] == event["message"]["id"] and "replyToken" not in unsend


def test_the_transcripts_of_the_tests_are_valid():
    paths = sorted((Path(__file__).resolve().parents[1] / "data" / "transcripts").glob("*.json"))
    assert paths and all(load(path).steps for path in paths)
