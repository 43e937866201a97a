"""Who the sandbox bot knows: its followers, the groups and rooms it is in and their members, and
the people played on the chat page.

LINE knows these from real users; the sandbox makes them up deterministically, from the same
numbering the webhook generator uses (webhooks.user_id), so a test or a bench run knows what to
expect: the followers are users 0 to FOLLOWERS - 1 of the generator, and any group or room id
has a fixed set of 2 to 50 members derived from the id. What changes is LINE's state: a chat the
bot has left is gone (404) from then on, until a `join` brings it back. The chat page adds people
with the names it gives them (the profile API answers with those) and groups and rooms with the
members it chose.
"""
from __future__ import annotations

import threading

from .api import not_found
from .webhooks import user_id

FOLLOWERS = 1000
MAX_MEMBERS = 50
MAX_PEOPLE = 10000       # people named on the chat page
MAX_PLAYED_CHATS = 1000  # groups and rooms made on the chat page


def display_name(some_id: str) -> str:
    """Deterministic profile names for people nobody named, so tests know what to expect."""
    return f"User-{some_id[-4:]}"


class World:
    """The bot's followers, chats and the people played on the chat page; thread-safe (the loop
    and the threads of blocking calls share it)."""

    def __init__(self):
        self.followers = [user_id(n) for n in range(FOLLOWERS)]
        self._left: set[str] = set()
        self._people: dict[str, dict] = {}           # user id -> {"userId", "displayName", "icon"}
        self._chats: dict[str, dict] = {}            # group/room id -> {"chatId", "type", "name", "members"}
        self._lock = threading.Lock()

    def members(self, chat_id: str) -> list[str]:
        """The members of a group (C...) or room (R...): the ones the chat page chose, else 2 to
        50 of the generator's users, fixed by the id. Raises the 404 LINE answers for a chat the
        bot is not (or no longer) in."""
        with self._lock:
            if chat_id in self._left:
                raise not_found("Not found")
            played = self._chats.get(chat_id)
            if played is not None:
                return list(played["members"])
        seed = int(chat_id[1:9], 16)
        count = 2 + seed % (MAX_MEMBERS - 1)
        return [user_id((seed + 7919 * n) % (10 * FOLLOWERS)) for n in range(count)]

    def leave(self, chat_id: str) -> None:
        """The bot leaves the chat: 404 for it from now on, and for a second leave."""
        with self._lock:
            if chat_id in self._left:
                raise not_found("Not found")
            self._left.add(chat_id)

    def rejoin(self, chat_id: str) -> None:
        """The bot was invited into the chat again (a `join` event)."""
        with self._lock:
            self._left.discard(chat_id)

    # --- the chat page's people and chats ---------------------------------------------------------------
    def person(self, uid: str) -> dict:
        """{"userId", "displayName", "icon"}: as named on the chat page, else the made-up name."""
        with self._lock:
            known = self._people.get(uid)
        if known is not None:
            return dict(known)
        name = display_name(uid)
        return {"userId": uid, "displayName": name, "icon": name[0]}

    def people(self) -> list[dict]:
        with self._lock:
            return [dict(p) for p in self._people.values()]

    def name_person(self, uid: str, name: str, icon: str) -> dict:
        """Add or rename a person; ValueError past MAX_PEOPLE."""
        with self._lock:
            if uid not in self._people and len(self._people) >= MAX_PEOPLE:
                raise ValueError(f"at most {MAX_PEOPLE} people can be named")
            self._people[uid] = person = {"userId": uid, "displayName": name, "icon": icon}
            return dict(person)

    def played_chat(self, chat_id: str) -> dict | None:
        with self._lock:
            chat = self._chats.get(chat_id)
            return None if chat is None else {**chat, "members": list(chat["members"])}

    def played_chats(self) -> list[dict]:
        with self._lock:
            return [{**c, "members": list(c["members"])} for c in self._chats.values()]

    def add_played_chat(self, chat_id: str, kind: str, name: str, members: list[str]) -> dict:
        """A group or room made on the chat page; ValueError past MAX_PLAYED_CHATS."""
        with self._lock:
            if len(self._chats) >= MAX_PLAYED_CHATS:
                raise ValueError(f"at most {MAX_PLAYED_CHATS} groups and rooms can be made")
            self._chats[chat_id] = {"chatId": chat_id, "type": kind, "name": name, "members": list(members)}
            return {**self._chats[chat_id], "members": list(members)}

    def change_members(self, chat_id: str, joined: list[str], left: list[str]) -> None:
        """memberJoined / memberLeft played on the page: the chat's members follow."""
        with self._lock:
            chat = self._chats.get(chat_id)
            if chat is None:
                return
            members = [m for m in chat["members"] if m not in left]
            chat["members"] = members + [m for m in joined if m not in members]
