"""Users told to wait during a backlog, through `frontdesk run --sandbox` and the bundled echo bot:
with replies paced at 4 a second, a burst of 20 events waits seconds in the queue; the rate
limiter starts LINE's loading animation for the one-to-one chats among them (the sandbox's stats
say which chats saw it), never for the group or the room, and not at all when the setting is off
or when nothing waits long."""
from __future__ import annotations

import requests

from frontdesk.protocol.config import SANDBOX_CHANNEL_SECRET
from frontdesk.sandbox.webhooks import (EventFactory, group_id, group_source, post_webhook, room_id, room_source,
                                        user_id, user_source)
from frontdesk.store import open_store
from tests.helpers import wait_until
from tests.test_webhooks import bench_system, running_system

USERS = [user_id(n) for n in range(1, 7)]
GROUP, ROOM = group_id(1), room_id(1)


def burst() -> bytes:
    """Two texts from each of six users, four in a group, four in a room: 20 events, one body."""
    factory = EventFactory(SANDBOX_CHANNEL_SECRET)
    sources = [user_source(user) for user in USERS] * 2 + [group_source(GROUP, user_id(9))] * 4 \
        + [room_source(ROOM, user_id(10))] * 4
    return factory.body([factory.event("text", source, text=f"hi {n}") for n, source in enumerate(sources)])


def sandbox_stats(sandbox_url: str) -> dict:
    return requests.get(f"{sandbox_url}/sandbox/stats", timeout=10).json()


def replies(sandbox_url: str) -> int:
    return sandbox_stats(sandbox_url)["calls"].get("reply", {}).get("200", 0)


def loading_rounds(env: dict) -> int:
    """Rounds of the rate limiter's loading check so far (its stats, as the dispatcher publishes them)."""
    store = open_store(env["FRONTDESK_STORE"])
    try:
        docs = [doc for name, doc in store.get_statuses().items() if name.startswith("dispatcher:")]
    finally:
        store.close()
    stats = [((doc.get("ratelimiter") or {}).get("stats") or {}) for doc in docs]
    return max((s.get("loading_rounds", 0) for s in stats), default=0)


def run_burst(system) -> dict:
    url, sandbox_url, _ = system
    assert post_webhook(url, SANDBOX_CHANNEL_SECRET, burst()) == 200
    wait_until(lambda: replies(sandbox_url) == 20, timeout=90, interval=0.2, message="20 replies (4 a second)")
    return sandbox_stats(sandbox_url)


def test_waiting_one_to_one_chats_see_the_animation_and_groups_and_rooms_never(tmp_path):
    with running_system(tmp_path, rate_limits="reply=4/s", loading_after_s=1) as system:
        stats = run_burst(system)
    loading = stats["loading"]
    assert set(loading["by_chat"]) <= set(USERS) and GROUP not in loading["by_chat"] and ROOM not in loading["by_chat"]
    assert loading["chats"] >= 3, loading          # the last replies of the burst came seconds late
    assert stats["calls"]["loading"] == {"202": loading["started"]}   # each one valid to LINE's checks
    assert stats["http_429"] == 0


def test_no_animation_when_the_setting_is_off(tmp_path):
    # at 8 a second the burst's last replies still wait 2 s: past the 1 s that shows the animation above
    with running_system(tmp_path, rate_limits="reply=8/s", loading_after_s=0) as system:
        stats = run_burst(system)
    assert stats["loading"] == {"chats": 0, "started": 0, "by_chat": {}} and "loading" not in stats["calls"]


def test_no_animation_when_nothing_waits_long(tmp_path):
    with running_system(tmp_path, loading_after_s=2) as system:
        url, sandbox_url, env = system
        factory = EventFactory(SANDBOX_CHANNEL_SECRET)
        for n, user in enumerate(USERS):
            assert post_webhook(url, SANDBOX_CHANNEL_SECRET, factory.body([factory.event("text", user_source(user))])) == 200
            wait_until(lambda: replies(sandbox_url) == n + 1, timeout=30, message="each reply before the next event")
        rounds = loading_rounds(env)
        wait_until(lambda: loading_rounds(env) >= rounds + 3, timeout=30, interval=0.2,
                   message="three more rounds of the loading check")
        stats = sandbox_stats(sandbox_url)
    assert stats["loading"]["started"] == 0 and "loading" not in stats["calls"]


def test_bench_reports_how_many_users_saw_the_animation_and_what_it_cost(tmp_path):
    with running_system(tmp_path, rate_limits="reply=25/s", loading_after_s=1) as system:
        report = bench_system(system, "--count", "100", "--rate", "100", "--users", "20")
        stats = sandbox_stats(system[1])
    assert report["delivered"] == 100 and report["lost"] == report["duplicates"] == 0, report
    assert 0 < report["loading_users"] <= 20 and report["loading_users"] == stats["loading"]["chats"]
    assert report["loading_calls"] == stats["loading"]["started"] >= report["loading_users"]
