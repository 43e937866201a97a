"""`frontdesk bench --suite drain`: how fast the dispatcher empties a queue, and how soon a
handler sees an event after its durable append.

Two measurements, each with 4 no-op Python handlers (this module run as `python -m
dispatcher.bench_drain handler`: a window of 64, acks at once, keeps each event's receipt time
and writes them to a file when its stdin closes):
- drain: the queue is pre-filled with `--count` events (default 100,000) of `--users` users
  (default 10,000), laid out round-robin (user 0, 1, 2, ... again) and/or in random order
  (`--order`, default both), then the dispatcher starts; rate = events / (last event acked -
  first event received), with the dispatcher's CPU per event (/proc), the WAL's peak size and the
  database's size at the end. The wait lasts as long as events keep getting done (it gives up
  after STALL_S without progress), so a queue of millions is measured, not cut off.
- latency: events appended one per commit at 1,000 events/s (open loop) for `--duration` s; for
  each event, receipt time in the handler minus the time its append returned (durable).
  CLOCK_MONOTONIC is one clock for every process on Linux, so the two times compare.
"""
from __future__ import annotations

import json
import os
import random
import select
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from frontdesk.protocol.frames import FrameDecoder, encode_frame
from frontdesk.protocol.reads import READ_SIZE

from .cpu import process_cpu_s

HANDLERS = 4
WINDOW = 64
LATENCY_RATE = 1000.0
DRAIN_USERS = 10_000
LATENCY_USERS = 1000
STALL_S = 60.0     # the drain is given up after this long with no event done
# The feed wakes us when events become claimable, not when they are done (the last acks of a
# drain wake nobody): look at the done count this often too, or the drain's end is seen late.
DONE_POLL_S = 0.02


# --- the no-op handler ---------------------------------------------------------------------------
def handler_main() -> int:
    """Raw frames, no SDK: decode what arrived, ack every event (batches too), one write per read."""
    receipts = []
    decoder = FrameDecoder()
    hello = None
    while hello is None:
        chunk = os.read(0, READ_SIZE)
        if not chunk:
            return 0
        values = decoder.feed(chunk)
        hello = values[0] if values else None
    os.write(1, encode_frame([1, hello[1], None, {"protocol": 1, "name": "bench-noop", "max_in_flight": WINDOW,
                                                  "features": ["batch"]}]))
    while True:
        chunk = os.read(0, READ_SIZE)
        if not chunk:
            break
        now = time.monotonic()
        answers = []
        for message in decoder.feed(chunk):
            if message[0] == 0 and message[2] == "event":
                entries = [(message[1], message[3][0])]
            elif message[0] == 2 and message[1] == "batch":   # a run of one user's events (SPEC.md section 7)
                entries = message[2]
            else:
                continue
            for msgid, document in entries:
                receipts.append((document["o"]["_id"], now))
                answers.append(encode_frame([1, msgid, None, None]))
        if answers:
            os.write(1, b"".join(answers))
    folder = os.environ.get("FD_BENCH_RECEIPTS")
    if folder:
        with open(os.path.join(folder, f"{os.getpid()}.json"), "w") as f:
            json.dump(receipts, f)
    return 0


# --- the driver ---------------------------------------------------------------------------------
def _events(prefix: str, start: int, count: int, users: int, shuffle: random.Random | None = None) -> list[dict]:
    """Events start..start+count; event i is user i % users, or a random user with `shuffle`."""
    now = int(time.time() * 1000)
    return [{"type": "message", "timestamp": now, "webhookEventId": f"{prefix}{i}", "replyToken": "r",
             "source": {"type": "user", "userId": f"U{(shuffle.randrange(users) if shuffle else i % users):07d}"},
             "message": {"type": "text", "id": str(i), "text": "bench"}} for i in range(start, start + count)]


class _Run:
    """One store in a temp folder and one dispatcher subprocess with the no-op handlers."""

    def __init__(self, settings):
        from frontdesk.store import open_store

        self.folder = tempfile.mkdtemp(prefix="frontdesk-bench-drain-")
        self.receipts = os.path.join(self.folder, "receipts")
        os.mkdir(self.receipts)
        self.path = os.path.join(self.folder, "bench.db")
        self.url = f"sqlite:///{self.path}"
        self.store = open_store(self.url)
        self.wal_peak = 0
        self.settings = settings
        self.process = None

    def start_dispatcher(self) -> None:
        handler = shlex.join([sys.executable, "-m", "frontdesk.bench.drain", "handler"])
        env = {**os.environ, **self.settings.to_environ(), "FRONTDESK_STORE": self.url,
               "FRONTDESK_HANDLER": handler, "FRONTDESK_HANDLERS": str(HANDLERS),
               "FRONTDESK_LOG_LEVEL": "WARNING", "FD_BENCH_RECEIPTS": self.receipts,
               "LINE_CHANNEL_ACCESS_TOKEN": self.settings.channel_access_token or "bench"}
        self.process = subprocess.Popen([sys.executable, "-m", "frontdesk.dispatcher"], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_done(self, count: int, stall_s: float = STALL_S) -> float:
        """Wait (on the store's change feed, not a sleep loop) until `count` events are done; give
        up only when none got done for stall_s. Tracks the WAL's peak size meanwhile."""
        feed = self.store.change_feed()
        done, progress_at = -1, time.monotonic()
        try:
            while (now_done := self.store.stats()["done"]) < count:
                if now_done > done:
                    done, progress_at = now_done, time.monotonic()
                if time.monotonic() - progress_at > stall_s or self.process.poll() is not None:
                    raise RuntimeError(f"bench: only {now_done} of {count} events done "
                                       f"(none for {stall_s:g} s, or the dispatcher exited)")
                self.wal_peak = max(self.wal_peak, _size(self.path + "-wal"))
                select.select([feed.fileno()], [], [], DONE_POLL_S)
                feed.drain()
            return time.monotonic()
        finally:
            feed.close()

    def stop(self) -> list[tuple[str, float]]:
        self.process.terminate()
        self.process.wait(timeout=30)
        receipts = []
        for name in os.listdir(self.receipts):
            with open(os.path.join(self.receipts, name)) as f:
                receipts.extend(json.load(f))
        return receipts

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.store.close()
        subprocess.run(["rm", "-rf", self.folder], check=False)


def measure_drain(settings, count: int, users: int, order: str) -> dict:
    run = _Run(settings)
    shuffle = random.Random(count) if order == "random" else None
    try:
        for start in range(0, count, 1000):
            run.store.append("Ubench", _events("d", start, min(1000, count - start), users, shuffle),
                             int(time.time() * 1000))
        run.start_dispatcher()
        cpu_before = process_cpu_s(run.process.pid) or 0.0
        finished = run.wait_done(count)
        cpu = (process_cpu_s(run.process.pid) or 0.0) - cpu_before
        receipts = run.stop()
        first = min(t for _, t in receipts)
        return {"events": count, "users": users, "order": order, "seconds": round(finished - first, 3),
                "events_per_s": round(count / (finished - first)),
                "dispatcher_cpu_us_per_event": round(cpu * 1e6 / count, 1),
                "wal_peak_mb": round(run.wal_peak / 2**20, 1), "database_mb": round(_size(run.path) / 2**20, 1)}
    finally:
        run.close()


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def measure_latency(settings, duration: float) -> dict:
    run = _Run(settings)
    try:
        run.start_dispatcher()
        run.store.append("Ubench", _events("warm", 0, 1, 1), int(time.time() * 1000))
        run.wait_done(1)
        count = int(LATENCY_RATE * duration)
        appended: dict[str, float] = {}
        events = _events("l", 0, count, LATENCY_USERS)
        threads = 4
        start = time.monotonic() + 0.05

        def offer(first: int) -> None:  # open loop: each append at its scheduled time
            for i in range(first, count, threads):
                delay = start + i / LATENCY_RATE - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                run.store.append("Ubench", [events[i]], int(time.time() * 1000))
                appended[events[i]["webhookEventId"]] = time.monotonic()

        workers = [threading.Thread(target=offer, args=(k,)) for k in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        run.wait_done(count + 1)
        latencies = sorted((t - appended[event_id]) * 1000 for event_id, t in run.stop() if event_id in appended)
        return {"events": count, "rate": LATENCY_RATE,
                "p50_ms": round(_percentile(latencies, 50), 3), "p99_ms": round(_percentile(latencies, 99), 3),
                "max_ms": round(latencies[-1], 3)}
    finally:
        run.close()


def _percentile(sorted_values: list[float], p: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


def run_bench(settings, args) -> int:
    count = args.count or 100_000
    users = args.users or DRAIN_USERS
    orders = ["round-robin", "random"] if args.order == "both" else [args.order]
    repeat = max(1, args.repeat)
    runs = []
    for number in range(repeat):
        drains = [measure_drain(settings, count, users, order) for order in orders]
        latency = measure_latency(settings, args.duration)
        runs.append({"drain": drains, "latency": latency})
        if not args.json:
            for drain in drains:
                print(f"run {number + 1}: drain {drain['events']} events of {drain['users']} users "
                      f"({drain['order']}) in {drain['seconds']} s = {drain['events_per_s']} events/s, "
                      f"dispatcher {drain['dispatcher_cpu_us_per_event']} CPU µs/event, WAL peak "
                      f"{drain['wal_peak_mb']} MB, database {drain['database_mb']} MB", flush=True)
            print(f"run {number + 1}: latency at {latency['rate']:g}/s ({latency['events']} events): "
                  f"p50 {latency['p50_ms']} ms, p99 {latency['p99_ms']} ms, max {latency['max_ms']} ms",
                  flush=True)
    median = {f"drain_{order}_{key}": statistics.median(r["drain"][n][key] for r in runs)
              for n, order in enumerate(orders)
              for key in ("events_per_s", "dispatcher_cpu_us_per_event", "wal_peak_mb")}
    median.update({"latency_p50_ms": statistics.median(r["latency"]["p50_ms"] for r in runs),
                   "latency_p99_ms": statistics.median(r["latency"]["p99_ms"] for r in runs)})
    if args.json:
        print(json.dumps({"suite": "drain", "handlers": HANDLERS, "window": WINDOW, "runs": runs,
                          "median": median}))
    else:
        print(f"median of {repeat}: " + ", ".join(f"{key} {value:g}" for key, value in median.items()))
    return 0


if __name__ == "__main__" and sys.argv[1:] == ["handler"]:
    sys.exit(handler_main())
