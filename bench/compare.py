"""`frontdesk bench --suite compare`: frontdesk side by side with the official SDK's echo pattern.

Both systems get the same load from the same e2e bench (`frontdesk bench --json`, run as a
subprocess) against the same sandbox LINE API with the same injected latency (default 20 ms):

- sdk-echo: `python -m frontdesk.bench.baseline` — line-bot-sdk's echo example, which checks the
  signature and calls the reply API inside the webhook request — served like the receiver;
- frontdesk: `frontdesk run --sandbox` — store, then ack; handlers reply later. Its handler is
  the same echo (bench/sdk_echo.py: a reply, no profile look-up), not the bundled echo bot, whose
  first event from each user waits for a profile call too.

Every process runs on free 127.0.0.1 ports with its store in a scratch folder, in its own
process group (so Ctrl-C reaches this command, which then stops them all, never a child
half-way) and dies with this command even if it is killed with SIGKILL.
A slow API makes the in-request pattern's acks as slow as the API call and its thread pool
the ceiling; frontdesk's acks stay a store write. The two reports are printed side by side.
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
from contextlib import ExitStack, contextmanager

from frontdesk.demo import wait_listening
from frontdesk.protocol.children.lifeline import spawn
from frontdesk.protocol.config import ConfigError, Settings, sandbox_credentials

from .baseline import SDK_MISSING, sdk_available
from .e2e import USERS, parse_mix

DEFAULT_LATENCY_MS = 20.0   # used when sandbox_latency_ms is left at 0
STOP_TIMEOUT_S = 30.0
SIGNAL_CHECK_S = 0.5   # how often the wait for a bench looks whether a SIGTERM was swallowed
_interrupted = threading.Event()
WARMUP = ["--count", "20", "--rate", "50", "--settle", "20"]   # first imports, connections, handlers
SIDES = {  # name -> column title
    "sdk_echo": "SDK echo (reply in request)",
    "frontdesk": "frontdesk run --sandbox (the same echo as a handler)",
}
ROWS = [  # (title, key in the bench report, sub-key or None)
    ("webhook events sent", "sent", None), ("acked (200)", "acked", None),
    ("rejected (non-200 or no answer)", "rejected", None), ("delivered", "delivered", None),
    ("lost (acked, never delivered)", "lost", None), ("duplicates", "duplicates", None),
    ("API calls", "api_calls", None), ("HTTP 429 from the API", "http_429", None),
    ("achieved events/s", "achieved_rate", None),
    ("ack ms p50", "ack_ms", "p50"), ("ack ms p99", "ack_ms", "p99"), ("ack ms max", "ack_ms", "max"),
    ("e2e ms p50", "e2e_ms", "p50"), ("e2e ms p99", "e2e_ms", "p99"), ("e2e ms max", "e2e_ms", "max"),
]


class CompareError(Exception):
    """A system did not start or a bench run gave no report; the message says which and why."""


def run_bench(settings: Settings, args) -> int:
    _check_args(args)
    if not sdk_available():
        print(f"frontdesk bench --suite compare: {SDK_MISSING}", file=sys.stderr)
        return 2
    latency_ms = settings.sandbox_latency_ms or DEFAULT_LATENCY_MS
    repeat = max(1, args.repeat)
    results = {}
    # SIGTERM stops the systems as Ctrl-C does
    previous = {signum: signal.signal(signum, _interrupt) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        with tempfile.TemporaryDirectory(prefix="frontdesk-compare-") as scratch:
            for side in SIDES:
                results[side] = _measure(side, settings, args, latency_ms, repeat, scratch)
    except CompareError as exc:
        print(f"frontdesk bench --suite compare: {exc}", file=sys.stderr)
        return 1
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    summary = {"latency_ms": latency_ms, "offered_rate": args.rate, "repeat": repeat,
               **{side: {"median": _median(runs), "runs": runs} for side, runs in results.items()}}
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
    else:
        print_table(summary)
    frontdesk = summary["frontdesk"]["median"]
    return 0 if frontdesk["lost"] == frontdesk["duplicates"] == frontdesk["rejected"] == 0 else 1


def _interrupt(signum, frame):
    _interrupted.set()   # a raise that lands in a finalizer is ignored: _bench's wait checks this too
    raise KeyboardInterrupt


def _check_args(args) -> None:
    if args.chaos:
        raise ConfigError("--chaos does not apply to --suite compare (it compares two calm systems)")
    if args.url or args.sandbox_url:
        raise ConfigError("--suite compare starts its own systems: --url and --sandbox-url do not apply")
    kinds = {kind for kind, weight in parse_mix(args.mix) if weight > 0}
    if kinds != {"text"}:
        raise ConfigError("--suite compare sends text events only (--mix text): "
                          "the SDK's echo example answers nothing else")


def _measure(side: str, settings: Settings, args, latency_ms: float, repeat: int, scratch: str) -> list[dict]:
    """Start one system, warm it up, run the bench `repeat` times, stop it."""
    folder = os.path.join(scratch, side)
    os.mkdir(folder)
    system = _system_settings(settings, folder, latency_ms)
    if side == "frontdesk":
        system = system.replace(handler=shlex.join([sys.executable, "-m", "frontdesk.bench.sdk_echo"]))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("FRONTDESK_", "LINE_"))},
           **system.to_environ(), **system.secrets_environ()}
    with ExitStack() as stack:
        if side == "sdk_echo":
            stack.enter_context(_process("sandbox", [sys.executable, "-m", "frontdesk.sandbox"],
                                         env, folder, signal.SIGTERM))
            stack.enter_context(_process("baseline", [sys.executable, "-m", "frontdesk.bench.baseline"],
                                         env, folder, signal.SIGTERM))
        else:
            # Ctrl-C is `frontdesk run`'s own way to stop everything it started.
            stack.enter_context(_process("frontdesk-run", [sys.executable, "-m", "frontdesk", "run",
                                                           "--sandbox"], env, folder, signal.SIGINT))
        if not wait_listening([system.listen, system.sandbox_listen]):
            raise CompareError(f"{side}: the webhook receiver or the sandbox did not start listening; "
                               f"see the logs in {folder} (kept only while this command runs)")
        bench = [sys.executable, "-m", "frontdesk", "bench", "--json",
                 "--url", f"http://{system.listen}{system.callback_path}",
                 "--sandbox-url", f"http://{system.sandbox_listen}"]
        _bench(side, bench + WARMUP, env, folder, quiet=True)
        print(f"compare: {side}: {SIDES[side]}, API latency {latency_ms:g} ms", file=sys.stderr, flush=True)
        return [_bench(side, bench + _load_flags(args), env, folder, quiet=False) for _ in range(repeat)]


def _system_settings(settings: Settings, folder: str, latency_ms: float) -> Settings:
    """The user's settings on fresh loopback ports and a scratch store, pointed at the sandbox."""
    sandbox_listen = _free_address()
    secret, token = sandbox_credentials(settings)
    return settings.replace(
        listen=_free_address(), sandbox_listen=sandbox_listen,
        api_base=f"http://{sandbox_listen}", api_data_base=f"http://{sandbox_listen}",
        store=f"sqlite:///{os.path.join(folder, 'frontdesk.db')}", sandbox_latency_ms=latency_ms,
        channel_secret=secret, channel_access_token=token, admin_listen="")   # no status page to measure


def _free_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def _load_flags(args) -> list[str]:
    """The load options of this command, passed on unchanged to each bench run."""
    flags = ["--rate", f"{args.rate:g}", "--duration", f"{args.duration:g}",
             "--users", str(args.users if args.users is not None else USERS),
             "--events-per-request", str(args.events_per_request), "--mix", args.mix,
             "--connections", str(args.connections), "--settle", f"{args.settle:g}"]
    return flags + (["--count", str(args.count)] if args.count is not None else [])


@contextmanager
def _process(name: str, command: list[str], env: dict, folder: str, stop_signal: int):
    """A child in its own process group that dies with us even on kill -9 (lifeline.spawn), its
    output in folder/<name>.log; stopped (then killed) on exit."""
    with open(os.path.join(folder, f"{name}.log"), "wb") as log:
        process = spawn(command, env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(stop_signal)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _bench(side: str, command: list[str], env: dict, folder: str, quiet: bool) -> dict:
    """One `frontdesk bench --json` run; its progress line goes to stderr unless quiet."""
    with open(os.path.join(folder, "bench.log"), "ab") as log:
        process = spawn(command, env, stdout=subprocess.PIPE, stderr=log if quiet else None)
    try:
        while True:
            try:
                output, _ = process.communicate(timeout=SIGNAL_CHECK_S)
                break
            except subprocess.TimeoutExpired:
                if _interrupted.is_set():
                    raise KeyboardInterrupt from None
    finally:
        if process.poll() is None:   # interrupted: the bench is in its own group, so stop it here
            process.kill()
            process.wait()
    try:
        return json.loads(output)
    except ValueError:
        raise CompareError(f"{side}: the bench gave no report (exit code {process.returncode})") from None


def _median(runs: list[dict]) -> dict:
    """Each figure of ROWS as the median over the runs (None where no run had it)."""
    summary: dict = {}
    for _, key, sub in ROWS:
        values = [run[key] if sub is None else run[key][sub] for run in runs]
        values = [v for v in values if v is not None]
        value = statistics.median(values) if values else None
        if sub is None:
            summary[key] = value
        else:
            summary.setdefault(key, {})[sub] = value
    return summary


def _cell(report: dict, key: str, sub: str | None) -> str:
    value = report[key] if sub is None else report[key][sub]
    if value is None:
        return "-"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def print_table(summary: dict) -> None:
    heading = (f"frontdesk bench --suite compare  API latency {summary['latency_ms']:g} ms  "
               f"offered {summary['offered_rate']:g} events/s")
    if summary["repeat"] > 1:
        heading += f"  median of {summary['repeat']} runs"
    width = max(len(title) for title, _, _ in ROWS)
    columns = [max(len(SIDES[side]), 10) for side in SIDES]
    print(heading)
    print(f"  {'':<{width}}  " + "  ".join(f"{SIDES[s]:>{w}}" for s, w in zip(SIDES, columns)))
    for title, key, sub in ROWS:
        cells = [_cell(summary[side]["median"], key, sub) for side in SIDES]
        print(f"  {title:<{width}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(cells, columns)))
