"""Several dispatchers on one store: a conversation whose events move from one dispatcher to
another keeps its profile cache and its call journal (both live in the store, not in a process).

Real dispatchers (each with its rate limiter and the bundled echo handler, which fetches the
sender's profile and then replies) on one SQLite file, the sandbox as the LINE API.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from collections import Counter

from frontdesk.sandbox.webhooks import EventFactory, user_id, user_source
from tests.helpers import wait_until
from tests.sandbox_harness import SECRET, TOKEN, running_sandbox
from tests.test_ratelimiter_load import all_deliveries

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
