"""`frontdesk bench --suite store`: the SQLite store's figures, each on a scratch file.

- append: group-committed appends from 16 concurrent writer threads, synchronous=FULL (an fsync
  per commit); events/s with one event per request (a quiet channel's webhook) and with ten
  (LINE packs several events into one body when a channel is busy).
- claim+ack: batches of 100 over a pre-filled queue of many conversation keys (bookkeeping:
  synchronous=NORMAL); events/s.
- wake-up: another process appends 1,000 times a second; this process follows the change feed
  and reads the new rows with the tail query. Latency = "append() returned in the appender"
  to "the follower read the row" (same machine, CLOCK_MONOTONIC); p50 and p99 in ms.
- idle CPU: a follower waiting on its feed with nothing happening; CPU seconds per second.
"""
from __future__ import annotations

import json
import os
import resource
import selectors
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from frontdesk.store.sqlite import SQLiteStore

WRITER_THREADS = 16
APPENDS_PER_THREAD = 1000
CLAIM_EVENTS = 20000
CLAIM_KEYS = 2000
CLAIM_BATCH = 100
WAKE_RATE = 1000
WAKE_COUNT = 2000
IDLE_SECONDS = 3.0


def _event(n: int, user: str) -> dict:
    return {"type": "message", "mode": "active", "timestamp": 1_700_000_000_000 + n,
            "webhookEventId": f"b{n:08d}", "replyToken": f"rt{n}",
            "source": {"type": "user", "userId": user},
            "message": {"type": "text", "id": str(n), "text": "hello, bench"}}


def _scratch_store(folder: str, name: str) -> SQLiteStore:
    return SQLiteStore(f"sqlite:///{os.path.join(folder, name)}.db").open()


def bench_append(folder: str, events_per_request: int) -> float:
    store = _scratch_store(folder, f"append{events_per_request}")
    start_gate = threading.Barrier(WRITER_THREADS + 1)

    def writer(thread_no: int) -> None:
        start_gate.wait()
        base = thread_no * APPENDS_PER_THREAD * events_per_request
        for first in range(base, base + APPENDS_PER_THREAD * events_per_request, events_per_request):
            store.append("Ubench", [_event(n, f"U{n % 500}") for n in range(first, first + events_per_request)], 0)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(WRITER_THREADS)]
    for thread in threads:
        thread.start()
    start_gate.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    store.close()
    return WRITER_THREADS * APPENDS_PER_THREAD * events_per_request / elapsed


def bench_claim_ack(folder: str) -> float:
    store = _scratch_store(folder, "claim")
    for first in range(0, CLAIM_EVENTS, 500):
        store.append("Ubench", [_event(n, f"U{n % CLAIM_KEYS}") for n in range(first, first + 500)], 0)
    started = time.perf_counter()
    handled = 0
    while batch := store.claim("bench", CLAIM_BATCH, 60):
        store.ack("bench", [doc["o"]["_id"] for doc in batch])
        handled += len(batch)
    elapsed = time.perf_counter() - started
    store.close()
    if handled != CLAIM_EVENTS:
        raise RuntimeError(f"claim+ack handed out {handled} of {CLAIM_EVENTS} events")
    return handled / elapsed


_APPENDER = """
import json, sys, time
from frontdesk.store.sqlite import SQLiteStore
store = SQLiteStore(sys.argv[1]).open()
count, rate = int(sys.argv[2]), float(sys.argv[3])
sys.stdin.readline()                      # go
committed, start = [], time.monotonic()
for n in range(count):
    pause = start + n / rate - time.monotonic()
    if pause > 0:
        time.sleep(pause)                 # open-loop pacing of the load generator
    store.append("Ubench", [{"type": "message", "timestamp": 1, "webhookEventId": f"w{n}",
                             "source": {"type": "user", "userId": f"U{n % 100}"}}], 0)
    committed.append(time.monotonic())
store.close()
print(json.dumps(committed))
"""


def bench_wakeup(folder: str) -> tuple[float, float]:
    """p50, p99 milliseconds from a commit in another process to this follower reading the row."""
    store = _scratch_store(folder, "wake")
    feed = store.change_feed()
    reader = sqlite3.connect(store.path)
    selector = selectors.DefaultSelector()
    selector.register(feed.fileno(), selectors.EVENT_READ)
    appender = subprocess.Popen([sys.executable, "-c", _APPENDER, store.url, str(WAKE_COUNT),
                                 str(WAKE_RATE)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True)
    seen: dict[int, float] = {}
    last_seq = 0
    try:
        appender.stdin.write("go\n")
        appender.stdin.flush()
        while len(seen) < WAKE_COUNT:
            if not selector.select(timeout=10):
                raise RuntimeError(f"no wake-up for 10 s after {len(seen)} events")
            feed.drain()
            rows = reader.execute("SELECT seq, id FROM events WHERE seq > ? ORDER BY seq", (last_seq,)).fetchall()
            now = time.monotonic()
            for seq, event_id in rows:
                seen[int(event_id[1:])] = now
                last_seq = seq
        committed = json.loads(appender.communicate(timeout=30)[0])
    finally:
        if appender.poll() is None:
            appender.kill()
            appender.wait()
        selector.close()
        reader.close()
        store.close()
    latencies = sorted(max(0.0, seen[n] - committed[n]) * 1000 for n in range(WAKE_COUNT))
    return latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]


def bench_idle_cpu(folder: str) -> float:
    """CPU seconds per wall second of this process while its follower waits with nothing to do."""
    store = _scratch_store(folder, "idle")
    feed = store.change_feed()
    selector = selectors.DefaultSelector()
    selector.register(feed.fileno(), selectors.EVENT_READ)
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    deadline = started + IDLE_SECONDS
    while (left := deadline - time.monotonic()) > 0:
        for _ in selector.select(timeout=left):
            feed.drain()
    after, elapsed = resource.getrusage(resource.RUSAGE_SELF), time.monotonic() - started
    selector.close()
    store.close()
    return (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / elapsed


FIGURES = (  # name, unit, target text
    ("append_1_events_per_s", "events/s", ">= 20000"),
    ("append_10_events_per_s", "events/s", ">= 20000"),
    ("claim_ack_events_per_s", "events/s", ">= 20000"),
    ("wake_p50_ms", "ms", "<= 1"),
    ("wake_p99_ms", "ms", "<= 5"),
    ("idle_cpu_s_per_s", "CPU s/s", "~ 0"),
)


def run_once() -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="frontdesk-bench-store-") as folder:
        wake_p50, wake_p99 = bench_wakeup(folder)
        return {"append_1_events_per_s": bench_append(folder, 1),
                "append_10_events_per_s": bench_append(folder, 10),
                "claim_ack_events_per_s": bench_claim_ack(folder),
                "wake_p50_ms": wake_p50, "wake_p99_ms": wake_p99,
                "idle_cpu_s_per_s": bench_idle_cpu(folder)}


def run_bench(settings, args) -> int:
    repeat = max(1, getattr(args, "repeat", 1) or 1)
    runs = []
    for run_no in range(repeat):
        runs.append(run_once())
        if not args.json:
            print(f"run {run_no + 1}/{repeat}: " + ", ".join(f"{k}={v:.4g}" for k, v in runs[-1].items()),
                  file=sys.stderr)
    report = {name: {"runs": [run[name] for run in runs], "median": statistics.median(run[name] for run in runs),
                     "unit": unit, "target": target} for name, unit, target in FIGURES}
    if args.json:
        print(json.dumps({"suite": "store", "repeat": repeat, "figures": report}, indent=2))
        return 0
    print(f"store bench (SQLite: appends synchronous=FULL, claim+ack NORMAL), median of {repeat}:")
    for name, unit, target in FIGURES:
        print(f"  {name:<24} {report[name]['median']:>12.4g} {unit:<9} (target {target})")
    return 0
