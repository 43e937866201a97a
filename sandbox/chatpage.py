"""The chat page: a LINE chat simulator in the browser at `GET /chat` (`?user=<userId>`,
`?group=<groupId>`, `?room=<roomId>`), and the JSON routes under /sandbox/ it works with.

The page plays the users: each event it sends is built by the webhook generator (webhooks.py),
signed with the channel secret and posted to the channel's webhook endpoint (the receiver of the
same settings unless set through the API, as on LINE), like every webhook LINE sends. What the bot
answers comes back through the chat's history (history.py), long-polled. The page itself is
plain files beside this module (chat.html, chat.css, chat*.js: no build step), served by name
from PAGE_FILES and nothing else of the folder; it puts every text into the page as text, never
as markup, and its Content-Security-Policy runs no script but its own.

Routes (no authentication, like the recorder: the sandbox listens on loopback):

| route | what |
| --- | --- |
| `GET /chat`, `GET /chat/static/{name}` | the page, its styles and scripts |
| `GET /sandbox/chats` | people, groups and rooms made on the page, chats with history |
| `POST /sandbox/people`, `POST /sandbox/groups` | name a user; make a group or room with members |
| `GET /sandbox/chats/{chatId}` | a chat: type, name, members |
| `GET /sandbox/chats/{chatId}/history?since=&wait=` | its items after a seq (long poll) |
| `POST /sandbox/chats/{chatId}/events` | send an event as a user of the chat |
| `GET /sandbox/chats/{chatId}/transcript` | the chat as a transcript |
| `POST /sandbox/chats/sent` | events posted to the receiver directly (`frontdesk say`, bench) |
| `GET /sandbox/chats/{userId}/richmenu?alias=` | the user's rich menu (linked, default, or an alias's) |
| `GET /sandbox/richmenus/{richMenuId}/image` | a rich menu's image |
| `GET /sandbox/uploads/{messageId}` | what a user uploaded |
| `GET /sandbox/events/{eventId}/trace`, `GET /sandbox/calls/{requestId}` | the inspector's figures |

POSTs must say `Content-Type: application/json`: a form on another web site cannot send that
without the browser asking first (and the sandbox never allows it), so no other site can make
the page's users speak.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import time

import falcon

from .api import USER_ID_PATTERN, LineError, send_json
from .history import chat_type
from .webhooks import (GROUP_CHAT_KINDS, GROUP_ONLY_KINDS, USER_EVENT_KINDS, EventFactory, group_source,
                       post_webhook, room_source, user_source)

HERE = os.path.dirname(os.path.abspath(__file__))
# The page's files (package data beside this module, as the status page's): name -> content type.
PAGE_FILES = {"chat.css": "text/css; charset=utf-8", "chat.js": "text/javascript; charset=utf-8",
              "chat-dom.js": "text/javascript; charset=utf-8", "chat-flex.js": "text/javascript; charset=utf-8",
              "chat-render.js": "text/javascript; charset=utf-8"}
CHAT_ID_PATTERN = re.compile(r"[UCR][0-9a-f]{32}")
PLAYABLE_KINDS = frozenset(USER_EVENT_KINDS + GROUP_ONLY_KINDS + GROUP_CHAT_KINDS)
UPLOAD_KINDS = frozenset({"image", "video", "audio", "file"})
MEDIA_TYPE = re.compile(r"[A-Za-z0-9][\w.+-]*/[A-Za-z0-9][\w.+-]*", re.ASCII)
MAX_WAIT_S = 30.0
WEBHOOK_TIMEOUT_S = 10.0
MAX_NAME = 40
PAGE_HEADERS = {
    # the page runs its own scripts only: no inline script, no handler attribute, no eval
    "Content-Security-Policy": "default-src 'self'; img-src * data: blob:; media-src * data: blob:; "
                               "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
# What users or bots uploaded (an SVG may hold a script): shown as images, never run as pages.
UPLOAD_HEADERS = {"Content-Security-Policy": "default-src 'none'; sandbox", "X-Content-Type-Options": "nosniff"}


def _bad(message: str) -> LineError:
    return LineError(400, message)


def _page_json(req: falcon.Request) -> dict:
    """The JSON object a POST from the page carries; 415 unless it says application/json."""
    if (req.content_type or "").split(";")[0].strip().lower() != "application/json":
        raise LineError(415, "send the body as JSON with Content-Type: application/json")
    try:
        body = json.loads(req.bounded_stream.read())
    except (UnicodeDecodeError, ValueError) as exc:
        raise _bad(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _bad("the body must be a JSON object")
    return body


def _chat_id(chat_id: str) -> str:
    if not CHAT_ID_PATTERN.fullmatch(chat_id):
        raise _bad(f"{chat_id[:40]!r} is not a user, group or room id (U, C or R followed by 32 hex digits)")
    return chat_id


def _user(value, what: str = "user") -> str:
    if not isinstance(value, str) or not USER_ID_PATTERN.fullmatch(value):
        raise _bad(f"`{what}` must be a user id (U followed by 32 hex digits)")
    return value


def _name(value, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME:
        raise _bad(f"`{what}` must be a text of 1 to {MAX_NAME} characters")
    return value.strip()


class PageResource:
    def __init__(self, state):
        self.state = state


class ChatPage(PageResource):
    """GET /chat: the page (it reads ?user=, ?group= or ?room= itself)."""

    def on_get(self, req, resp):
        with open(os.path.join(HERE, "chat.html"), "rb") as page:
            resp.data = page.read()
        resp.content_type = falcon.MEDIA_HTML
        resp.set_headers(PAGE_HEADERS)


class PageFile(PageResource):
    """GET /chat/static/{name}: the page's styles and scripts, by name."""

    def on_get(self, req, resp, name):
        if name not in PAGE_FILES:
            raise LineError(404, f"the chat page has no file {name[:60]!r}")
        with open(os.path.join(HERE, name), "rb") as page_file:
            resp.data = page_file.read()
        resp.content_type = PAGE_FILES[name]
        resp.set_headers(PAGE_HEADERS)


class Chats(PageResource):
    """GET /sandbox/chats: who can be played and which chats have history."""

    def on_get(self, req, resp):
        world = self.state.world
        chats = self.state.history.chats()
        for chat in chats:
            chat["name"] = _chat_name(world, chat["chatId"])
        send_json(resp, 200, {"people": world.people(), "groups": world.played_chats(), "chats": chats})


def _chat_name(world, chat_id: str) -> str:
    if chat_type(chat_id) == "user":
        return world.person(chat_id)["displayName"]
    played = world.played_chat(chat_id)
    return played["name"] if played else f"{chat_type(chat_id).title()}-{chat_id[-4:]}"


class People(PageResource):
    """POST /sandbox/people {"displayName", "icon"?, "userId"?}: a user to play; the profile API
    answers with this name. Without userId one is made from the name (the same name, the same id)."""

    def on_post(self, req, resp):
        body = _page_json(req)
        name = _name(body.get("displayName"), "displayName")
        uid = _user(body["userId"], "userId") if body.get("userId") is not None else _id_for("U", name)
        icon = body.get("icon") or name[0]
        if not isinstance(icon, str) or len(icon) > 8:
            raise _bad("`icon` must be a short text (an emoji or a letter)")
        try:
            send_json(resp, 201, self.state.world.name_person(uid, name, icon))
        except ValueError as exc:
            raise _bad(str(exc)) from None


def _id_for(prefix: str, name: str) -> str:
    """A LINE-shaped id (prefix + 32 hex digits) made from a name, apart from the generator's
    numbered users (webhooks.user_id), which bench plays."""
    return prefix + hashlib.sha256(f"frontdesk chat page {prefix} {name}".encode()).hexdigest()[:32]


class Groups(PageResource):
    """POST /sandbox/groups {"type": "group"|"room", "name"?, "members": [userId, ...]}."""

    def on_post(self, req, resp):
        body = _page_json(req)
        kind = body.get("type", "group")
        if kind not in ("group", "room"):
            raise _bad("`type` must be group or room")
        members = body.get("members")
        if not isinstance(members, list) or not 1 <= len(members) <= 50:
            raise _bad("`members` must be a list of 1 to 50 user ids")
        members = [_user(m, "members[]") for m in members]
        name = _name(body["name"], "name") if body.get("name") is not None else None
        chat_id = _id_for("C" if kind == "group" else "R", f"{time.time_ns()} {name}")
        try:
            chat = self.state.world.add_played_chat(chat_id, kind, name or f"{kind.title()}-{chat_id[-4:]}", members)
        except ValueError as exc:
            raise _bad(str(exc)) from None
        send_json(resp, 201, chat)


class Chat(PageResource):
    """GET /sandbox/chats/{chatId}: type, name and members (each {"userId", "displayName", "icon"})."""

    def on_get(self, req, resp, chat_id):
        world = self.state.world
        kind = chat_type(_chat_id(chat_id))
        if kind == "user":
            members = [chat_id]
        else:
            played = world.played_chat(chat_id)
            members = played["members"] if played else []
        send_json(resp, 200, {"chatId": chat_id, "type": kind, "name": _chat_name(world, chat_id),
                              "members": [world.person(m) for m in members]})


class History(PageResource):
    """GET /sandbox/chats/{chatId}/history?since=<seq>&wait=<s>: blocks (on a thread) up to `wait`
    seconds until the chat has an item after `since`."""

    def on_get(self, req, resp, chat_id):
        _chat_id(chat_id)
        try:
            since = int(req.get_param("since") or 0)
            wait_s = min(float(req.get_param("wait") or 0), MAX_WAIT_S)
        except ValueError:
            raise _bad("since must be an integer, wait a number of seconds") from None
        resp.status, resp.content_type = 200, falcon.MEDIA_JSON
        resp.data = self.state.history.page(chat_id, since, max(wait_s, 0.0))


class Events(PageResource):
    """POST /sandbox/chats/{chatId}/events {"user", "kind", "text"?, "details"?, "content"?,
    "displayText"?}: one event as that user, signed and posted to the webhook endpoint (on a
    thread: it waits for the receiver). `details` overrides generated fields
    (webhooks.EventFactory.event); `content` {"data": base64, "type": mime} is an uploaded image,
    video, audio or file, served to the bot by the content API; `displayText` is what LINE shows in
    the chat for a postback action that has one. Answers {"event", "status", "ack_ms", "webhook"}."""

    def __init__(self, state):
        super().__init__(state)
        self.factory = EventFactory(state.channel_secret)

    def on_post(self, req, resp, chat_id):
        body = _page_json(req)
        kind_of_chat = chat_type(_chat_id(chat_id))
        uid = _user(body.get("user"))
        kind = body.get("kind")
        if kind not in PLAYABLE_KINDS:
            raise _bad(f"`kind` must be one of: {', '.join(sorted(PLAYABLE_KINDS))}")
        if kind_of_chat == "user" and uid != chat_id:
            raise _bad("in a one-to-one chat only its user speaks")
        text, details, shown = body.get("text"), body.get("details"), body.get("displayText")
        if text is not None and not isinstance(text, str):
            raise _bad("`text` must be a string")
        if shown is not None and not isinstance(shown, str):
            raise _bad("`displayText` must be a string")
        if details is not None and not isinstance(details, dict):
            raise _bad("`details` must be a map of event fields")
        source = {"user": lambda: user_source(uid), "group": lambda: group_source(chat_id, uid),
                  "room": lambda: room_source(chat_id, uid)}[kind_of_chat]()
        try:
            event = self.factory.event(kind, source, text=text, details=details)
        except ValueError as exc:
            raise _bad(str(exc)) from None
        if kind in UPLOAD_KINDS and body.get("content") is not None:
            self._keep_upload(event, body["content"])
        self._change_world(kind, chat_id, event)
        with self.state.channel.lock:
            url = self.state.channel.webhook_endpoint
        started = time.perf_counter()
        status = post_webhook(url, self.state.channel_secret, self.factory.body([event]), WEBHOOK_TIMEOUT_S)
        ack_ms = round((time.perf_counter() - started) * 1000.0, 2)
        self.state.history.add_user_turn(event, status, ack_ms, "page", shown)
        send_json(resp, 200, {"event": event, "status": status, "ack_ms": ack_ms, "webhook": url})

    def _keep_upload(self, event: dict, content) -> None:
        if not isinstance(content, dict) or not isinstance(content.get("data"), str):
            raise _bad('`content` must be {"data": <base64>, "type": <media type>}')
        try:
            data = base64.b64decode(content["data"], validate=True)
        except (binascii.Error, ValueError):
            raise _bad("`content.data` is not base64") from None
        media_type = content.get("type") or "application/octet-stream"
        if not isinstance(media_type, str) or not MEDIA_TYPE.fullmatch(media_type):   # served back as a header
            raise _bad("`content.type` must be a media type such as image/png")
        message = event["message"]
        if message["type"] == "file":
            message["fileSize"] = len(data)
        self.state.uploads.put(message["id"], media_type, data)

    def _change_world(self, kind: str, chat_id: str, event: dict) -> None:
        """What the event changes on LINE's side: the bot's membership, a chat's members."""
        world = self.state.world
        if kind == "join":
            world.rejoin(chat_id)
        elif kind == "leave":
            world.rejoin(chat_id)
            world.leave(chat_id)
        elif kind in ("memberJoined", "memberLeft"):
            part = event["joined" if kind == "memberJoined" else "left"]
            users = [m.get("userId") for m in part.get("members", []) if isinstance(m, dict)]
            world.change_members(chat_id, users if kind == "memberJoined" else [],
                                 users if kind == "memberLeft" else [])


class Sent(PageResource):
    """POST /sandbox/chats/sent {"by", "events": [{"event", "status", "ack_ms"?}]}: what a sender
    posted to the receiver itself (webhooks.report_sent), recorded in the chats' history."""

    def on_post(self, req, resp):
        body = _page_json(req)
        by, sent = body.get("by"), body.get("events")
        if not isinstance(by, str) or not isinstance(sent, list):
            raise _bad('the body must be {"by": <sender>, "events": [{"event", "status", "ack_ms"?}]}')
        recorded = 0
        for entry in sent:
            if not isinstance(entry, dict) or not isinstance(entry.get("event"), dict) \
                    or not isinstance(entry.get("status"), int):
                raise _bad('each of `events` must be {"event": <map>, "status": <int>, "ack_ms"?: <number>}')
            ack_ms = entry.get("ack_ms")
            recorded += self.state.history.add_user_turn(
                entry["event"], entry["status"], ack_ms if isinstance(ack_ms, (int, float)) else None, by[:20])
        send_json(resp, 200, {"recorded": recorded})


class Transcript(PageResource):
    """GET /sandbox/chats/{chatId}/transcript: docs/sandbox.md, "Transcripts"."""

    def on_get(self, req, resp, chat_id):
        world = self.state.world
        transcript = self.state.history.transcript(_chat_id(chat_id), lambda uid: world.person(uid)["displayName"])
        send_json(resp, 200, transcript)
        resp.set_header("Content-Disposition", f'attachment; filename="chat-{chat_id}.json"')


class UserRichMenu(PageResource):
    """GET /sandbox/chats/{userId}/richmenu?alias=<richMenuAliasId>: the menu the user sees (the one
    linked to them, else the default), or the menu of an alias a rich-menu switch action named.
    {"richMenuId": null} when there is none."""

    def on_get(self, req, resp, chat_id):
        uid = _user(chat_id, "userId")
        alias = req.get_param("alias")
        menus = self.state.richmenus
        with menus.lock:
            if alias is not None:
                menu_id, source = menus.aliases.get(alias), "alias"
            else:
                menu_id = menus.links.get(uid)
                source = "user" if menu_id else "default"
                menu_id = menu_id or menus.default
            menu = menus.menus.get(menu_id) if menu_id else None
            has_image = menu_id in menus.images
        if menu is None:
            send_json(resp, 200, {"richMenuId": None})
            return
        send_json(resp, 200, {"richMenuId": menu_id, "source": source, "menu": menu,
                              "image": f"/sandbox/richmenus/{menu_id}/image" if has_image else None})


class RichMenuImage(PageResource):
    def on_get(self, req, resp, menu_id):
        with self.state.richmenus.lock:
            image = self.state.richmenus.images.get(menu_id)
        if image is None:
            raise LineError(404, f"rich menu {menu_id[:60]!r} has no image")
        resp.content_type, resp.data = image
        resp.set_headers(UPLOAD_HEADERS)


class Upload(PageResource):
    """GET /sandbox/uploads/{messageId}: what a user of the page uploaded, for the page to show."""

    def on_get(self, req, resp, message_id):
        upload = self.state.uploads.get(message_id)
        if upload is None:
            raise LineError(404, f"no upload {message_id[:40]!r} is held")
        resp.content_type, resp.data = upload
        resp.set_headers(UPLOAD_HEADERS)


class EventTrace(PageResource):
    """GET /sandbox/events/{eventId}/trace: the inspector's view of one event (history.trace)."""

    def on_get(self, req, resp, event_id):
        send_json(resp, 200, self.state.history.trace(event_id))


class Call(PageResource):
    def on_get(self, req, resp, request_id):
        call = self.state.history.call(request_id)
        if call is None:
            raise LineError(404, f"no call {request_id[:60]!r} is held (the newest calls are kept)")
        send_json(resp, 200, call)


ROUTES = {
    "/chat": ChatPage,
    "/chat/static/{name}": PageFile,
    "/sandbox/chats": Chats,
    "/sandbox/people": People,
    "/sandbox/groups": Groups,
    "/sandbox/chats/sent": Sent,
    "/sandbox/chats/{chat_id}": Chat,
    "/sandbox/chats/{chat_id}/history": History,
    "/sandbox/chats/{chat_id}/events": Events,
    "/sandbox/chats/{chat_id}/transcript": Transcript,
    "/sandbox/chats/{chat_id}/richmenu": UserRichMenu,
    "/sandbox/richmenus/{menu_id}/image": RichMenuImage,
    "/sandbox/uploads/{message_id}": Upload,
    "/sandbox/events/{event_id}/trace": EventTrace,
    "/sandbox/calls/{request_id}": Call,
}
