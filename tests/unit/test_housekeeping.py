"""Retention (dispatcher/housekeeping.py): one pass of the purger against a real SQLite store."""
from __future__ import annotations

import pytest

from frontdesk.dispatcher.housekeeping import Purger, purge_interval
from frontdesk.store import open_store


@pytest.fixture
def store(tmp_path):
    s = open_store(f"sqlite:///{tmp_path / 'fd.db'}")
    yield s
    s.close()


def events(names) -> list[dict]:
    return [{"type": "message", "timestamp": 1, "webhookEventId": name, "source": {"type": "user", "userId": name}}
            for name in names]


def test_a_pass_deletes_done_events_past_retention_and_never_a_pending_one(store):
    store.append("U", events(f"e{n}" for n in range(1200)), 1)
    store.ack("d", [doc["o"]["_id"] for doc in store.claim("d", 2000, 60)])
    store.append("U", events(["live"]), 1)
    Purger(store, retention_s=0).purge_once()
    assert store.stats()["done"] == 0 and store.stats()["pending"] == 1


def test_a_pass_prunes_the_status_documents_of_processes_long_silent(store):
    store.put_status("dispatcher:h:1", {"state": "running"})
    Purger(store, retention_s=3600, status_prune_s=3600).purge_once()
    assert list(store.get_statuses()) == ["dispatcher:h:1"]
    Purger(store, retention_s=3600, status_prune_s=0).purge_once()
    assert store.get_statuses() == {}


def test_it_purges_every_quarter_of_the_retention_between_a_minute_and_an_hour():
    assert [purge_interval(s) for s in (10, 1200, 86400 * 7)] == [60.0, 300.0, 3600.0]


def test_it_is_built_idle():
    purger = Purger(None, retention_s=60)
    assert not purger._thread.is_alive()
