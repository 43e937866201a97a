"""Retention in-process: the dispatcher's purger thread against a real SQLite store."""
from tests.helpers import wait_until


def test_the_purger_deletes_done_events_off_the_dispatchers_loop(tmp_path):
    from frontdesk.dispatcher.housekeeping import Purger
    from frontdesk.store import open_store

    store = open_store(f"sqlite:///{tmp_path}/purge.db")
    purger = Purger(store, retention_s=0, interval_s=0.05)
    try:
        store.append("U", [{"type": "message", "timestamp": 1, "webhookEventId": f"e{n}",
                            "source": {"type": "user", "userId": f"U{n}"}} for n in range(1200)], 1)
        store.ack("d", [doc["o"]["_id"] for doc in store.claim("d", 2000, 60)])
        purger.start()
        wait_until(lambda: store.stats()["done"] == 0, timeout=30, message="done events purged")
        store.append("U", [{"type": "message", "timestamp": 1, "webhookEventId": "live",
                            "source": {"type": "user", "userId": "U"}}], 1)
        assert store.stats()["pending"] == 1   # pending events are never purged
    finally:
        purger.stop()
        store.close()


def test_the_purger_prunes_the_statuses_of_processes_long_silent(tmp_path):
    from frontdesk.dispatcher.housekeeping import Purger
    from frontdesk.store import open_store

    store = open_store(f"sqlite:///{tmp_path}/prune.db")
    store.put_status("dispatcher:h:1", {"state": "running"})
    purger = Purger(store, retention_s=3600, interval_s=0.05, status_prune_s=0.2)
    try:
        purger.start()
        wait_until(lambda: store.get_statuses() == {}, timeout=30, message="the silent status pruned")
    finally:
        purger.stop()
        store.close()
