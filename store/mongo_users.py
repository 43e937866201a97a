"""The MongoDB store's per-user DB: profile cache, follow state and the bot's own data (`users`)."""
from __future__ import annotations

from .base import Users
from .mongo_connections import MongoConnections
from .mongo_data import storable


class MongoUsers(Users):
    """The `users` collection: one document per user the bot has heard of, `_id` its userId."""

    def __init__(self, db: MongoConnections):
        self._db = db

    def record_follow(self, kind: str, user_id: str, at: float, session) -> None:
        """Inside the append's transaction: follow state changes only when the event is newer than
        what is recorded (LINE may deliver a follow and an unfollow out of order)."""
        user = self._db.users.find_one({"_id": user_id}, session=session) or {}
        if at <= max(user.get("followed_at") or 0, user.get("unfollowed_at") or 0):
            return
        field = "followed_at" if kind == "follow" else "unfollowed_at"
        self._db.users.update_one({"_id": user_id}, {"$set": {"followed": kind == "follow", field: at}},
                                  upsert=True, session=session)

    def user_get(self, user_id: str) -> dict | None:
        doc = self._db.call(lambda: self._db.users.find_one({"_id": user_id}))
        if doc is None:
            return None
        return {"user_id": user_id, "profile": doc.get("profile"),
                "profile_fetched_at": doc.get("profile_fetched_at"), "followed": doc.get("followed"),
                "followed_at": doc.get("followed_at"), "unfollowed_at": doc.get("unfollowed_at"),
                "data": doc.get("data", {})}

    def user_put_profile(self, user_id: str, profile: dict, fetched_at: float) -> None:
        profile = storable(profile)
        self._db.call(lambda: self._db.users.update_one(
            {"_id": user_id}, {"$set": {"profile": profile, "profile_fetched_at": fetched_at}}, upsert=True))

    def user_set_data(self, user_id: str, data: dict) -> None:
        data = storable(data)
        self._db.call(lambda: self._db.users.update_one({"_id": user_id}, {"$set": {"data": data}}, upsert=True))
