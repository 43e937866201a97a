"""Acting as LINE's webhook sender: realistic events of every type, signed and posted.

Used by `frontdesk bench` (whose load generator posts them at a steady rate), `frontdesk run
--sandbox --demo` and tests. Reply tokens are minted
here and verified by the sandbox API with no shared state: a token is the event's source,
webhook event id and timestamp, sealed with an HMAC under the channel secret, so the sandbox
can tell whom a reply goes to, which event it answers, and whether it has expired.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import itertools
import json
import os
import time
import urllib.parse
from dataclasses import dataclass

from frontdesk.protocol.events import webhook_signature

# The bot's own user id: the `destination` of every webhook body the generator builds.
BOT_USER_ID = "U" + hashlib.sha256(b"frontdesk sandbox bot").hexdigest()[:32]

# Every event type of LINE's webhook.yml (and messageEdited, added since), grouped by the sources
# LINE sends them from. Message kinds are the message's type.
MESSAGE_KINDS = ("text", "image", "video", "audio", "file", "location", "sticker")
ANY_SOURCE_KINDS = MESSAGE_KINDS + ("postback", "unsend", "videoPlayComplete")
ONE_TO_ONE_KINDS = ("follow", "unfollow", "beacon", "accountLink", "membership")   # user sources only
USER_EVENT_KINDS = ANY_SOURCE_KINDS + ONE_TO_ONE_KINDS   # the kinds a user sends in a one-to-one chat
# From a group or room, the source without userId (memberJoined/memberLeft name the users inside).
GROUP_ONLY_KINDS = ("join", "leave", "memberJoined", "memberLeft")
GROUP_CHAT_KINDS = ("messageEdited",)   # only group chats can edit messages (source with userId)
NO_SOURCE_KINDS = ("botSuspended", "botResumed", "module", "activated", "deactivated", "delivery")
EVENT_KINDS = USER_EVENT_KINDS + GROUP_ONLY_KINDS + GROUP_CHAT_KINDS + NO_SOURCE_KINDS
# Events LINE sends without a reply token (nothing can be answered to them).
NO_REPLY_KINDS = frozenset({"unfollow", "unsend", "leave", "memberLeft"}) | frozenset(NO_SOURCE_KINDS)

# Message ids end in a digit telling the sandbox which content the message has (see
# message_content): LINE's ids are opaque numbers, and this keeps the sandbox stateless.
CONTENT_KINDS = {1: ("image", "image/jpeg"), 2: ("video", "video/mp4"), 3: ("audio", "audio/x-m4a"),
                 4: ("file", "application/octet-stream")}
_CONTENT_CODES = {kind: code for code, (kind, _) in CONTENT_KINDS.items()}

_TOKEN_CONTEXT = b"frontdesk sandbox reply token\0"
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_CROCKFORD_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]   # 10 bits -> 2 characters


class ReplyTokenError(ValueError):
    """A reply token that this channel's sandbox did not mint, or that was altered."""


@dataclass(frozen=True)
class ReplyToken:
    source_key: str      # the conversation a reply goes to: userId, groupId or roomId
    event_id: str        # the webhookEventId of the event the token came with ("" if none)
    issued_ms: int       # the event's timestamp: the token expires relative to it


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _token_mac(secret: str, payload: str) -> str:
    return _b64(hmac.new(secret.encode(), _TOKEN_CONTEXT + payload.encode("ascii"), hashlib.sha256).digest()[:18])


def mint_reply_token(secret: str, source_key: str, event_id: str = "", issued_ms: int | None = None) -> str:
    """A reply token the sandbox of this channel secret accepts once, until it expires."""
    issued_ms = int(time.time() * 1000) if issued_ms is None else issued_ms
    payload = _b64(json.dumps([source_key, event_id, issued_ms, _b64(os.urandom(6))],
                              separators=(",", ":")).encode())
    return payload + "." + _token_mac(secret, payload)


def read_reply_token(secret: str, token: str) -> ReplyToken:
    """Verify and open a token from mint_reply_token; ReplyTokenError if it is not one."""
    payload, dot, mac = token.partition(".")
    if not dot or not hmac.compare_digest(_token_mac(secret, payload), mac):
        raise ReplyTokenError("not a reply token of this channel")
    try:
        source_key, event_id, issued_ms, _nonce = json.loads(_unb64(payload))
    except (ValueError, TypeError) as exc:  # only possible with a forged MAC
        raise ReplyTokenError(f"unreadable reply token: {exc}") from None
    return ReplyToken(source_key, event_id, issued_ms)


def _hex_id(prefix: str, kind: str, n: int) -> str:
    return prefix + hashlib.sha256(f"frontdesk {kind} {n}".encode()).hexdigest()[:32]


def user_id(n: int) -> str:
    """A deterministic, LINE-shaped user id (U + 32 hex digits) for user number n."""
    return _hex_id("U", "user", n)


def group_id(n: int) -> str:
    return _hex_id("C", "group", n)


def room_id(n: int) -> str:
    return _hex_id("R", "room", n)


def user_source(uid: str) -> dict:
    return {"type": "user", "userId": uid}


def group_source(gid: str, uid: str) -> dict:
    return {"type": "group", "groupId": gid, "userId": uid}


def room_source(rid: str, uid: str) -> dict:
    return {"type": "room", "roomId": rid, "userId": uid}


def source_key(source: dict) -> str:
    """Where a reply to an event from this source goes (the conversation key)."""
    return source.get("groupId") or source.get("roomId") or source["userId"]


def describe_source(source: dict | None) -> str:
    """`user U…`, `group C… (user U…)`, `room R…`, or `no source`: for people reading output."""
    if source is None:
        return "no source"
    where = source.get("groupId") or source.get("roomId")
    if where is None:
        return f"user {source.get('userId')}"
    return f"{source['type']} {where}" + (f" (user {source['userId']})" if source.get("userId") else "")


def source_for(kind: str, uid: str, chat: int = 0) -> dict | None:
    """The source LINE sends a `kind` event from, for user `uid`: a one-to-one chat where the kind
    can come from one, else group number `chat`; None for the kinds without a source."""
    if kind in NO_SOURCE_KINDS:
        return None
    if kind in GROUP_ONLY_KINDS or kind in GROUP_CHAT_KINDS:
        return group_source(group_id(chat), uid)
    return user_source(uid)


def new_webhook_event_id(now_ms: int | None = None) -> str:
    """A ULID like LINE's webhookEventId: 48-bit milliseconds then 80 random bits, Crockford base32."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (now_ms << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join([_CROCKFORD_PAIRS[(value >> shift) & 1023] for shift in range(120, -1, -10)])


def message_content(message_id: str) -> tuple[str, bytes] | None:
    """(content type, bytes) of a message's content, or None for messages without content.

    Deterministic, so a test can compare what it downloaded with what it expects.
    """
    if not message_id.isdigit():
        return None
    kind = CONTENT_KINDS.get(int(message_id) % 10)
    if kind is None:
        return None
    size = 1024 + int(message_id) % 3072
    return kind[1], hashlib.shake_256(message_id.encode()).digest(size)


class EventFactory:
    """Builds webhook events as LINE sends them today (webhook event objects, mode "active").

    One factory per sender: message ids are unique within it, webhook event ids everywhere.
    """

    def __init__(self, secret: str, destination: str = BOT_USER_ID):
        self.secret = secret
        self.destination = destination
        self._message_ids = itertools.count(int.from_bytes(os.urandom(5), "big") * 1000)

    def message_id(self, kind: str = "text") -> str:
        return str(next(self._message_ids) * 10 + _CONTENT_CODES.get(kind, 0))

    def event(self, kind: str, source: dict | None, *, text: str | None = None, timestamp_ms: int | None = None,
              redelivery: bool = False, details: dict | None = None) -> dict:
        """One event of `kind` (see EVENT_KINDS) from `source` (None for NO_SOURCE_KINDS; source_for
        gives the right one); `text` for text messages and postback data. `details` replaces
        generated kind-specific fields, a map merging into the generated map (`{"message":
        {"emojis": [...]}}` keeps the message's id), so a played user can send exactly what LINE would.

        join, leave, memberJoined and memberLeft come from a group or room source without userId,
        as LINE sends them (a given userId is the member who joined or left). Raises ValueError
        for a kind LINE never sends from this source.
        """
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {kind!r}; kinds: {', '.join(EVENT_KINDS)}")
        _check_source(kind, source)
        now_ms = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        event_id = new_webhook_event_id(now_ms)
        kind_type = "message" if kind in MESSAGE_KINDS else kind
        event = {"type": kind_type, "mode": "active", "timestamp": now_ms}
        if source is not None:
            event["source"] = ({k: v for k, v in source.items() if k != "userId"} if kind in GROUP_ONLY_KINDS
                               else source)
        event.update(webhookEventId=event_id, deliveryContext={"isRedelivery": redelivery})
        if kind not in NO_REPLY_KINDS:
            event["replyToken"] = mint_reply_token(self.secret, source_key(source), event_id, now_ms)
        fields = getattr(self, "_" + kind)(source, text)
        for name, value in (details or {}).items():
            generated = fields.get(name)
            fields[name] = {**generated, **value} if isinstance(generated, dict) and isinstance(value, dict) else value
        event.update(fields)
        return event

    # One builder per kind: the kind-specific fields of the event.
    def _text(self, source, text):
        return {"message": {"type": "text", "id": self.message_id(), "quoteToken": _b64(os.urandom(12)),
                            "text": "こんにちは" if text is None else text}}

    def _image(self, source, text):
        return {"message": {"type": "image", "id": self.message_id("image"), "quoteToken": _b64(os.urandom(12)),
                            "contentProvider": {"type": "line"}}}

    def _video(self, source, text):
        return {"message": {"type": "video", "id": self.message_id("video"), "quoteToken": _b64(os.urandom(12)),
                            "duration": 8000, "contentProvider": {"type": "line"}}}

    def _audio(self, source, text):
        return {"message": {"type": "audio", "id": self.message_id("audio"), "duration": 3000,
                            "contentProvider": {"type": "line"}}}

    def _file(self, source, text):
        message_id = self.message_id("file")
        return {"message": {"type": "file", "id": message_id, "fileName": f"file-{message_id}.bin",
                            "fileSize": len(message_content(message_id)[1])}}

    def _location(self, source, text):
        return {"message": {"type": "location", "id": self.message_id(), "title": "東京駅",
                            "address": "東京都千代田区丸の内1丁目", "latitude": 35.681236, "longitude": 139.767125}}

    def _sticker(self, source, text):
        return {"message": {"type": "sticker", "id": self.message_id(), "quoteToken": _b64(os.urandom(12)),
                            "packageId": "446", "stickerId": "1988", "stickerResourceType": "STATIC",
                            "keywords": ["happy", "smile"]}}

    def _follow(self, source, text):
        return {"follow": {"isUnblocked": False}}

    def _unfollow(self, source, text):
        return {}

    def _postback(self, source, text):
        """`params` only where LINE sets it: a datetime picker's choice (postback data `datetime...`)."""
        data = text or "action=buy&itemid=111"
        if data.startswith("datetime"):
            return {"postback": {"data": data, "params": {"datetime": "2026-01-01T09:00"}}}
        return {"postback": {"data": data}}

    def _unsend(self, source, text):
        return {"unsend": {"messageId": self.message_id()}}

    def _beacon(self, source, text):
        return {"beacon": {"hwid": "d41d8cd98f", "type": "enter"}}

    def _accountLink(self, source, text):
        return {"link": {"result": "ok", "nonce": _b64(os.urandom(12))}}

    def _videoPlayComplete(self, source, text):
        return {"videoPlayComplete": {"trackingId": "track-1"}}

    def _join(self, source, text):
        return {}

    def _leave(self, source, text):
        return {}

    def _memberJoined(self, source, text):
        return {"joined": {"members": [{"type": "user", "userId": source.get("userId") or user_id(0)}]}}

    def _memberLeft(self, source, text):
        return {"left": {"members": [{"type": "user", "userId": source.get("userId") or user_id(0)}]}}

    def _messageEdited(self, source, text):
        """The edited text message: same id as the original would have, new text."""
        return {"message": {"type": "text", "id": self.message_id(), "quoteToken": _b64(os.urandom(12)),
                            "text": "（編集済み）" if text is None else text}}

    def _membership(self, source, text):
        return {"membership": {"type": "joined", "membershipId": 1}}

    def _module(self, source, text):
        return {"module": {"type": "attached", "botId": BOT_USER_ID, "scopes": ["message:send"]}}

    def _activated(self, source, text):
        return {"chatControl": {"expireAt": int(time.time() * 1000) + 3600_000}}

    def _deactivated(self, source, text):
        return {}

    def _botSuspended(self, source, text):
        return {}

    def _botResumed(self, source, text):
        return {}

    def _delivery(self, source, text):
        return {"delivery": {"data": hashlib.sha256(b"+818000001234").hexdigest()}}

    def body(self, events: list[dict]) -> bytes:
        """The webhook body for these events, as compact JSON bytes."""
        return json.dumps({"destination": self.destination, "events": events},
                          ensure_ascii=False, separators=(",", ":")).encode()


def _check_source(kind: str, source: dict | None) -> None:
    """ValueError for a source LINE never sends `kind` from."""
    source_type = None if source is None else source.get("type")
    if kind in NO_SOURCE_KINDS:
        if source is not None:
            raise ValueError(f"a {kind} event has no source (give None, not a {source_type} source)")
    elif source is None:
        raise ValueError(f"a {kind} event needs a source")
    elif kind in GROUP_ONLY_KINDS and source_type not in ("group", "room"):
        raise ValueError(f"a {kind} event comes from a group or room source, not {source_type!r}")
    elif kind in GROUP_CHAT_KINDS and source_type != "group":
        raise ValueError(f"a {kind} event comes from a group source, not {source_type!r}")
    elif kind in ONE_TO_ONE_KINDS and source_type != "user":
        raise ValueError(f"a {kind} event comes from a one-to-one chat (user source), not {source_type!r}")


def signature(body: bytes, secret: str) -> str:
    """The x-line-signature header for a body."""
    return webhook_signature(secret.encode(), body).decode("ascii")


def post_webhook(url: str, secret: str, body: bytes, timeout: float = 10.0) -> int:
    """Post one signed body; return the HTTP status (0 if no answer came)."""
    connection = WebhookConnection(url, timeout)
    try:
        return connection.post(body, signature(body, secret))
    finally:
        connection.close()


class WebhookConnection:
    """One keep-alive connection to the receiver (http.client: ~3x less CPU per call than requests)."""

    def __init__(self, url: str, timeout: float):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        factory = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        self._connect = lambda: factory(parts.hostname, parts.port, timeout=timeout)
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._http = self._connect()

    def post(self, body: bytes, signature_header: str) -> int:
        try:
            self._http.request("POST", self._path, body, {"Content-Type": "application/json",
                                                          "X-Line-Signature": signature_header})
            answer = self._http.getresponse()
            answer.read()
            return answer.status
        except (OSError, http.client.HTTPException):
            self._http.close()
            self._http = self._connect()
            return 0

    def close(self) -> None:
        self._http.close()


REPORT_BATCH = 1000   # events per request telling the sandbox what was sent


def report_sent(sandbox_url: str, sent: list[dict], by: str, timeout: float = 10.0) -> int:
    """Tell the sandbox's chat history what was posted to the receiver directly, so that the chat
    page shows it (`frontdesk say`, `frontdesk bench`): `sent` holds `{"event": <the event>,
    "status": <the webhook's HTTP status>, "ack_ms"?: <its answer time>}` per event, `by` names
    the sender. Posted in batches of REPORT_BATCH; returns how many events the sandbox recorded
    (0 when it could not be reached: the chat page then misses them, nothing else does)."""
    parts = urllib.parse.urlsplit(sandbox_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    recorded = 0
    try:
        for start in range(0, len(sent), REPORT_BATCH):
            body = json.dumps({"by": by, "events": sent[start:start + REPORT_BATCH]}, ensure_ascii=False,
                              separators=(",", ":")).encode()
            connection.request("POST", "/sandbox/chats/sent", body, {"Content-Type": "application/json"})
            answer = connection.getresponse()
            data = answer.read()
            if answer.status != 200:
                break
            recorded += json.loads(data)["recorded"]
    except (OSError, http.client.HTTPException, ValueError, KeyError):
        pass
    finally:
        connection.close()
    return recorded
