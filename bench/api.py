"""`frontdesk bench --suite api`: the LINE API path, measured against sandbox subprocesses.

Figures (each run starts its own sandbox and rate limiter on free loopback ports, scratch store):
- client_calls_per_s_0ms / _20ms: sequential pushes through one LineApi connection (the client
  alone) with 0 and 20 ms of latency injected by the sandbox;
- limiter_calls_per_s_0ms / _20ms: pushes through the rate limiter process (journal included),
  one connection, limits raised out of the way; _20ms_64_connections: the same through the
  default pool of api_connections, which is what carries a real API's latency;
- api_calls_per_message_batched / _unbatched: a broadcast-like load (the same message pushed to
  BROADCAST_USERS users at once) — LINE API calls made per message delivered, batching on / off.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import requests

from frontdesk.protocol.frames import FrameDecoder, encode_frame
from frontdesk.protocol.rpc import Request, Response, parse_message

from frontdesk.ratelimiter.line_api import LineApi, build_request

TOKEN = "bench-token"
UNLIMITED = "reply=100000/s,push=100000/s,multicast=100000/s,default=100000/s"
CLIENT_CALLS = {0: 3000, 20: 150}
LIMITER_CALLS = {0: 3000, 20: 150}
POOL = 64          # connections for the pooled figure (the api_connections default)
POOL_CALLS = 2000
BROADCAST_USERS = 2000
FIGURES = [  # name, unit
    ("client_calls_per_s_0ms", "calls/s"), ("client_calls_per_s_20ms", "calls/s"),
    ("limiter_calls_per_s_0ms", "calls/s"), ("limiter_calls_per_s_20ms", "calls/s"),
    (f"limiter_calls_per_s_20ms_{POOL}_connections", "calls/s"),
    ("api_calls_per_message_batched", "calls/msg"), ("api_calls_per_message_unbatched", "calls/msg"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child_env(extra: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRONTDESK_", "LINE_"))}
    env.update({"LINE_CHANNEL_ACCESS_TOKEN": TOKEN, "LINE_CHANNEL_SECRET": "bench-secret",
                "FRONTDESK_LOG_LEVEL": "WARNING"})
    env.update(extra)
    return env


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def sandbox(latency_ms: float):
    """A `frontdesk sandbox` subprocess with LINE's limits lifted; yields its base URL."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "frontdesk.sandbox"], stdout=subprocess.DEVNULL,
        env=_child_env({"FRONTDESK_SANDBOX_LISTEN": f"127.0.0.1:{port}", "FRONTDESK_SANDBOX_LATENCY_MS":
                        str(latency_ms), "FRONTDESK_SANDBOX_RATE_LIMITS": UNLIMITED}))
    try:
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the sandbox did not start")
            time.sleep(0.05)  # waiting for a child to bind its port: nothing to block on
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(process)


def _sandbox_stats(url: str) -> dict:
    return requests.get(url + "/sandbox/stats", timeout=10).json()


def _push(n: int, text: str = "bench") -> dict:
    return {"to": "U%032x" % n, "messages": [{"type": "text", "text": text}]}


def client_rate(settings, url: str, calls: int) -> float:
    """Sequential pushes on one connection of the rate limiter's client, on an event loop of its own."""
    async def run() -> float:
        api = LineApi(settings.replace(api_base=url, api_data_base=url, channel_access_token=TOKEN))
        request = build_request("push", _push(1), None)
        await api.send(request)  # connect first
        started = time.perf_counter()
        for _ in range(calls):
            await api.send(request)
        elapsed = time.perf_counter() - started
        api.close()
        return calls / elapsed

    return asyncio.run(run())


def limiter_run(url: str, folder: str, calls: list[dict], **knobs) -> float:
    """Send `calls` to a fresh rate limiter process at once; seconds until the last answer."""
    env = _child_env({"FRONTDESK_STORE": f"sqlite:///{folder}/bench-{uuid.uuid4().hex}.db",
                      "FRONTDESK_API_BASE": url, "FRONTDESK_API_DATA_BASE": url,
                      "FRONTDESK_RATE_LIMITS": UNLIMITED,
                      **{f"FRONTDESK_{k.upper()}": str(v) for k, v in knobs.items()}})
    process = subprocess.Popen([sys.executable, "-m", "frontdesk.ratelimiter"], env=env,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    answered = threading.Event()
    errors = []

    def read_answers():
        decoder, count = FrameDecoder(), 0
        while count < len(calls) and (data := os.read(process.stdout.fileno(), 1 << 16)):
            for value in decoder.feed(data):
                message = parse_message(value)
                if isinstance(message, Response):
                    count += 1
                    if message.error:
                        errors.append(message.error["message"])
        answered.set()

    reader = threading.Thread(target=read_answers, daemon=True)
    reader.start()
    try:
        frames = b"".join(encode_frame(Request(n, "call", [{k: v for k, v in call.items() if k != "args"},
                                                           call["args"]]).to_wire())
                          for n, call in enumerate(calls))
        started = time.perf_counter()
        process.stdin.write(frames)
        process.stdin.flush()
        if not answered.wait(300):
            raise RuntimeError("the rate limiter did not answer every call in 300 s")
        elapsed = time.perf_counter() - started
        if errors:
            raise RuntimeError(f"{len(errors)} calls failed, first: {errors[0]}")
        return elapsed
    finally:
        process.stdin.close()
        _stop(process)
        reader.join(5)


def run_once(settings, folder: str) -> dict[str, float]:
    figures = {}
    for latency in (0, 20):
        with sandbox(latency) as url:
            figures[f"client_calls_per_s_{latency}ms"] = client_rate(settings, url, CLIENT_CALLS[latency])
            count = LIMITER_CALLS[latency]
            calls = [{"event_id": uuid.uuid4().hex, "call_no": 1, "method": "push", "args": _push(n),
                      "context": {}} for n in range(count)]
            figures[f"limiter_calls_per_s_{latency}ms"] = count / limiter_run(url, folder, calls, batching="false",
                                                                              api_connections=1)
            if latency:
                calls = [{"event_id": uuid.uuid4().hex, "call_no": 1, "method": "push", "args": _push(n),
                          "context": {}} for n in range(POOL_CALLS)]
                figures[f"limiter_calls_per_s_{latency}ms_{POOL}_connections"] = POOL_CALLS / limiter_run(
                    url, folder, calls, batching="false", api_connections=POOL)
    for batching in ("true", "false"):
        with sandbox(0) as url:
            calls = [{"event_id": uuid.uuid4().hex, "call_no": 1, "method": "push", "args": _push(n, "news"),
                      "context": {}} for n in range(BROADCAST_USERS)]
            limiter_run(url, folder, calls, batching=batching)
            stats = _sandbox_stats(url)
            name = "batched" if batching == "true" else "unbatched"
            figures[f"api_calls_per_message_{name}"] = stats["api_calls"] / BROADCAST_USERS
    return figures


def run_bench(settings, args) -> int:
    repeat = max(1, getattr(args, "repeat", 1) or 1)
    runs = []
    with tempfile.TemporaryDirectory(prefix="frontdesk-bench-api-") as folder:
        for run_no in range(repeat):
            runs.append(run_once(settings, folder))
            if not args.json:
                print(f"run {run_no + 1}/{repeat}: " + ", ".join(f"{k}={v:.4g}" for k, v in runs[-1].items()),
                      file=sys.stderr)
    report = {name: {"runs": [run[name] for run in runs], "median": statistics.median(run[name] for run in runs),
                     "unit": unit} for name, unit in FIGURES}
    if args.json:
        print(json.dumps({"suite": "api", "repeat": repeat, "figures": report}, indent=2))
        return 0
    print(f"api bench (sandbox on loopback, one connection), median of {repeat}:")
    for name, unit in FIGURES:
        print(f"  {name:<34} {report[name]['median']:>10.4g} {unit}")
    return 0
