"""Who the sandbox bot knows: its followers, the groups and rooms it is in and their members.

LINE knows these from real users; the sandbox makes them up deterministically, from the same
numbering the webhook generator uses (webhooks.user_id), so a test or a bench run knows what to
expect: the followers are users 0 to FOLLOWERS - 1 of the generator, and any group or room id
has a fixed set of 2 to 50 members derived from the id. What changes is LINE's state: a chat the
bot has left is gone (404) from then on.
"""
from __future__ import annotations

import threading

from .api import not_found
from .webhooks import user_id

FOLLOWERS = 1000
MAX_MEMBERS = 50


def _followers() -> list[str]:
    return [user_id(n) for n in range(FOLLOWERS)]


class World:
    """The bot's followers and chats; thread-safe (the loop and the threads of blocking calls share it)."""

    def __init__(self):
        self.followers = _followers()
        self._left: set[str] = set()
        self._lock = threading.Lock()

    def members(self, chat_id: str) -> list[str]:
        """The members of a group (C...) or room (R...): 2 to 50 of the generator's users, fixed by the id.
        Raises the 404 LINE answers for a chat the bot is not (or no longer) in."""
        with self._lock:
            if chat_id in self._left:
                raise not_found("Not found")
        seed = int(chat_id[1:9], 16)
        count = 2 + seed % (MAX_MEMBERS - 1)
        return [user_id((seed + 7919 * n) % (10 * FOLLOWERS)) for n in range(count)]

    def leave(self, chat_id: str) -> None:
        """The bot leaves the chat: 404 for it from now on, and for a second leave."""
        with self._lock:
            if chat_id in self._left:
                raise not_found("Not found")
            self._left.add(chat_id)
