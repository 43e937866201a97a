"""Mark as read through `frontdesk run --sandbox` (real receiver, dispatcher, echo handlers, rate
limiter, sandbox): off by default, on with `mark_as_read`, the sandbox recording each token."""
from __future__ import annotations

import requests

from frontdesk.protocol.config import SANDBOX_CHANNEL_SECRET
from frontdesk.sandbox.webhooks import EventFactory, post_webhook, source_for, user_id
from frontdesk.store import open_store
from tests.helpers import wait_until
from tests.test_webhooks import running_system


def send_messages(url: str, tokens: list[str]) -> list[str]:
    """One text message per token, from users of their own, each carrying its markAsReadToken."""
    factory = EventFactory(SANDBOX_CHANNEL_SECRET)
    events = [factory.event("text", source_for("text", user_id(40 + n)), details={"message": {"markAsReadToken": token}})
              for n, token in enumerate(tokens)]
    assert post_webhook(url, SANDBOX_CHANNEL_SECRET, factory.body(events)) == 200
    return [event["webhookEventId"] for event in events]


def marked(sandbox_url: str) -> list[str]:
    return requests.get(f"{sandbox_url}/sandbox/channel", timeout=5).json()["marked_as_read"]


def all_done(env: dict, count: int) -> bool:
    store = open_store(env["FRONTDESK_STORE"])
    try:
        return store.stats()["done"] >= count
    finally:
        store.close()


def test_acked_messages_are_marked_read_when_the_setting_is_on(tmp_path):
    with running_system(tmp_path, mark_as_read="true", handlers=2) as (url, sandbox_url, env):
        tokens = [f"read-token-{n}" for n in range(5)]
        send_messages(url, tokens)
        wait_until(lambda: sorted(marked(sandbox_url)) == tokens, timeout=30, message="every token marked read")
        assert all_done(env, 5)


def test_mark_as_read_is_off_by_default(tmp_path):
    with running_system(tmp_path, handlers=1) as (url, sandbox_url, env):
        send_messages(url, ["never-sent"])
        wait_until(lambda: all_done(env, 1), timeout=30, message="the event acked")
        # the dispatcher tells the rate limiter at the ack, before the store hears of it; the
        # echo's reply went out, and nothing of a read receipt did
        wait_until(lambda: any(d["endpoint"] == "reply" for d in
                               requests.get(f"{sandbox_url}/sandbox/deliveries", timeout=5).json()), timeout=30)
        assert marked(sandbox_url) == []
