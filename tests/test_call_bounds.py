"""A handler that keeps calling the API but stops reading its stdin starves no one (real processes:
dispatchers with the hoarding handler of tests/handlers/hoarder.py, the rate limiter, the sandbox).
Its calls past its event's bound wait in the dispatcher, the rate limiter stays small, the other
handlers' events flow, it is declared stuck once it has read nothing for event_deadline_s, and
what it left at the rate limiter is withdrawn."""
from __future__ import annotations

import os
import signal
import sys

from tests.dispatcher_harness import NO_LINE, ready_pids
from tests.helpers import wait_until
from tests.sandbox_harness import TOKEN, running_sandbox

HOARDER = f"{sys.executable} -m tests.handlers.hoarder"
BLOB_BYTES = 2_000_000


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def test_a_handler_that_stops_reading_has_its_calls_held_and_starves_no_one(harness):
    """99 calls whose answers are 2 MB each, never read: before, the rate limiter answered them all
    at once (200 MB queued for the dispatcher, 2 GB with the issue's three handlers)."""
    harness.store.user_set_data("Uhoard", {"blob": "x" * BLOB_BYTES})
    appended = harness.append({"Uhoard": ["hoard"], **{f"U{n}": ["hi"] * 3 for n in range(10)}})
    ordinary = [event_id for event_id in appended if event_id != appended[0]]
    # no call goes to LINE (NO_LINE, said here since it matters)
    # its calls are held 1.2 s after the start on a quiet machine: event_deadline_s=6 kills the
    # hoarder well after the checks on what it holds
    dispatcher = harness.start(handlers=3, handler=HOARDER, event_deadline_s=6, max_attempts=1,
                               env={"FD_TEST_ORDINARY": "user_get", "FD_TEST_HOARD_BYTES": str(BLOB_BYTES),
                                    "FRONTDESK_API_BASE": NO_LINE})
    wait_until(lambda: sum(1 for r in records(harness) if r[0] == "hoard") == 99, timeout=30,
               message="the hoarder's calls made")
    # of its 99 calls a few went to the rate limiter (event_api_max_calls=2 at a time, until its
    # unread answers filled handler_api_max_bytes); the rest wait in the dispatcher, or in its own
    # pipe once the dispatcher holds handler_api_max_calls=64 of them and stops reading it
    doc = harness.wait_status(dispatcher, lambda d: (d["ratelimiter"].get("held_calls") or 0) >= 64,
                              message="the hoarder's calls held in the dispatcher")
    assert peak_rss_mb(doc["ratelimiter"]["pid"]) < 150     # 405 MB before
    # the other handlers' events all went through meanwhile
    wait_until(lambda: {r[1] for r in records(harness) if r[0] == "end"} >= set(ordinary), timeout=30,
               message="every ordinary event acked")
    # it read nothing for event_deadline_s: stuck, killed, its event a dead letter (max_attempts=1;
    # that a stuck handler's event is retried is tests/test_dispatcher_bad_input.py's)
    wait_until(lambda: harness.store.dead_letters(), timeout=60, message="the hoard event dead")
    (dead,) = harness.store.dead_letters()
    assert dead["id"] == appended[0] and "stuck: read nothing of its stdin for event_deadline_s=6" in dead["error"]
    doc = harness.wait_status(dispatcher, lambda d: d["ratelimiter"]["held_calls"] == 0, message="held calls dropped")
    assert doc["ratelimiter"]["pending_calls"] == 0 and dispatcher.poll() is None
    assert peak_rss_mb(doc["ratelimiter"]["pid"]) < 150


def test_what_a_killed_handler_left_at_the_rate_limiter_is_withdrawn_before_it_goes_out(harness, tmp_path):
    """LINE allows one bot-info call per 3 s. The hoarder keeps event_api_max_calls=2 of its calls
    queued at the rate limiter (their small answers fit its pipe), the rest wait in the dispatcher.
    Killed, its event is a dead letter (max_attempts=1), and its queued calls are cancelled:
    withdrawn before they go out (one may have been on its way to LINE at that moment)."""
    with running_sandbox(tmp_path) as sandbox:
        appended = harness.append({"Uhoard": ["hoard"]})
        dispatcher = harness.start(handlers=1, handler=HOARDER, rate_limits="default=20/m", max_attempts=1,
                                   event_deadline_s=60, env={"FD_TEST_HOARD_CALL": "bot_info",
                                                             "FRONTDESK_API_BASE": sandbox.url,
                                                             "LINE_CHANNEL_ACCESS_TOKEN": TOKEN})
        harness.wait_status(dispatcher, lambda d: d["ratelimiter"]["pending_calls"] == 2
                            and d["ratelimiter"].get("held_calls", 0) >= 64, timeout=30,
                            message="two calls at the rate limiter, the rest held in the dispatcher")
        hoarder = next(r[2] for r in records(harness) if r[0] == "hoard")
        os.kill(hoarder, signal.SIGKILL)
        sent_before = bot_info_calls(sandbox)

        def settled():
            doc = harness.status(dispatcher)
            stats = (doc or {}).get("ratelimiter", {}).get("stats") or {}
            sent_after = bot_info_calls(sandbox) - sent_before
            return (doc, stats, sent_after) if stats.get("calls_withdrawn", 0) + sent_after == 2 else None
        doc, stats, sent_after = wait_until(settled, timeout=30, message="both queued calls withdrawn or sent")
        assert stats["calls_cancelled"] == 2 and stats["calls_withdrawn"] >= 1 and sent_after <= 1
        assert doc["ratelimiter"]["pending_calls"] == doc["ratelimiter"]["held_calls"] == 0
        assert [d["id"] for d in harness.store.dead_letters()] == appended
        harness.wait_status(dispatcher, lambda d: len(ready_pids(d)) == 1, message="a new handler ready")


def bot_info_calls(sandbox) -> int:
    return sandbox.stats()["calls"].get("bot_info.get", {}).get("200", 0)


def records(harness) -> list[tuple]:
    """The hoarder's record: (what, event id, pid) for start/end, (what, event id, pid, n) for hoard."""
    if not harness.record.exists():
        return []
    rows = []
    for line in harness.record.read_text().splitlines():
        what, event_id, *rest = line.split()
        pid = int(rest[-1])
        rows.append((what, event_id, pid) if what != "hoard" else (what, event_id, pid, int(rest[0])))
    return rows
