"""The SQLite store's per-user DB: profile cache, follow state and the bot's own data (`users`)."""
from __future__ import annotations

import json
import sqlite3

import orjson

from .base import Users
from .sqlite_connections import SQLiteConnections

# Follow state changes only when the event is newer than what is recorded (LINE may deliver a
# follow and an unfollow out of order).
_FOLLOW_SQL = {
    "follow": """INSERT INTO users (user_id, followed, followed_at) VALUES (?1, 1, ?2)
        ON CONFLICT (user_id) DO UPDATE SET followed = 1, followed_at = ?2
        WHERE ?2 > coalesce(followed_at, 0) AND ?2 > coalesce(unfollowed_at, 0)""",
    "unfollow": """INSERT INTO users (user_id, followed, unfollowed_at) VALUES (?1, 0, ?2)
        ON CONFLICT (user_id) DO UPDATE SET followed = 0, unfollowed_at = ?2
        WHERE ?2 > coalesce(followed_at, 0) AND ?2 > coalesce(unfollowed_at, 0)""",
}


class SQLiteUsers(Users):
    """The `users` table: one row per user the bot has heard of."""

    def __init__(self, db: SQLiteConnections):
        self._db = db

    @staticmethod
    def record_follow(conn: sqlite3.Connection, kind: str, user_id: str, at: float) -> None:
        """Inside the append's transaction: a follow or unfollow event at `at` (epoch s)."""
        conn.execute(_FOLLOW_SQL[kind], (user_id, at))

    def user_get(self, user_id: str) -> dict | None:
        rows = self._db.read("SELECT profile, profile_fetched_at, followed, followed_at, unfollowed_at,"
                             " data FROM users WHERE user_id = ?", (user_id,))
        if not rows:
            return None
        profile, fetched_at, followed, followed_at, unfollowed_at, data = rows[0]
        return {"user_id": user_id, "profile": orjson.loads(profile) if profile else None,
                "profile_fetched_at": fetched_at,
                "followed": None if followed is None else bool(followed),
                "followed_at": followed_at, "unfollowed_at": unfollowed_at, "data": json.loads(data)}

    def user_put_profile(self, user_id: str, profile: dict, fetched_at: float) -> None:
        self._db.transaction(lambda conn: conn.execute(
            "INSERT INTO users (user_id, profile, profile_fetched_at) VALUES (?1, ?2, ?3)"
            " ON CONFLICT (user_id) DO UPDATE SET profile = ?2, profile_fetched_at = ?3",
            (user_id, orjson.dumps(profile, option=orjson.OPT_NON_STR_KEYS).decode(), fetched_at)))

    def user_set_data(self, user_id: str, data: dict) -> None:
        text = json.dumps(data)   # before the transaction: every writer waits while it is open
        self._db.transaction(lambda conn: conn.execute(
            "INSERT INTO users (user_id, data) VALUES (?1, ?2)"
            " ON CONFLICT (user_id) DO UPDATE SET data = ?2", (user_id, text)))
