"""`frontdesk bench --suite receiver`: the receiver measured against the bare stack it runs on.

(a) bare: the receiver's own HTTP server with a handler that only checks the signature and
answers 200, the ceiling of the stack;
(b) the real `frontdesk receiver` storing into a temporary SQLite file (durable group commit).
Both are subprocesses served by `frontdesk.receiver.server.serve` with the same limits. The
load comes from another process: raw keep-alive sockets in one selector loop, so the client
spends little CPU per request and the figures describe the servers, not the client.

Phases per run: closed-loop maximum of (a) and of (b); (b) at half its maximum (open loop, p99
ack latency from each request's scheduled send time); (b) at twice its maximum (open loop: the
longest time the server took for a request — LINE's 2 s timer starts when it sends — the
longest wait counted from the schedule, which also holds the client's own queue for a free
connection, and the share of 503s). Run: `frontdesk bench --suite receiver [--repeat 3]
[--duration S] [--events-per-request N] [--json]`.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import math
import multiprocessing
import os
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

from frontdesk.protocol import config

from frontdesk.protocol.events import signature_ok
from frontdesk.protocol.http_server import Request, Response, error_body

WARMUP_S = 1.0
READY_TIMEOUT_S = 20.0
LINE_TIMEOUT_S = 2.0  # LINE counts a slower answer as a failure


# --- (a) the bare app ---------------------------------------------------------------------------
def bare_handler(settings: config.Settings):
    """Only the work every webhook server must do: read the body, check the HMAC, answer 200 —
    on the receiver's own HTTP server."""
    secret = settings.channel_secret.encode()

    def handle(request: Request) -> Response:
        if request.path == "/healthz":
            return Response(200, b'{"status": "ok"}')
        if not signature_ok(secret, request.body, request.headers.get("x-line-signature") or ""):
            return Response(401, error_body(401, "bad signature"))
        return Response(200, b'{"status":"ok"}')

    return handle


def _serve_bare() -> int:
    from frontdesk.protocol.logs import setup_logging
    from frontdesk.receiver.server import serve

    settings = config.load()
    setup_logging(settings.log_level)
    asyncio.run(serve(settings, lambda busy, fail: bare_handler(settings)))
    return 0


# --- the load generator (runs in its own process) -------------------------------------------------
class _Load:
    """Signed webhooks (fresh event ids each) over keep-alive sockets; one selector loop, no threads."""

    def __init__(self, port: int, path: str, secret: str, connections: int, prefix: str,
                 events_per_request: int):
        self.port, self.secret, self.prefix = port, secret.encode(), prefix
        self.head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                     "Content-Type: application/json\r\n").encode()
        template = json.dumps({"destination": "Ubench", "events": [{
            "type": "message", "mode": "active", "timestamp": 1_700_000_000_000,
            "webhookEventId": f"@ID@-{k}", "deliveryContext": {"isRedelivery": False},
            "source": {"type": "user", "userId": f"U@ID@-{k}"}, "replyToken": f"@ID@-{k}",
            "message": {"type": "text", "id": f"@ID@-{k}", "text": "hello from the bench"}}
            for k in range(events_per_request)]})
        self.parts = [part.encode() for part in template.split("@ID@")]
        self.sequence = 0
        self.selector = selectors.DefaultSelector()
        self.free = [self._connect() for _ in range(connections)]
        self.state: dict = {}   # socket -> [buffer, intended, sent]
        self.statuses: dict[int, int] = {}
        self.answered = 0                # answers that arrived inside the measured window
        self.waits: list[float] = []     # answer - scheduled send, for requests scheduled in it
        self.service: list[float] = []   # answer - actual send, for the same requests
        self.measure_from, self.measure_until = 0.0, math.inf

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _request(self) -> bytes:
        self.sequence += 1
        event_id = f"{self.prefix}{self.sequence:09d}"
        body = event_id.encode().join(self.parts)
        signature = base64.b64encode(hmac.new(self.secret, body, hashlib.sha256).digest())
        return b"".join((self.head, b"x-line-signature: ", signature, b"\r\nContent-Length: ",
                         str(len(body)).encode(), b"\r\n\r\n", body))

    def send(self, intended: float) -> None:
        sock = self.free.pop()
        sock.sendall(self._request())
        self.state[sock] = [b"", intended, time.monotonic()]
        self.selector.register(sock, selectors.EVENT_READ)

    def receive(self, timeout: float | None) -> None:
        for key, _ in self.selector.select(timeout):
            sock = key.fileobj
            entry = self.state[sock]
            data = sock.recv(65536)
            entry[0] += data
            answer = self._complete(entry[0]) if data else (0, True)
            if answer is None:
                continue
            status, close = answer
            now = time.monotonic()
            self.selector.unregister(sock)
            del self.state[sock]
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if self.measure_from <= now <= self.measure_until:
                self.answered += 1
            if self.measure_from <= entry[1]:
                self.waits.append(now - entry[1])
                self.service.append(now - entry[2])
            if close:
                sock.close()
                sock = self._connect()
            self.free.append(sock)

    @staticmethod
    def _complete(buffer: bytes) -> tuple[int, bool] | None:
        """(status, server closes) once a whole response is in `buffer`; status 0: connection lost."""
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        lines = buffer[:end].lower().split(b"\r\n")
        length = next((int(line[15:]) for line in lines if line.startswith(b"content-length:")), 0)
        if len(buffer) < end + 4 + length:
            return None
        return int(buffer[9:12]), b"connection: close" in lines

    def drain(self, limit_s: float) -> None:
        deadline = time.monotonic() + limit_s
        while self.state and time.monotonic() < deadline:
            self.receive(deadline - time.monotonic())

    def run_closed(self, duration: float) -> None:
        """Every connection sends its next request as soon as the answer comes."""
        self.measure_from = time.monotonic() + WARMUP_S
        end = self.measure_until = self.measure_from + duration
        while time.monotonic() < end:
            while self.free:
                self.send(time.monotonic())
            self.receive(end - time.monotonic())
        self.drain(10.0)

    def run_open(self, rate: float, duration: float) -> int:
        """Requests scheduled at a constant rate whatever the answers do; returns how many
        waited over 2 s for a free connection and were never sent."""
        start = time.monotonic()
        self.measure_from = start + WARMUP_S
        end = self.measure_until = self.measure_from + duration
        interval, scheduled = 1.0 / rate, 0
        while True:
            now = time.monotonic()
            due = start + scheduled * interval
            if due >= end or now >= end:
                break
            while self.free and due <= now:
                self.send(due)
                scheduled += 1
                due = start + scheduled * interval
            self.receive(max(0.0, due - now) if self.free else min(0.05, end - now))
        self.drain(10.0)
        # Scheduled more than LINE's 2 s before the end and never sent: LINE would have given up.
        return max(0, math.ceil((end - LINE_TIMEOUT_S - start) * rate) - scheduled)


def _load_process(pipe, port, path, secret, connections, prefix, events_per_request, mode, rate,
                  duration) -> None:
    load = _Load(port, path, secret, connections, prefix, events_per_request)
    cpu = time.process_time()
    if mode == "closed":
        load.run_closed(duration)
        unsent = 0
    else:
        unsent = load.run_open(rate, duration)
    pipe.send({"statuses": load.statuses, "answered": load.answered, "waits": load.waits,
               "service": load.service,
               "unsent": unsent, "client_cpu_s": time.process_time() - cpu})
    pipe.close()


def _drive(port: int, settings, args, prefix: str, mode: str, rate: float = 0.0) -> dict:
    """One phase: a load process against `port`; args gives connections, duration, body size."""
    duration = args.duration
    parent, child = multiprocessing.get_context("spawn").Pipe(duplex=False)
    process = multiprocessing.get_context("spawn").Process(
        target=_load_process, args=(child, port, settings.callback_path, settings.channel_secret,
                                    args.connections, prefix, args.events_per_request, mode, rate,
                                    duration))
    process.start()
    child.close()
    try:
        result = parent.recv()
    finally:
        process.join(timeout=30)
        if process.is_alive():
            process.kill()
    result["rate"] = result["answered"] / duration
    return result


# --- the servers under test ------------------------------------------------------------------------
class _ServerFailed(Exception):
    """A server under test did not start; the message carries the end of its log."""


class _Server:
    """One server under test in a process of its own, its output appended to `log_path`: built
    first, started (and waited for until it listens) by `start()`."""

    def __init__(self, argv: list[str], env: dict, port: int, log_path: str):
        self.argv, self.env, self.port, self.log_path = argv, env, port, log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> "_Server":
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._fail(f"exited with status {self.proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)  # startup only: nothing to block on until it listens
        self.stop()
        self._fail(f"did not listen within {READY_TIMEOUT_S}s")

    def _fail(self, what: str) -> None:
        with open(self.log_path, errors="replace") as log:
            tail = "".join(log.readlines()[-5:])
        raise _ServerFailed(f"server under test {what}; its log ends:\n{tail}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _run_once(settings, args, workdir: str, run_no: int) -> dict:
    from frontdesk.store import open_store

    secret = settings.channel_secret or "bench-secret-" + uuid.uuid4().hex
    settings = settings.replace(channel_secret=secret)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRONTDESK_", "LINE_"))}
    log_path = os.path.join(workdir, f"servers-{run_no}.log")

    port = _free_port()
    bare_env = {**env, **settings.replace(listen=f"127.0.0.1:{port}").to_environ(), **settings.secrets_environ()}
    bare = _Server([sys.executable, "-m", "frontdesk.bench.receiver", "serve-bare"], bare_env, port, log_path).start()
    try:
        a = _drive(port, settings, args, f"a{run_no}-", "closed")
    finally:
        bare.stop()

    port = _free_port()
    store_url = f"sqlite:///{workdir}/bench-{run_no}.db"
    receiver_env = {**env, **settings.replace(listen=f"127.0.0.1:{port}", store=store_url).to_environ(),
                    **settings.secrets_environ()}
    receiver = _Server([sys.executable, "-m", "frontdesk.receiver"], receiver_env, port, log_path).start()
    try:
        b = _drive(port, settings, args, f"b{run_no}-", "closed")
        half = _drive(port, settings, args, f"h{run_no}-", "open", b["rate"] / 2)
        double = _drive(port, settings, args, f"d{run_no}-", "open", b["rate"] * 2)
    finally:
        receiver.stop()
    store = open_store(store_url)
    try:
        stats = store.stats()
    finally:
        store.close()
    stored = stats["pending"] + stats["in_flight"] + stats["done"] + stats["dead"]
    acked = sum(result["statuses"].get(200, 0) for result in (b, half, double)) * args.events_per_request

    def share(result, status):
        return result["statuses"].get(status, 0) / max(1, sum(result["statuses"].values()))

    late = sum(1 for w in double["waits"] if w > LINE_TIMEOUT_S) + double["unsent"]
    return {
        "a_bare_rps": round(a["rate"]),
        "b_receiver_rps": round(b["rate"]),
        "b_events_per_s": round(b["rate"] * args.events_per_request),
        "ratio_b_to_a": round(b["rate"] / a["rate"], 3) if a["rate"] else 0.0,
        "half_rate_offered": round(b["rate"] / 2),
        "half_rate_achieved": round(half["rate"]),
        "half_p50_ms": round(_percentile(half["waits"], 0.50) * 1000, 2),
        "half_p99_ms": round(_percentile(half["waits"], 0.99) * 1000, 2),
        "half_503_share": round(share(half, 503), 4),
        "double_rate_offered": round(b["rate"] * 2),
        "double_rate_answered": round(double["rate"]),
        "double_max_sched_wait_ms": round(max(double["waits"], default=0.0) * 1000, 1),
        "double_max_server_ms": round(max(double["service"], default=0.0) * 1000, 1),
        "double_p99_server_ms": round(_percentile(double["service"], 0.99) * 1000, 2),
        "double_503_share": round(share(double, 503), 4),
        "double_sched_over_2s": late,
        "events_acked_200": acked,
        "events_stored": stored,
        "client_cpu_share_at_max": round(b["client_cpu_s"] / (args.duration + WARMUP_S), 2),
    }


# LINE's 2 s timer runs from when it sends a request, so the overload target is the server's
# time per request; the wait counted from the schedule also holds the client's own queue.
TARGETS = (
    ("ratio_b_to_a", ">=", 0.8),
    ("half_p99_ms", "<=", 20.0),
    ("double_max_server_ms", "<=", LINE_TIMEOUT_S * 1000),
)


def run_bench(settings, args) -> int:
    repeat = max(1, args.repeat)
    runs = []
    with tempfile.TemporaryDirectory(prefix="frontdesk-bench-") as workdir:
        for run_no in range(repeat):
            try:
                result = _run_once(settings, args, workdir, run_no)
            except _ServerFailed as exc:
                print(f"frontdesk bench --suite receiver: {exc}", file=sys.stderr)
                return 1
            runs.append(result)
            if not args.json:
                print(f"run {run_no + 1}/{repeat}: " + " ".join(f"{k}={v}" for k, v in result.items()),
                      flush=True)
    median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    verdicts = {key: (median[key] >= goal if op == ">=" else median[key] <= goal) for key, op, goal in TARGETS}
    lossless = all(run["events_stored"] == run["events_acked_200"] for run in runs)
    if args.json:
        print(json.dumps({"suite": "receiver", "connections": args.connections, "duration_s": args.duration,
                          "events_per_request": args.events_per_request,
                          "runs": runs, "median": median, "targets_met": verdicts,
                          "stored_equals_acked": lossless}))
    else:
        print(f"median of {repeat}: " + " ".join(f"{k}={v}" for k, v in median.items()))
        for key, op, goal in TARGETS:
            print(f"target {key} {op} {goal}: {'met' if verdicts[key] else 'NOT met'} ({median[key]})")
        print(f"every 200 stored exactly once: {'yes' if lossless else 'NO'}")
    return 0 if lossless else 1


if __name__ == "__main__":
    if sys.argv[1:] == ["serve-bare"]:
        sys.exit(_serve_bare())
    sys.exit("usage: python -m frontdesk.bench.receiver serve-bare (started by `frontdesk bench --suite receiver`)")
