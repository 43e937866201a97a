"""The profile cache (ratelimiter/profiles.py) with a clock the test moves: memory first, then the
store's users table, a fetched profile kept in both; and the user data methods (userdata.py).
A real SQLite store in a temporary file."""
from __future__ import annotations

import asyncio
import threading

from frontdesk.ratelimiter.profiles import ProfileCache, Profiles
from frontdesk.ratelimiter.userdata import UserData
from frontdesk.store.base import JournalEntry
from tests.unit.clock import Clock
from tests.unit.limiter_parts import settled, sqlite_store, started_writer

PROFILE = {"userId": "U1", "displayName": "User-0001"}


def test_a_cached_profile_answers_while_younger_than_the_ttl():
    cache = ProfileCache(ttl_s=10)
    cache.put("U1", PROFILE, fetched_at=100.0)
    assert cache.get("U1", 110.0) == PROFILE
    assert cache.get("U1", 110.5) is None and cache.get("U2", 100.0) is None


def test_the_oldest_profiles_go_beyond_the_cap_and_a_put_makes_one_newest():
    cache = ProfileCache(ttl_s=10, max_profiles=2)
    cache.put("U1", PROFILE, 100.0)
    cache.put("U2", PROFILE, 100.0)
    cache.put("U1", PROFILE, 101.0)          # U1 is the newest now
    cache.put("U3", PROFILE, 102.0)
    assert cache.get("U2", 102.0) is None and cache.get("U1", 102.0) and cache.get("U3", 102.0)


def test_a_fetched_profile_is_kept_in_memory_and_in_the_store_for_the_other_rate_limiters(tmp_path):
    clock = Clock(1000.0)
    with sqlite_store(tmp_path) as store:
        async def main():
            async with started_writer(store) as writer:
                profiles = Profiles(store, writer, ttl_s=60, clock=clock)
                assert profiles.cached("U1") is None
                profiles.fetched("U1", PROFILE)
                assert profiles.cached("U1") == PROFILE
                await settled(writer)
                other = Profiles(store, writer, ttl_s=60, clock=clock)     # another process, or a restart
                clock.now = 1059.0
                assert other.cached("U1") == PROFILE
                clock.now = 1061.0
                assert other.cached("U1") is None and profiles.cached("U1") is None   # older than the ttl
        asyncio.run(main())


def test_user_data_round_trip_and_refusals(tmp_path):
    with sqlite_store(tmp_path) as store:
        async def main():
            async with started_writer(store) as writer:
                users = UserData(writer, max_bytes=1000)
                answers = []

                def answered(*answer):
                    answers.append(answer)
                users.set_data({"userId": "U42", "data": {"visits": 3}}, answered)
                users.get({"userId": "U42"}, answered)
                users.get({"userId": "Unobody"}, answered)
                await settled(writer)
                (stored, (error, user), unknown) = answers
                assert stored == (None, None) and unknown == (None, None)
                assert error is None and user["data"] == {"visits": 3} and set(user) == {"profile", "followed", "followed_at", "unfollowed_at", "data"}
                nested: list = []
                for _ in range(1000):     # decodable, but deeper than JSON (the store's format) goes
                    nested = [nested]
                users.set_data({"userId": "U42", "data": {"deep": nested}}, answered)
                users.get({"userId": "U42"}, answered)
                await settled(writer)
                (error, _), kept = answers[-2:]
                assert "user_set_data: `data` cannot be stored" in error["message"] and error["retryable"] is False
                assert kept[1]["data"] == {"visits": 3}
                store.close()
                users.set_data({"userId": "U42", "data": {}}, answered)
                await settled(writer)
                assert answers[-1][0]["message"].startswith("store unavailable") and answers[-1][0]["retryable"]
        asyncio.run(main())


def test_user_data_past_the_limit_is_refused_and_the_record_kept(tmp_path):
    """Every user_get answers the whole record, so its size is bounded where it is written: as
    compact UTF-8 JSON, at most user_data_max_bytes."""
    with sqlite_store(tmp_path) as store:
        async def main():
            async with started_writer(store) as writer:
                users = UserData(writer, max_bytes=20)
                answers = []

                def answered(*answer):
                    answers.append(answer)
                users.set_data({"userId": "U1", "data": {"n": "é" * 6}}, answered)      # {"n":"éééééé"}: 20 bytes
                users.set_data({"userId": "U1", "data": {"n": "é" * 7}}, answered)      # 22 bytes
                users.get({"userId": "U1"}, answered)
                await settled(writer)
                fits, (too_large, _), (_, user) = answers
                assert fits == (None, None) and user["data"] == {"n": "é" * 6}
                assert too_large["message"] == ("user_set_data: `data` cannot be stored: it is 22 bytes as JSON,"
                                                " over user_data_max_bytes=20; nothing was stored")
                assert too_large["retryable"] is False
        asyncio.run(main())


def test_a_slow_user_record_holds_up_neither_the_loop_nor_a_journal_write(tmp_path):
    """A handler's record can be megabytes; every reply waits for its journal entry. A gate on the
    users' store thread stands for a slow record: the calls made behind it wait there, not on the
    loop, and the journal's writer writes meanwhile."""
    with sqlite_store(tmp_path) as store:
        async def main():
            async with started_writer(store) as journal_writer, started_writer(store) as users_thread:
                users = UserData(users_thread, max_bytes=1000)
                gate = threading.Event()
                users_thread.call(lambda _: gate.wait(60))
                answers = []

                def answered(*answer):
                    answers.append(answer)
                users.set_data({"userId": "U1", "data": {"visits": 1}}, answered)
                users.get({"userId": "U1"}, answered)
                await journal_writer.journal([JournalEntry("ev", 1, "fp", "started", {"path": "/v2/bot/message/reply"}, None)])
                assert store.journal_get("ev", 1).state == "started" and answers == []
                gate.set()
                await settled(users_thread)
                assert answers[0] == (None, None) and answers[1][1]["data"] == {"visits": 1}
        asyncio.run(main())
