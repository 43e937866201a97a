"""Users and chats: profiles, followers (paged), group and room summaries, member ids (paged),
member counts, member profiles, and leaving a group or room (world.py says who is where)."""
from __future__ import annotations

import re

from .api import USER_ID_PATTERN, Endpoint, not_found, page, send_json
from .world import World

GROUP_PATTERN = re.compile(r"C[0-9a-f]{32}")
ROOM_PATTERN = re.compile(r"R[0-9a-f]{32}")
_CHAT_PATTERNS = {"group": GROUP_PATTERN, "room": ROOM_PATTERN}


def _profile(world: World, user_id: str) -> dict:
    """The name the chat page gave the user, else User-<last 4 characters of the id>."""
    if not USER_ID_PATTERN.fullmatch(user_id):
        raise not_found()
    return {"userId": user_id, "displayName": world.person(user_id)["displayName"], "language": "ja",
            "pictureUrl": f"https://profile.line-scdn.net/sandbox/{user_id}", "statusMessage": "Hello, LINE!"}


class Profile(Endpoint):
    endpoint = "profile"

    def on_get(self, req, resp, user_id):
        send_json(resp, 200, _profile(self.state.world, user_id))


class Followers(Endpoint):
    """GET /v2/bot/followers/ids?start=&limit= (300 by default, at most 1,000 a page)."""

    def on_get(self, req, resp):
        send_json(resp, 200, page(self.state.world.followers, req, "userIds", 300, 1000))


class Chat(Endpoint):
    """A resource under /v2/bot/{group|room}/{id}: the id checked, and 404 once the bot left."""
    kind = "group"

    def members(self, chat_id: str) -> list[str]:
        if not _CHAT_PATTERNS[self.kind].fullmatch(chat_id):
            raise not_found()
        return self.state.world.members(chat_id)


class MemberProfile(Chat):
    """GET /v2/bot/{group|room}/{id}/member/{userId}: the profile without status and language.
    Any user of a chat the bot is in answers (the generator's senders are not in world.members)."""

    def on_get(self, req, resp, chat_id, user_id):
        self.members(chat_id)   # 404 for an id of the wrong kind, and once the bot left
        profile = _profile(self.state.world, user_id)
        send_json(resp, 200, {k: profile[k] for k in ("userId", "displayName", "pictureUrl")})


class GroupSummary(Chat):
    def on_get(self, req, resp, chat_id):
        self.members(chat_id)
        played = self.state.world.played_chat(chat_id)
        send_json(resp, 200, {"groupId": chat_id, "groupName": played["name"] if played else f"Group-{chat_id[-4:]}",
                              "pictureUrl": f"https://profile.line-scdn.net/sandbox/{chat_id}"})


class MemberIds(Chat):
    """GET .../members/ids?start=: 100 member ids a page, as LINE pages them."""

    def on_get(self, req, resp, chat_id):
        send_json(resp, 200, page(self.members(chat_id), req, "memberIds", 100, 100))


class MemberCount(Chat):
    def on_get(self, req, resp, chat_id):
        send_json(resp, 200, {"count": len(self.members(chat_id))})


class Leave(Chat):
    def on_post(self, req, resp, chat_id):
        self.members(chat_id)
        self.state.world.leave(chat_id)
        send_json(resp, 200, {})


def _in(kind: str, resource: type[Chat]) -> type[Chat]:
    """The same resource for rooms: only the id's letter differs."""
    return type(resource.__name__ + "In" + kind.title(), (resource,), {"kind": kind})


ROUTES = {
    "/v2/bot/profile/{user_id}": Profile,
    "/v2/bot/followers/ids": Followers,
    "/v2/bot/group/{chat_id}/summary": GroupSummary,
    **{f"/v2/bot/{kind}/{{chat_id}}/{tail}": _in(kind, resource)
       for kind in ("group", "room")
       for tail, resource in (("member/{user_id}", MemberProfile), ("members/ids", MemberIds),
                              ("members/count", MemberCount), ("leave", Leave))},
}
