"""Beyond one process: a conversation whose events move from one dispatcher to another keeps its
profile cache and its call journal (both live in the store, not in a process), and the whole path
with the store on MongoDB (where FRONTDESK_TEST_MONGODB_URI names a replica set, as in CI's
MongoDB job; skipped otherwise).

Real dispatchers (each with its rate limiter and the bundled echo handler, which fetches the
sender's profile and then replies), the sandbox as the LINE API.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter

import pytest

from frontdesk.sandbox.webhooks import EventFactory, user_id, user_source
from tests.helpers import wait_until
from tests.sandbox_harness import SECRET, TOKEN, running_sandbox
from tests.test_ratelimiter_load import all_deliveries
from tests.test_store_contract import MONGO_URI, mongo_url
from tests.test_webhooks import running_system

ECHO = f"{sys.executable} -m frontdesk.handlers.examples.echo"


def test_a_conversation_moving_between_dispatchers_keeps_its_profile_cache_and_call_journal(harness, tmp_path):
    factory, user = EventFactory(SECRET), user_id(7)
    # latency keeps the reply in flight ("started" in the journal) long enough to kill its dispatcher then
    with running_sandbox(tmp_path, sandbox_latency_ms=400) as sandbox:
        def start_dispatcher():
            return harness.start(handlers=1, handler=ECHO, env={"LINE_CHANNEL_ACCESS_TOKEN": TOKEN},
                                 api_base=sandbox.url, api_data_base=sandbox.url)

        first_event = factory.event("text", user_source(user), text="one")
        harness.store.append("Udest", [first_event], int(time.time() * 1000))
        first = start_dispatcher()
        wait_until(lambda: harness.store.journal_unfinished(), 20,
                   message="the first dispatcher's reply in flight")
        os.kill(first.pid, signal.SIGKILL)   # before the handler's ack: the event is delivered again
        first.wait(10)

        second = start_dispatcher()
        second_event = factory.event("text", user_source(user), text="two")
        harness.store.append("Udest", [second_event], int(time.time() * 1000))
        harness.wait_done(2, timeout=30)

        # without the first rate limiter's journal entry the repeated reply would be refused by LINE
        # (its token is used) and go out again as a push
        deliveries = Counter((d["endpoint"], d["source_event"]) for d in all_deliveries(sandbox))
        assert deliveries == {("reply", first_event["webhookEventId"]): 1, ("reply", second_event["webhookEventId"]): 1}
        assert sandbox.stats()["calls"]["profile"] == {"200": 1}, \
            "the second dispatcher's rate limiter answered the profile from the store's cache"
        assert second.poll() is None


@pytest.mark.skipif(not MONGO_URI, reason="FRONTDESK_TEST_MONGODB_URI is not set")
def test_the_whole_path_with_the_store_on_mongodb_delivers_every_event_once(tmp_path):
    import pymongo

    db = f"fdtest_{uuid.uuid4().hex[:12]}"
    try:
        with running_system(tmp_path, store=mongo_url(MONGO_URI, db)) as (url, sandbox_url, env):
            done = subprocess.run([sys.executable, "-m", "frontdesk", "bench", "--json", "--url", url,
                                   "--sandbox-url", sandbox_url, "--settle", "60", "--count", "60", "--rate", "50",
                                   "--users", "7", "--mix", "text=4,sticker=1,follow=1"],
                                  env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.stdout, done.stderr
        report = json.loads(done.stdout)
        assert report["sent"] == report["acked"] == report["delivered"] == 60, report
        assert report["lost"] == report["duplicates"] == report["http_429"] == report["out_of_order"] == 0, report
    finally:
        pymongo.MongoClient(MONGO_URI).drop_database(db)
