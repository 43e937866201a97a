"""What each chat saw, for the chat page (sandbox/chatpage.py) and its transcripts: every event a
user sent to the bot (through the page, `frontdesk say` or `frontdesk bench`, which report what
they posted), everything the bot delivered to the chat, its loading animations, and the API
calls behind them with their bodies, for the inspector.

Kept in memory and bounded: the newest HISTORY_PER_CHAT items of the MAX_CHATS chats most
recently active, the newest CALLS_KEPT API calls. A delivery is recorded on the sandbox's hot
path (about 2,000 a second under `frontdesk bench`): it costs a lock, a deque append and the
JSON the recorder already made, shared, not copied.

A chat's items are ordered by time: a sender that reports its events after posting them (bench
reports a run's events when it is over) still has them shown before the answers they caused.
"""
from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict, deque
from typing import NamedTuple

HISTORY_PER_CHAT = 200
MAX_CHATS = 1000
CALLS_KEPT = 5000                 # API calls kept for the inspector, with their bodies
BODY_SHOWN_BYTES = 64 * 1024      # a request or response body longer than this is cut for the inspector
EVERYONE = "*"                    # broadcasts and narrowcasts: shown in every one-to-one chat
# Fields of a user turn's event a transcript leaves out: a replay fills in fresh ones.
FRESH_EVENT_FIELDS = ("webhookEventId", "replyToken", "timestamp", "deliveryContext")
SENDING_ENDPOINTS = ("reply", "push", "multicast", "broadcast", "narrowcast")
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


class Item(NamedTuple):
    """One thing a chat saw; its JSON is made when it is read. Held as a plain tuple of plain
    values (Item._make reads one), which the garbage collector stops tracking: the history may
    hold 200,000 of them, and every tracked object (a class's, a NamedTuple's) is scanned again
    by each full collection of the sandbox's process."""
    seq: int
    time: float                      # epoch ms: an event's timestamp, a delivery's time
    kind: str                        # "user", "bot" or "loading"
    payload: bytes                   # bot: the recorder's JSON of the delivery; else a JSON object
    event_id: str | None = None      # a user turn's webhookEventId
    answers: str | None = None       # a bot turn's event, when known (a reply's token, a traced call)
    status: int = 200                # a user turn's webhook status

    def json(self) -> bytes:
        head = b'{"seq":%d,"time":%s,"kind":"%s"' % (self.seq, _JSON.encode(self.time).encode(), self.kind.encode())
        if self.kind == "bot":
            return head + b',"answers":%s,"delivery":%s}' % (_JSON.encode(self.answers).encode(), self.payload)
        return head + b"," + self.payload[1:]


class Call(NamedTuple):
    """An API call the sandbox answered, for the inspector; held as a plain tuple, like Item, made
    on the hot path from references (nothing parsed or copied)."""
    request_id: str
    time: float                      # epoch ms, when it arrived (after the injected latency)
    endpoint: str
    method: str
    path: str
    status: int
    ms: float
    reply_event: str | None          # the event a reply's token names
    trace: str | None                # frontdesk's X-Frontdesk-Trace as sent (JSON): the events it serves
    dropped: bool
    request: bytes | str | None      # the body as sent, or a description of it
    response: bytes | str | None

    def serves(self, event_id: str) -> bool:
        return self.reply_event == event_id or (self.trace is not None and event_id in self.trace and any(
            entry["event"] == event_id for entry in read_trace(self.trace)))


_EVENT_ID = Item._fields.index("event_id")


def chat_type(chat_id: str) -> str:
    """`user`, `group` or `room`, by the id's first letter (U, C, R)."""
    return {"U": "user", "C": "group", "R": "room"}[chat_id[0]]


def event_chat(event: dict) -> str | None:
    """The chat an event belongs to: its group, room or user; None for events without a source."""
    source = event.get("source") or {}
    return source.get("groupId") or source.get("roomId") or source.get("userId")


def _cut(body: bytes | str | None) -> bytes | str | None:
    if isinstance(body, bytes) and len(body) > BODY_SHOWN_BYTES:
        return f"<{len(body)} bytes, the first {BODY_SHOWN_BYTES} shown>\n" + \
            body[:BODY_SHOWN_BYTES].decode("utf-8", "replace")
    return body


def _readable(body: bytes | str | None):
    """A recorded body for the inspector: parsed JSON when it is JSON, else its text."""
    if isinstance(body, bytes):
        try:
            return json.loads(body)
        except ValueError:
            return body.decode("utf-8", "replace")
    return body


class ChatHistory:
    """Items per chat and the API calls behind them; thread-safe. `changed` is notified on every
    new item (long polls of the chat page wait on it)."""

    def __init__(self, per_chat: int = HISTORY_PER_CHAT, max_chats: int = MAX_CHATS,
                 calls_kept: int = CALLS_KEPT):
        self.per_chat, self.max_chats, self.calls_kept = per_chat, max_chats, calls_kept
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self._waiting = 0                 # long polls waiting on `changed`
        self.stopping = False
        self.seq = 0
        self._chats: OrderedDict[str, deque[Item]] = OrderedDict()   # least recently active first
        self._turns: dict[str, Item] = {}                             # user turns by event id
        self._calls: OrderedDict[str, tuple] = OrderedDict()         # API calls (Call tuples) by request id

    # --- recording ---------------------------------------------------------------------------------------
    def _add(self, chat_id: str, item: tuple) -> None:
        """Append an item (an Item's plain tuple, numbered with self.seq) to a chat; call with the
        lock held."""
        items = self._chats.get(chat_id)
        if items is None:
            items = self._chats[chat_id] = deque(maxlen=self.per_chat)
            if len(self._chats) > self.max_chats:
                _, dropped = self._chats.popitem(last=False)
                for old in dropped:
                    if old[_EVENT_ID] is not None:
                        self._turns.pop(old[_EVENT_ID], None)
        else:
            self._chats.move_to_end(chat_id)
        if len(items) == items.maxlen and items[0][_EVENT_ID] is not None:
            self._turns.pop(items[0][_EVENT_ID], None)
        items.append(item)
        if item[_EVENT_ID] is not None:
            self._turns[item[_EVENT_ID]] = item
        if self._waiting:   # a notify costs ~1 us even with no one to wake: most items have no reader
            self.changed.notify_all()

    def add_user_turn(self, event: dict, status: int, ack_ms: float | None, by: str,
                      display_text: str | None = None) -> bool:
        """An event a user sent to the bot and the webhook's answer (`display_text`: what the chat
        shows for a postback with a displayText); False for an event without a source
        (botSuspended and the like belong to no chat)."""
        chat_id = event_chat(event)
        if chat_id is None or not isinstance(event.get("webhookEventId"), str):
            return False
        when = event.get("timestamp") if isinstance(event.get("timestamp"), (int, float)) else time.time() * 1000
        turn = {"event": event, "status": status, "ack_ms": ack_ms, "by": by}
        if display_text is not None:
            turn["displayText"] = display_text
        body = _JSON.encode(turn).encode()
        with self.lock:
            self.seq += 1
            self._add(chat_id, (self.seq, when, "user", body, event["webhookEventId"], None, status))
        return True

    def add_delivery(self, delivery: dict, encoded: bytes, answers: str | None) -> None:
        """A delivery the sandbox accepted (`encoded` is the recorder's JSON of it, shared): shown in
        the chat it went to, each user's for a multicast, every one-to-one chat for a broadcast."""
        endpoint = delivery["endpoint"]
        if endpoint not in SENDING_ENDPOINTS:
            return
        chats = delivery["to"] if endpoint in ("reply", "push", "multicast") else (EVERYONE,)
        with self.lock:
            for chat_id in chats:
                self.seq += 1
                self._add(chat_id, (self.seq, delivery["time"], "bot", encoded, None, answers, 200))

    def add_loading(self, chat_id: str, seconds: int) -> None:
        """The bot started the loading animation in a one-to-one chat."""
        now = time.time() * 1000
        with self.lock:
            self.seq += 1
            self._add(chat_id, (self.seq, now, "loading", _JSON.encode({"seconds": seconds}).encode(), None, None, 200))

    def add_call(self, call: tuple) -> None:
        """An API call the sandbox answered: a Call's plain tuple."""
        with self.lock:
            self._calls[call[0]] = call
            if len(self._calls) > self.calls_kept:
                self._calls.popitem(last=False)

    def stop_waiting(self) -> None:
        with self.lock:
            self.stopping = True
            self.changed.notify_all()

    # --- reading -----------------------------------------------------------------------------------------
    def _items(self, chat_id: str) -> list[Item]:
        """A chat's items in time order (call with the lock held)."""
        items = list(self._chats.get(chat_id, ()))
        if chat_type(chat_id) == "user":
            items += self._chats.get(EVERYONE, ())
        return sorted(map(Item._make, items), key=lambda item: (item.time, item.seq))

    def page(self, chat_id: str, since: int, wait_s: float) -> bytes:
        """`{"seq": <newest seq>, "items": [...]}`: the chat's items with a seq above `since`, in
        time order; with wait_s, block until there is one or the sandbox stops (long poll)."""
        with self.lock:
            if wait_s > 0:
                self._waiting += 1
                try:
                    self.changed.wait_for(lambda: self.stopping or any(
                        item.seq > since for item in self._newest(chat_id)), timeout=wait_s)
                finally:
                    self._waiting -= 1
            items = [item.json() for item in self._items(chat_id) if item.seq > since]
            return b'{"seq":%d,"items":[%s]}' % (self.seq, b",".join(items))

    def _newest(self, chat_id: str) -> list[Item]:
        """The last item of the chat (and of broadcasts, for a one-to-one chat): enough to tell
        whether anything came since a seq, since seqs only grow."""
        names = (chat_id, EVERYONE) if chat_type(chat_id) == "user" else (chat_id,)
        return [Item._make(self._chats[name][-1]) for name in names if self._chats.get(name)]

    def chats(self) -> list[dict]:
        """Every chat held, most recently active first: id, type, items held, last activity."""
        with self.lock:
            return [{"chatId": chat_id, "type": chat_type(chat_id), "items": len(items),
                     "last_time": Item._make(items[-1]).time if items else None}
                    for chat_id, items in reversed(self._chats.items()) if chat_id != EVERYONE]

    def call(self, request_id: str) -> dict | None:
        """One API call for the inspector, bodies parsed; None once forgotten (CALLS_KEPT)."""
        with self.lock:
            call = self._calls.get(request_id)
        return None if call is None else _shown(Call._make(call))

    def trace(self, event_id: str) -> dict:
        """An event's path for the inspector: the user turn (webhook JSON, status, ack), each API
        call that served it (with frontdesk's trace: handler, times), and what was delivered."""
        with self.lock:
            turn = self._turns.get(event_id)
            turn = None if turn is None else Item._make(turn)
            calls = [call for call in map(Call._make, self._calls.values()) if call.serves(event_id)]
            chat_id = None if turn is None else event_chat(json.loads(turn.json())["event"])
            deliveries = [json.loads(item.json()) for item in (self._items(chat_id) if chat_id else ())
                          if item.kind == "bot" and item.answers == event_id]
        return {"turn": None if turn is None else json.loads(turn.json()),
                "calls": [_shown(call) for call in sorted(calls, key=lambda c: c.time)],
                "deliveries": deliveries}

    def transcript(self, chat_id: str, name_of) -> dict:
        """The chat as a transcript (docs/sandbox.md, "Transcripts"): the events users sent that the
        receiver took (200), each followed by what the bot sent in answer, in order. `name_of(user
        id)` gives a speaker's display name."""
        with self.lock:
            items = [(item, json.loads(item.json())) for item in self._items(chat_id)
                     if item.kind in ("user", "bot")]
        blocks: list[list[dict]] = [[]]          # blocks[0]: what the bot sent before any user turn
        block_of: dict[str, list[dict]] = {}
        speakers: dict[str, None] = {}
        for item, shown in items:
            if item.kind == "user":
                if item.status != 200:
                    continue
                event = _replayable(shown["event"])
                speaker = (event.get("source") or {}).get("userId")
                if speaker:
                    speakers[speaker] = None
                blocks.append([{"user": speaker, "event": event}])
                block_of[item.event_id] = blocks[-1]
            else:
                delivery = shown["delivery"]
                turn = {"bot": delivery["endpoint"], "messages": delivery["messages"]}
                block_of.get(item.answers, blocks[-1]).append(turn)
        return {"frontdesk_transcript": 1, "chat": {"type": chat_type(chat_id), "id": chat_id},
                "users": [{"userId": uid, "displayName": name_of(uid)} for uid in speakers],
                "turns": [turn for block in blocks for turn in block]}


def _replayable(event: dict) -> dict:
    """The event without what a replay fills in anew: ids, reply token, time, delivery context."""
    event = {k: v for k, v in event.items() if k not in FRESH_EVENT_FIELDS}
    if isinstance(event.get("message"), dict):
        event["message"] = {k: v for k, v in event["message"].items() if k != "id"}
    return event


def _shown(call: Call) -> dict:
    """A call for the inspector: bodies and trace parsed."""
    shown = call._asdict()
    shown.update(ms=round(call.ms, 3), request=_readable(_cut(call.request)),
                 response=_readable(_cut(call.response)), trace=read_trace(call.trace))
    return shown


def read_trace(header: str | None) -> list[dict]:
    """frontdesk's trace header: a JSON list of {"event", "call", "handler", "received_at",
    "handed_at"} (ratelimiter/line_api.py); whatever is not that is left out."""
    try:
        entries = json.loads(header) if header else []
    except ValueError:
        return []
    if not isinstance(entries, list):
        return []
    return [entry for entry in entries if isinstance(entry, dict) and isinstance(entry.get("event"), str)]
