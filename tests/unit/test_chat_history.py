"""The sandbox's chat history in-process: what each chat shows, in what order, its transcript, its
bounds, and the API calls the inspector shows per event."""
from __future__ import annotations

import json
import threading

import gc

from frontdesk.sandbox.history import Call, ChatHistory
from frontdesk.sandbox.webhooks import EventFactory, group_id, group_source, user_id, user_source

AIKO, BEN = user_id(1), user_id(2)
GROUP = group_id(1)
factory = EventFactory("secret")


def said(history: ChatHistory, source: dict, text: str, at_ms: int, status: int = 200) -> dict:
    event = factory.event("text", source, text=text, timestamp_ms=at_ms)
    history.add_user_turn(event, status, 1.5, "test")
    return event


delivery_ids = iter(range(1, 10**6))


def delivered(history: ChatHistory, endpoint: str, to: list[str], text: str, at_ms: float,
              answers: str | None = None) -> dict:
    delivery = {"id": next(delivery_ids), "endpoint": endpoint, "to": to, "messages": [{"type": "text", "text": text}],
                "time": at_ms, "request_id": f"req-{text}", "source_event": answers}
    history.add_delivery(delivery, json.dumps(delivery).encode(), answers)
    return delivery


def items(history: ChatHistory, chat: str, since: int = 0) -> list[dict]:
    return json.loads(history.page(chat, since, 0))["items"]


def texts(history: ChatHistory, chat: str) -> list[str]:
    return [item["event"]["message"]["text"] if item["kind"] == "user" else item["delivery"]["messages"][0]["text"]
            for item in items(history, chat)]


def test_a_chat_shows_its_items_in_time_order_even_when_a_sender_reports_late():
    history = ChatHistory()
    delivered(history, "reply", [AIKO], "answer", 1_000_050)
    said(history, user_source(AIKO), "question", 1_000_000)     # reported after its answer (bench does)
    said(history, user_source(BEN), "elsewhere", 1_000_010)
    assert texts(history, AIKO) == ["question", "answer"]
    assert texts(history, BEN) == ["elsewhere"]


def test_since_gives_only_newer_items_and_the_newest_seq():
    history = ChatHistory()
    said(history, user_source(AIKO), "one", 1)
    page = json.loads(history.page(AIKO, 0, 0))
    said(history, user_source(AIKO), "two", 2)
    newer = json.loads(history.page(AIKO, page["seq"], 0))
    assert [i["event"]["message"]["text"] for i in newer["items"]] == ["two"] and newer["seq"] == page["seq"] + 1


def test_broadcasts_reach_every_one_to_one_chat_but_no_group():
    history = ChatHistory()
    said(history, group_source(GROUP, AIKO), "in the group", 1)
    delivered(history, "broadcast", [], "to everyone", 2)
    delivered(history, "multicast", [AIKO, BEN], "to two", 3)
    assert texts(history, AIKO) == ["to everyone", "to two"]
    assert texts(history, BEN) == ["to everyone", "to two"]
    assert texts(history, GROUP) == ["in the group"]


def test_events_without_a_source_and_deliveries_by_phone_belong_to_no_chat():
    history = ChatHistory()
    assert history.add_user_turn(factory.event("botSuspended", None), 200, 1.0, "test") is False
    delivered(history, "pnp", ["ab" * 32], "by phone", 1)
    assert history.chats() == []


def test_a_long_poll_returns_as_soon_as_the_chat_gets_an_item():
    history = ChatHistory()
    pages = []
    waiter = threading.Thread(target=lambda: pages.append(json.loads(history.page(AIKO, 0, 30))))
    waiter.start()
    said(history, user_source(BEN), "another chat", 1)   # does not end the wait
    said(history, user_source(AIKO), "hello", 2)
    waiter.join(timeout=10)
    assert not waiter.is_alive() and [i["event"]["message"]["text"] for i in pages[0]["items"]] == ["hello"]


def test_stopping_ends_every_long_poll():
    history = ChatHistory()
    waiter = threading.Thread(target=history.page, args=(AIKO, 0, 30))
    waiter.start()
    history.stop_waiting()
    waiter.join(timeout=10)
    assert not waiter.is_alive()


def test_each_chat_keeps_its_newest_items_and_the_most_recently_active_chats():
    history = ChatHistory(per_chat=3, max_chats=2)
    first = said(history, user_source(AIKO), "0", 0)
    for n in range(1, 5):
        said(history, user_source(AIKO), str(n), n)
    assert texts(history, AIKO) == ["2", "3", "4"]
    assert history.trace(first["webhookEventId"])["turn"] is None      # forgotten with its item
    said(history, user_source(BEN), "ben", 10)
    said(history, group_source(GROUP, BEN), "group", 11)             # a third chat: Aiko's goes
    assert [c["chatId"] for c in history.chats()] == [GROUP, BEN]
    assert items(history, AIKO) == []


def test_the_transcript_holds_what_was_taken_with_each_answer_after_its_event():
    history = ChatHistory()
    first = said(history, user_source(AIKO), "flex", 1_000)
    said(history, user_source(AIKO), "refused", 1_001, status=401)     # never reached the bot
    second = said(history, user_source(AIKO), "quick", 1_002)
    delivered(history, "reply", [AIKO], "answer to quick", 1_003, answers=second["webhookEventId"])
    delivered(history, "reply", [AIKO], "answer to flex", 1_004, answers=first["webhookEventId"])   # slow
    delivered(history, "push", [AIKO], "a push", 1_005)
    transcript = history.transcript(AIKO, lambda uid: {AIKO: "Aiko"}[uid])
    assert transcript["frontdesk_transcript"] == 1
    assert transcript["chat"] == {"type": "user", "id": AIKO}
    assert transcript["users"] == [{"userId": AIKO, "displayName": "Aiko"}]
    turns = transcript["turns"]
    assert [t.get("bot") or t["event"]["message"]["text"] for t in turns] == \
        ["flex", "reply", "quick", "reply", "push"]
    assert turns[1]["messages"] == [{"type": "text", "text": "answer to flex"}]
    assert turns[3]["messages"] == [{"type": "text", "text": "answer to quick"}]
    event = turns[0]["event"]
    assert turns[0]["user"] == AIKO
    assert not {"webhookEventId", "replyToken", "timestamp", "deliveryContext"} & set(event)
    assert "id" not in event["message"] and event["source"] == user_source(AIKO)


def test_a_group_transcript_names_each_speaker_once():
    history = ChatHistory()
    said(history, group_source(GROUP, AIKO), "hi", 1)
    said(history, group_source(GROUP, BEN), "hello", 2)
    said(history, group_source(GROUP, AIKO), "again", 3)
    transcript = history.transcript(GROUP, lambda uid: uid[-4:])
    assert transcript["chat"] == {"type": "group", "id": GROUP}
    assert [u["userId"] for u in transcript["users"]] == [AIKO, BEN]
    assert [t["user"] for t in transcript["turns"]] == [AIKO, BEN, AIKO]


def call(request_id: str, event_id: str, at_ms: float, status: int = 200, traced: bool = False) -> tuple:
    """A reply call (its token names the event), or with traced=True one frontdesk's trace ties to it."""
    trace = json.dumps([{"event": event_id, "call": 2, "handler": "handler-1"}]) if traced else None
    return tuple(Call(request_id, at_ms, "reply", "POST", "/v2/bot/message/reply", status, 0.5,
                      None if traced else event_id, trace, False,
                      b'{"replyToken":"t"}', b'{"message":"Invalid reply token"}'))


def test_an_events_trace_holds_its_turn_calls_and_deliveries():
    history = ChatHistory()
    event = said(history, user_source(AIKO), "hi", 1_000)
    event_id = event["webhookEventId"]
    history.add_call(call("r2", event_id, 1_020, traced=True))
    history.add_call(call("r1", event_id, 1_010, status=400))
    history.add_call(call("other", "another event", 1_015))
    history.add_call(call("named-inside", "x" + event_id, 1_016, traced=True))   # not the same event
    delivered(history, "push", [AIKO], "pushed", 1_030, answers=event_id)
    trace = history.trace(event_id)
    assert trace["turn"]["event"]["webhookEventId"] == event_id and trace["turn"]["ack_ms"] == 1.5
    assert [c["request_id"] for c in trace["calls"]] == ["r1", "r2"]          # in time order
    assert trace["calls"][0]["response"] == {"message": "Invalid reply token"}  # bodies parsed for reading
    assert trace["calls"][1]["trace"] == [{"event": event_id, "call": 2, "handler": "handler-1"}]
    assert [d["delivery"]["endpoint"] for d in trace["deliveries"]] == ["push"]
    assert history.call("r1")["request"] == {"replyToken": "t"}


def test_the_newest_calls_are_kept():
    history = ChatHistory(calls_kept=2)
    for n in range(3):
        history.add_call(call(f"r{n}", "e", n))
    assert history.call("r0") is None and history.call("r2") is not None
    assert [c["request_id"] for c in history.trace("e")["calls"]] == ["r1", "r2"]


def test_what_the_history_holds_is_not_tracked_by_the_garbage_collector():
    """Up to 200,000 items are held: as objects, every full collection would scan them all;
    tuples of plain values are dropped from the collector's lists."""
    history = ChatHistory()
    event = said(history, user_source(AIKO), "hi", 1)
    delivered(history, "reply", [AIKO], "answer", 2, answers=event["webhookEventId"])
    history.add_call(call("r", event["webhookEventId"], 3, traced=True))
    gc.collect()
    held = list(history._chats[AIKO]) + list(history._calls.values())
    assert held and not any(gc.is_tracked(thing) for thing in held)
