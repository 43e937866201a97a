"""Profiles the rate limiter answered lately, in memory, in front of the store's users table.

Every message of the echo bot asks for its sender's profile; the store keeps profiles for every
dispatcher (and across restarts), but reading the users table for each call cost the rate
limiter a SQLite query per event. A profile changes rarely and is cached for profile_ttl_s (a
day by default), so a process-local copy answers most calls; the store stays the shared truth.
"""
from __future__ import annotations

import time
from typing import Callable

from frontdesk.store import Store

from .storewriter import StoreWriter

MAX_PROFILES = 100_000   # the oldest are forgotten beyond this (the store still has them)


class ProfileCache:
    """Profiles by user id with the time each was fetched; the oldest go beyond max_profiles."""

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


class Profiles:
    """The `profile` method's cache: this process's memory first, then the store's users table
    (another rate limiter's fetch, or an earlier run's); a fetched profile goes into both."""

    def __init__(self, store: Store, writer: StoreWriter, ttl_s: float,
                 clock: Callable[[], float] = time.time, max_profiles: int = MAX_PROFILES):
        self._store = store
        self._writer = writer
        self._clock = clock
        self.cache = ProfileCache(ttl_s, max_profiles)

    def cached(self, user_id: str) -> dict | None:
        """A fresh profile of the user, or None (it is to be fetched). Raises StoreError."""
        now = self._clock()
        profile = self.cache.get(user_id, now)
        if profile is not None:
            return profile
        user = self._store.user_get(user_id)
        if not user or not user.get("profile") or user.get("profile_fetched_at") is None:
            return None
        self.cache.put(user_id, user["profile"], user["profile_fetched_at"])
        return self.cache.get(user_id, now)

    def fetched(self, user_id: str, profile: dict) -> None:
        """LINE gave this profile now: kept here and written to the store (nobody waits for it)."""
        now = self._clock()
        self.cache.put(user_id, profile, now)
        self._writer.call_unawaited("profile_cache_write", lambda store: store.user_put_profile(user_id, profile, now))
