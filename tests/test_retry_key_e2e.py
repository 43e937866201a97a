"""The drop-and-retry path end to end: a handler pushes through `frontdesk run --sandbox` while
the sandbox drops half the connections after the push took effect. The rate limiter sends the
push again with the same X-Line-Retry-Key, the sandbox answers 409 with the accepted request's
sentMessages (as LINE does), and the handler gets those: the ids of the messages users really
got, once each."""
from __future__ import annotations

import sys

import requests

from frontdesk.sandbox.webhooks import EventFactory, post_webhook, user_id, user_source
from frontdesk.store import open_store
from tests.helpers import wait_until
from tests.test_webhooks import bench_system, running_system

PUSHER = """
from frontdesk import Bot

bot = Bot("pusher", max_in_flight=4)


@bot.on_message("text")
def on_text(event, api):
    result = api.push(event.user_id, "pushed: " + event.message.text)
    api.user_set_data(event.user_id, {"sent": [m["id"] for m in result["sentMessages"]],
                                      "repeat": "request_id" in result})


bot.run()
"""
USERS = 12


def test_a_push_whose_answer_was_lost_still_gives_the_handler_the_accepted_sent_messages(tmp_path):
    script = tmp_path / "pusher.py"
    script.write_text(PUSHER)
    with running_system(tmp_path, handler=f"{sys.executable} {script}", sandbox_drop_rate=0.5,
                        batching="false", api_max_retries=20) as (url, sandbox_url, env):
        secret = env.get("LINE_CHANNEL_SECRET") or "frontdesk-sandbox-secret"
        factory = EventFactory(secret)
        users = [user_id(900 + n) for n in range(USERS)]
        for n, user in enumerate(users):
            assert post_webhook(url, secret, factory.body([factory.event("text", user_source(user), text=str(n))])) == 200
        store = open_store(env["FRONTDESK_STORE"])
        try:
            def handled():
                records = {user: store.user_get(user) for user in users}
                return records if all(r and r["data"].get("sent") for r in records.values()) else None
            records = wait_until(handled, timeout=60, message="every push answered to its handler")
        finally:
            store.close()
        deliveries = requests.get(f"{sandbox_url}/sandbox/deliveries", timeout=10).json()
        stats = requests.get(f"{sandbox_url}/sandbox/stats", timeout=10).json()
    pushes = {d["to"][0]: d["sent_message_ids"] for d in deliveries if d["endpoint"] == "push"}
    assert sorted(pushes) == sorted(users)                   # each user got the push once
    assert {user: records[user]["data"]["sent"] for user in users} == pushes
    assert stats["calls"]["push"].get("409", 0) > 0         # some pushes went twice: LINE dropped the repeat
    assert any(records[user]["data"]["repeat"] for user in users)


def test_replies_whose_connection_dropped_reach_each_user_once_and_never_as_a_push(tmp_path):
    """The sandbox drops 60 % of connections after the call took effect, and the rate limiter gives
    up after one retry, so many replies fail (retryably) after LINE delivered them and their events
    come again. The repeat finds the token used: delivered by the earlier attempt, not a push."""
    with running_system(tmp_path, sandbox_drop_rate=0.6, api_max_retries=1, retry_backoff_s=0.05,
                        retry_backoff_max_s=0.2, max_attempts=30) as system:
        report = bench_system(system, "--count", "40", "--rate", "40", "--users", "10")
    assert report["acked"] == report["expected"] == report["delivered"] == 40
    assert report["duplicates"] == 0 and report["lost"] == 0 and report["replies_as_push"] == 0
    log = (tmp_path / "run.log").read_text(errors="replace")
    assert "action=taken_as_delivered" in log   # the path under test was taken
