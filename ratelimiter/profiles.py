"""Profiles the rate limiter answered lately, in memory, in front of the store's users table.

Every message of the echo bot asks for its sender's profile; the store keeps profiles for every
dispatcher (and across restarts), but reading the users table for each call cost the rate
limiter a SQLite query per event. A profile changes rarely and is cached for profile_ttl_s (a
day by default), so a process-local copy answers most calls; the store stays the shared truth.
"""
from __future__ import annotations

MAX_PROFILES = 100_000   # the oldest are forgotten beyond this (the store still has them)


class ProfileCache:
    def __init__(self, ttl_s: float, max_profiles: int = MAX_PROFILES):
        self.ttl_s = ttl_s
        self.max_profiles = max_profiles
        self._profiles: dict[str, tuple[float, dict]] = {}   # user id -> (fetched at, profile)

    def get(self, user_id: str, now: float) -> dict | None:
        """A profile fetched less than ttl_s ago, or None."""
        found = self._profiles.get(user_id)
        if found is None or now - found[0] > self.ttl_s:
            return None
        return found[1]

    def put(self, user_id: str, profile: dict, fetched_at: float) -> None:
        self._profiles.pop(user_id, None)        # re-inserted: now the newest
        self._profiles[user_id] = (fetched_at, profile)
        if len(self._profiles) > self.max_profiles:
            del self._profiles[next(iter(self._profiles))]
