"""The `frontdesk` command: parses the command line, resolves settings, starts one role.

Each subcommand lives in the module that does its job; this file only wires them. The roles
(`receiver`, `dispatcher`, `sandbox`) take only settings and are the same code that `python -m
frontdesk.<role>` runs in the children of `frontdesk run`.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from frontdesk.protocol import config
from frontdesk.protocol.credentials import protect_held_secrets
from frontdesk.protocol.logs import setup_logging

from .logs import ROLES as LOG_ROLES

# subcommand -> (module, function, one-line help). Roles (ROLES) are called as function(settings),
# the other commands as function(settings, args).
COMMANDS = {
    "run": ("frontdesk.run", "main", "everything on one machine: store, receiver, dispatcher, "
            "rate limiter, handlers (--sandbox: plus the LINE API emulator)"),
    "receiver": ("frontdesk.receiver.server", "main", "only the webhook receiver (scale-out)"),
    "dispatcher": ("frontdesk.dispatcher.arbiter", "main",
                   "only the dispatcher with its rate limiter and handlers (scale-out)"),
    "sandbox": ("frontdesk.sandbox.server", "main", "only the local LINE Messaging API emulator"),
    "statuspage": ("frontdesk.statuspage", "main", "only the status page on admin_listen "
                   "(/, /status.json, /metrics, /healthz)"),
    "bench": ("frontdesk.cli", "main_bench", "signed webhooks at a chosen rate against a running system "
              "(--suite picks a component benchmark instead)"),
    "say": ("frontdesk.say", "main", "send one message or event as a user to a running system "
            "(--sandbox) and print what that user received"),
    "test": ("frontdesk.testing", "main", "replay chat transcripts against a running system (or one it "
             "starts with --handler) and compare the bot's answers with the recorded ones"),
    "check-handler": ("frontdesk.handlers.conformance", "main",
                      "the conformance suite for a handler in any language: check-handler -- CMD ARGS"),
    "status": ("frontdesk.admin", "main_status",
               "queue depth, in-flight, dead letters, handler states, API call rates"),
    "top": ("frontdesk.top", "main_top", "the running system, live: queue, handlers, rate limiter, advice "
            "(keys + - h q; --once prints one frame)"),
    "logs": ("frontdesk.logs", "main", "print the log file's last lines, of every process or of one role "
             "(-f: and follow it)"),
    "scale": ("frontdesk.admin", "main_scale", "set the number of handler processes of running dispatchers"),
    "dead-letters": ("frontdesk.admin", "main_dead_letters", "list, retry or drop dead letters"),
    "integrity": ("frontdesk.admin", "main_integrity", "after a failed integrity check: re-queue the events "
                  "a damaged WAL lost (salvage), then clear the report (clear)"),
    "config": ("frontdesk.admin", "main_config", "print the resolved configuration (secrets masked)"),
    "doctor": ("frontdesk.doctor", "main", "check a configuration against LINE: token, webhook URL and "
               "\"Use webhook\", the month's quota, clock, store; one line per problem with its fix"),
}
ROLES = frozenset({"receiver", "dispatcher", "sandbox", "statuspage"})

# `frontdesk bench --suite NAME` -> the module whose `run_bench(settings, args)` measures it.
BENCH_SUITES = {
    "e2e": "frontdesk.bench.e2e",            # the whole path through a running system (default)
    "receiver": "frontdesk.bench.receiver",  # its bare HTTP server + HMAC vs the receiver
    "store": "frontdesk.bench.store",        # group-committed append, claim+ack, change-feed latency
    "frames": "frontdesk.bench.frames",      # frames per second through one handler process
    "api": "frontdesk.bench.api",            # calls per second through the rate limiter, batching on/off
    "drain": "frontdesk.bench.drain",        # queue drain rate and append-to-handler latency
    "compare": "frontdesk.bench.compare",    # frontdesk vs the official SDK's in-request echo pattern
}


def _common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("configuration (flag > environment > file > default)")
    group.add_argument("--config", help="configuration file (default ./frontdesk.toml; env FRONTDESK_CONFIG)")
    group.add_argument("--store", help="store URL (env FRONTDESK_STORE)")
    group.add_argument("--log-level", dest="log_level", help="DEBUG, INFO, WARNING, ERROR")
    group.add_argument("--log-file", dest="log_file", help="append log lines to this file, not stderr "
                       "(env FRONTDESK_LOG_FILE; frontdesk logs follows it)")
    group.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="any setting by its key (see `frontdesk config --markdown`); repeatable")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="frontdesk",
        description="A LINE bot server that survives floods of messages.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parsers = {}
    for name, (_, _, help_text) in COMMANDS.items():
        p = sub.add_parser(name, description=help_text, help=help_text)
        _common(p)
        parsers[name] = p

    for name in ("run", "receiver", "config"):
        parsers[name].add_argument("--listen", help="receiver HOST:PORT (env FRONTDESK_LISTEN)")
    for name in ("run", "statuspage", "config"):
        parsers[name].add_argument("--admin-listen", dest="admin_listen",
                                   help="status page HOST:PORT (env FRONTDESK_ADMIN_LISTEN; run: empty for none)")
    for name in ("run", "dispatcher", "config"):
        parsers[name].add_argument("--handler", help="handler command line (env FRONTDESK_HANDLER)")
        parsers[name].add_argument("--handlers", help="handler process count, or auto (env FRONTDESK_HANDLERS)")
    parsers["run"].add_argument("--sandbox", action="store_true",
                                help="also start the LINE API emulator and point the system at it")
    parsers["run"].add_argument("--demo", action="store_true",
                                help="with --sandbox: send a few signed example webhooks and print the replies")

    parsers["sandbox"].add_argument("--listen", dest="sandbox_listen", help="sandbox HOST:PORT")
    parsers["sandbox"].add_argument("--latency-ms", dest="sandbox_latency_ms", type=float,
                                    help="latency added to every API answer")
    parsers["sandbox"].add_argument("--fault-rate", dest="sandbox_fault_rate", type=float,
                                    help="share of API calls answered 500")
    parsers["sandbox"].add_argument("--drop-rate", dest="sandbox_drop_rate", type=float,
                                    help="share of API calls whose connection is dropped")

    _bench_flags(parsers["bench"])
    _user_flags(parsers)
    _operator_flags(parsers)
    return parser


def _bench_flags(bench: argparse.ArgumentParser) -> None:
    """`frontdesk bench`: the suite, the load offered and what the report shows."""
    bench.add_argument("--suite", choices=sorted(BENCH_SUITES), default="e2e",
                       help="what to measure (default e2e: the whole path)")
    bench.add_argument("--repeat", type=int, default=1, help="runs of a component suite (median reported)")
    bench.add_argument("--url", help="webhook URL (default http://<listen><callback_path>)")
    bench.add_argument("--sandbox-url", help="sandbox base URL for collecting deliveries "
                       "(default http://<sandbox_listen>)")
    bench.add_argument("--rate", type=float, default=100.0, help="events per second offered (open loop)")
    bench.add_argument("--count", type=int, help="events to send (default: rate x duration)")
    bench.add_argument("--duration", type=float, default=10.0, help="seconds to send for")
    bench.add_argument("--users", type=int, help="distinct users (per-user order matters; default 100, "
                       "drain: 10,000)")
    bench.add_argument("--order", choices=["round-robin", "random", "both"], default="both",
                       help="drain: how the pre-filled queue's events are spread over the users")
    bench.add_argument("--events-per-request", type=int, default=1, help="events per webhook body")
    bench.add_argument("--mix", default="text",
                       help="event mix, e.g. text=8,sticker=1,follow=1: any LINE webhook event type "
                            "(message types text, image, video, audio, file, location, sticker; postback, "
                            "unsend, videoPlayComplete, follow, unfollow, beacon, accountLink, membership, "
                            "join, leave, memberJoined, memberLeft, messageEdited, botSuspended, botResumed, "
                            "module, activated, deactivated, delivery), each from the source LINE sends it from")
    bench.add_argument("--connections", type=int, default=32, help="concurrent HTTP connections")
    bench.add_argument("--settle", type=float, default=30.0,
                       help="seconds to wait for deliveries after the last webhook")
    bench.add_argument("--chaos", action="store_true",
                       help="kill handlers, the rate limiter and the dispatcher at random moments")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument("--show", action="store_true",
                       help="e2e: also print what each user received for each event sent")


def _user_flags(parsers: dict) -> None:
    """The commands that play users or a dispatcher: say, test, check-handler."""
    say = parsers["say"]
    say.add_argument("text", nargs="?", help="the message text (text messages; postback data)")
    say.add_argument("--kind", default="text", help="event or message type: text, sticker, image, follow, "
                     "unfollow, postback, join, memberJoined, botSuspended, ... (any LINE webhook event type)")
    say.add_argument("--user", default="1", help="who sends it: a user number (as in bench) or a user id")
    say.add_argument("--url", help="webhook URL (default http://<listen><callback_path>)")
    say.add_argument("--sandbox-url", help="sandbox base URL (default http://<sandbox_listen>)")
    say.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for an answer")

    test = parsers["test"]
    test.add_argument("transcripts", nargs="+", metavar="TRANSCRIPT", help="transcript files (JSON)")
    test.add_argument("--url", help="webhook URL of a running system (default http://<listen><callback_path>)")
    test.add_argument("--sandbox-url", help="its sandbox base URL (default http://<sandbox_listen>)")
    test.add_argument("--handler", help="start a system of its own (frontdesk run --sandbox on free ports) with "
                      "this handler command line (\"\": the bundled echo bot), and stop it after")
    test.add_argument("--handlers", help="handler processes of the started system (default 1)")
    test.add_argument("--timeout", type=float, default=10.0,
                      help="seconds one user turn may wait for the bot's answers (default 10)")

    check = parsers["check-handler"]
    check.add_argument("--timeout", type=float, default=10.0, help="seconds allowed per check")
    check.add_argument("handler_command", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]",
                       help="the handler to check")


def _operator_flags(parsers: dict) -> None:
    """The operator commands: status, top, logs, scale, dead-letters, doctor, integrity, config."""
    parsers["status"].add_argument("--json", action="store_true", help="print one JSON object")
    parsers["status"].add_argument("--interval", type=float, metavar="S",
                                   help="measure rates (events/s, busy share, calls/s) for the advice over S "
                                        "seconds; 0: none (default: the running status page's, else none)")
    parsers["top"].add_argument("--once", action="store_true", help="print one frame and exit")
    logs = parsers["logs"]
    logs.add_argument("role", nargs="?", choices=LOG_ROLES, help="only this role's lines")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing lines as they are written")
    logs.add_argument("-n", "--lines", type=int, default=20, help="how many of the last lines to print (default 20)")
    parsers["scale"].add_argument("count", type=int, help="handler processes per dispatcher")
    dead = parsers["dead-letters"]
    dead.add_argument("action", nargs="?", choices=["list", "retry", "drop"],
                      help="list (the default), retry or drop")
    dead.add_argument("ids", nargs="*", help="event ids (retry/drop: none means all, with --all)")
    dead.add_argument("--all", action="store_true", help="retry or drop every dead letter")
    dead.add_argument("--limit", type=int, default=100, help="list at most this many")
    dead.add_argument("--json", action="store_true", help="print JSON")
    parsers["doctor"].add_argument("--sandbox", action="store_true",
                                   help="check against the local emulator, as frontdesk run --sandbox sets it up")
    parsers["doctor"].add_argument("--test-webhook", action="store_true",
                                   help="also have LINE post a test webhook to the webhook URL (60 an hour)")
    parsers["integrity"].add_argument("action", choices=["salvage", "clear"],
                                      help="salvage: re-queue the events the kept copies of a damaged WAL "
                                           "hold and SQLite dropped; clear: forget the integrity report")
    parsers["config"].add_argument("--markdown", action="store_true",
                                   help="print the configuration reference table instead")


def _flags(args: argparse.Namespace) -> dict:
    """Knob values given on the command line, from dedicated flags and --set KEY=VALUE."""
    flags = {name: getattr(args, name) for name in config.KNOBS_BY_NAME if getattr(args, name, None) is not None}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise config.ConfigError(f"--set {item!r}: expected KEY=VALUE")
        if key not in config.KNOBS_BY_NAME and key not in config.RENAMED:
            raise config.ConfigError(f"--set: unknown setting {key!r}")
        knob = config.KNOBS_BY_NAME[config.RENAMED.get(key, key)]
        if knob.secret:   # /proc/<pid>/cmdline is open to every user of the machine
            raise config.ConfigError(f"--set {key}: a secret on the command line is visible to every user of "
                                     f"this machine (ps); give it in {knob.file_env_name}, systemd's credential "
                                     f"{knob.credential} or {knob.env_name}")
        flags[key] = value
    return flags


def main_bench(settings, args) -> int:
    module = importlib.import_module(BENCH_SUITES[args.suite])
    return module.run_bench(settings, args) or 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = config.load(_flags(args), config_file=args.config)
        # `frontdesk logs` reads the file: its own lines (if any) go to stderr, and it creates nothing
        setup_logging(settings.log_level, "" if args.command == "logs" else settings.log_file)
        settings.log_deprecations()
    except config.ConfigError as exc:
        print(f"frontdesk: configuration error: {exc}", file=sys.stderr)
        return 2
    protect_held_secrets(settings)
    module_name, function_name, _ = COMMANDS[args.command]
    module = importlib.import_module(module_name)
    try:
        function = getattr(module, function_name)
        return (function(settings) if args.command in ROLES else function(settings, args)) or 0
    except config.ConfigError as exc:
        print(f"frontdesk {args.command}: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:   # `frontdesk config | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # so exiting flushes nowhere
        return 1


if __name__ == "__main__":
    sys.exit(main())
