"""`frontdesk bench --suite frames`: event round trips per second through one handler process.

The bench plays the dispatcher: it sends `event` requests and counts the acks, first with one
event in flight (latency-bound: two pipe hops and the handler's thread hand-off per event),
then with a window of 64 (or the handler's declared max_in_flight, if smaller). The handler
is `settings.handler` if set, else this module run as a Python SDK bot that acks every event,
so the figure is the SDK's own cost. The event is an `unsend` (no API calls).

    frontdesk bench --suite frames --repeat 3 [--duration 2] [--json]
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

from frontdesk.handlers.conformance import EventMaker
from frontdesk.protocol import config, rpc
from frontdesk.protocol.frames import FrameDecoder, encode_frame

WINDOW = 64
DEFAULT_SECONDS = 2.0


def bench_command(settings) -> list[str]:
    if settings.handler.strip():
        return config.handler_command(settings)
    return [sys.executable, "-m", "frontdesk.bench.frames"]


class Pipe:
    """A handler process driven without threads: the bench is the only reader and writer."""

    def __init__(self, command: list[str], max_frame_bytes: int):
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        self.decoder = FrameDecoder(max_frame_bytes)
        self.out_fd, self.in_fd = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        self.ready: list = []

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.out_fd, view):]

    def read(self) -> list:
        """At least one message (blocking)."""
        while not self.ready:
            data = os.read(self.in_fd, 1 << 16)
            if not data:
                raise RuntimeError(f"handler exited (status {self.proc.wait()})")
            self.ready.extend(self.decoder.feed(data))
        messages, self.ready = self.ready, []
        return [rpc.parse_message(m) for m in messages]

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


def round_trips(pipe: Pipe, window: int, seconds: float, document: dict) -> float:
    """Events acked per second with `window` events kept in flight for about `seconds`."""
    msgids = rpc.MsgIds(start=1)
    outstanding = 0
    done = 0
    started = time.perf_counter()
    stop = started + seconds
    while True:
        if time.perf_counter() < stop and outstanding < window:
            batch = window - outstanding
            pipe.write(b"".join(encode_frame([0, msgids.next(), "event", [document]]) for _ in range(batch)))
            outstanding += batch
        if not outstanding:
            break
        for message in pipe.read():
            if isinstance(message, rpc.Response):
                if message.error is not None:
                    raise RuntimeError(f"handler nacked the bench event: {message.error!r:.100}")
                outstanding -= 1
                done += 1
    return done / (time.perf_counter() - started)


def measure(settings, seconds: float) -> dict:
    pipe = Pipe(bench_command(settings), settings.max_frame_bytes)
    try:
        pipe.write(encode_frame([0, 0, "hello", [{"protocol": [1], "dispatcher": "frontdesk-bench",
                                                  "max_frame_bytes": settings.max_frame_bytes}]]))
        (hello,) = pipe.read()
        window = min(WINDOW, hello.result["max_in_flight"])
        document = EventMaker().document("unsend")
        return {"one_in_flight": round_trips(pipe, 1, seconds, document),
                "window": window, "windowed": round_trips(pipe, window, seconds, document)}
    finally:
        pipe.close()


def run_bench(settings, args) -> int:
    seconds = DEFAULT_SECONDS if args.duration == 10.0 else args.duration  # 10 s is the e2e default
    runs = [measure(settings, seconds) for _ in range(max(args.repeat, 1))]
    result = {
        "handler": " ".join(bench_command(settings)),
        "runs": runs,
        "one_in_flight_median": statistics.median(r["one_in_flight"] for r in runs),
        "windowed_median": statistics.median(r["windowed"] for r in runs),
        "window": runs[0]["window"],
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"frames through one handler process ({result['handler']}), {seconds:g} s per figure")
    for i, run in enumerate(runs, 1):
        print(f"  run {i}: one in flight {run['one_in_flight']:,.0f} round trips/s, "
              f"window {run['window']} {run['windowed']:,.0f}/s")
    print(f"median: one in flight {result['one_in_flight_median']:,.0f} round trips/s "
          f"({1e6 / result['one_in_flight_median']:.0f} µs each); "
          f"window {result['window']} {result['windowed_median']:,.0f}/s")
    return 0


if __name__ == "__main__":
    from frontdesk.handlers.sdk import Bot

    Bot("bench", max_in_flight=WINDOW).run()  # acks every event: it registers no handler
