"""`frontdesk bench` (suite e2e): signed webhooks at a constant rate through a running system.

Every event is unique and traceable: text events say "bench <run id> <n>" (the echo handler
repeats the text in its reply) and every reply token names its event (the sandbox records it
as `source_event`). After sending, the bench collects what the sandbox delivered and matches
deliveries to events: lost = acked but never delivered, duplicates = delivered more than once.
Latencies are measured from each request's *due* time (open loop), so a generator that falls
behind shows up as latency rather than as a quietly lower rate.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import re
import signal
import socket
import sys
import threading
import time
import urllib.parse
from collections import Counter, defaultdict, deque
from typing import Callable

import requests

from frontdesk.protocol.config import ConfigError, Settings, sandbox_credentials
from frontdesk.store import StoreError, open_store, sqlite_file_missing

from frontdesk.sandbox.webhooks import (EVENT_KINDS, EventFactory, describe_source, report_sent, source_for,
                                        user_id)

from .cpu import RoleCpu
from .load import WebhookSender

log = logging.getLogger("frontdesk.bench")

# The kinds the bundled echo handler answers (handlers/examples/echo.py); others expect nothing.
ANSWERED_KINDS = frozenset({"text", "image", "video", "audio", "location", "sticker", "follow"})
PAGE = 10000
USERS = 100               # distinct users when --users is not given
DUPLICATE_GRACE_S = 1.0   # after everything arrived, how long to keep listening for repeats
REPORTED_EVENTS = 5000    # a run's newest events, told to the sandbox's chat page once the run is measured


def parse_mix(text: str) -> list[tuple[str, float]]:
    """`text=8,sticker=1,follow=1` (a bare kind weighs 1) -> [(kind, weight)]."""
    mix = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        kind, sep, weight = part.partition("=")
        kind = kind.strip()
        if kind not in EVENT_KINDS:
            raise ConfigError(f"--mix: unknown event kind {kind!r}; kinds: {', '.join(EVENT_KINDS)}")
        try:
            value = float(weight) if sep else 1.0
        except ValueError:
            raise ConfigError(f"--mix: {part!r} is not KIND=WEIGHT") from None
        if value < 0:
            raise ConfigError(f"--mix: {part!r}: the weight cannot be negative")
        mix.append((kind, value))
    if not mix or sum(w for _, w in mix) <= 0:
        raise ConfigError("--mix: give at least one kind with a positive weight, e.g. text=8,sticker=1")
    return mix


def percentiles(values: list[float]) -> dict:
    """p50, p99 and max (nearest rank), in milliseconds rounded to 0.1; None when there are none."""
    if not values:
        return {"p50": None, "p99": None, "max": None}
    ordered = sorted(values)

    def rank(p):
        return round(ordered[min(len(ordered) - 1, max(0, math.ceil(p * len(ordered)) - 1))], 1)

    return {"p50": rank(0.50), "p99": rank(0.99), "max": round(ordered[-1], 1)}


class Plan:
    """What each event n is: its kind and its user, fixed before sending (seeded, reproducible)."""

    def __init__(self, count: int, users: int, mix: list[tuple[str, float]], seed: int):
        rng = random.Random(seed)
        kinds, weights = zip(*mix)
        self.kinds = rng.choices(kinds, weights, k=count)
        self.users = [rng.randrange(users) for _ in range(count)]
        self.user_ids = [user_id(u) for u in range(users)]


class Sandbox:
    """The sandbox's recorder, read over HTTP."""

    def __init__(self, base_url: str):
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.trust_env = False   # loopback only: no proxies from the environment

    def stats(self) -> dict:
        answer = self.session.get(f"{self.base_url}/sandbox/stats", timeout=10)
        answer.raise_for_status()
        return answer.json()

    def deliveries(self, since: int, wait_s: float) -> list[dict]:
        answer = self.session.get(f"{self.base_url}/sandbox/deliveries", timeout=wait_s + 10,
                                  params={"since": since, "limit": PAGE, "wait": round(wait_s, 3)})
        answer.raise_for_status()
        return answer.json()


class Matcher:
    """Deliveries matched to events: by `source_event` (replies) or by the traceable text."""

    def __init__(self, run_id: str, event_ids: list[str | None]):
        self.pattern = re.compile(rf"bench {re.escape(run_id)} (\d+)\b")
        self.by_event_id = {event_id: n for n, event_id in enumerate(event_ids) if event_id}
        self.count = len(event_ids)
        self.deliveries: dict[int, list[dict]] = defaultdict(list)
        self.last_id = 0

    def add(self, delivery: dict) -> None:
        self.last_id = max(self.last_id, delivery["id"])
        n = self.by_event_id.get(delivery.get("source_event"))
        if n is None:
            for message in delivery.get("messages", []):
                found = self.pattern.search(str(message.get("text", "")))
                if found and int(found.group(1)) < self.count:
                    n = int(found.group(1))
                    break
        if n is not None:
            self.deliveries[n].append(delivery)


def run_bench(settings: Settings, args) -> int:
    url = args.url or f"http://{settings.listen}{settings.callback_path}"
    sandbox = Sandbox(args.sandbox_url or f"http://{settings.sandbox_listen}")
    count = args.count if args.count is not None else int(args.rate * args.duration)
    if args.users is None:
        args.users = USERS
    if count < 1 or args.rate <= 0 or args.users < 1 or args.events_per_request < 1 or args.connections < 1:
        raise ConfigError("bench: --count (or --rate x --duration), --rate, --users, --events-per-request "
                          "and --connections must all be positive")
    mix = parse_mix(args.mix)
    try:
        before = sandbox.stats()
    except (requests.RequestException, ValueError) as exc:
        print(f"frontdesk bench: cannot reach the sandbox at {sandbox.base_url}: {exc}", file=sys.stderr)
        return 2
    run_id = os.urandom(3).hex()
    bench = Bench(settings, args, url, sandbox, count, mix, run_id, before)
    report = bench.run()
    bench.report_sent()
    if getattr(args, "show", False):
        report["received"] = bench.received()
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        print_table(report)
        if "received" in report:
            print_received(report["received"])
    return 0 if report["lost"] == 0 and report["duplicates"] == 0 and report["rejected"] == 0 else 1


class Bench:
    """One `frontdesk bench` e2e run: it owns the plan of events, the sending at the offered rate
    and the counts of answers, then reads what the sandbox delivered into the report."""

    def __init__(self, settings, args, url, sandbox: Sandbox, count: int, mix, run_id: str, before: dict):
        self.args, self.url, self.sandbox, self.count, self.run_id = args, url, sandbox, count, run_id
        self.before = before
        self.plan = Plan(count, args.users, mix, seed=int(run_id, 16))
        self.secret = sandbox_credentials(settings)[0]
        self.factory = EventFactory(self.secret)
        self.per_request = args.events_per_request
        self.requests = math.ceil(count / self.per_request)
        self.event_ids: list[str | None] = [None] * count
        self.sent_events: deque[tuple[int, dict]] = deque(maxlen=REPORTED_EVENTS)   # (n, event), for the chat page
        self.posted: list = []
        self.sender = WebhookSender(url, self.secret, connections=args.connections)
        self.progress = Progress(sys.stderr)
        planned_s = count / args.rate
        self.chaos = Chaos(settings, random.Random(run_id), mean_interval_s=min(5.0, max(0.5, planned_s / 5)),
                           first_kill_s=planned_s * 0.2) if args.chaos else None
        self.settings = settings

    def build(self, k: int) -> bytes:
        """Request k's body: events k*per_request ... in order, each with fresh timestamps and tokens."""
        events = []
        for n in range(k * self.per_request, min(self.count, (k + 1) * self.per_request)):
            kind = self.plan.kinds[n]
            trace = f"bench {self.run_id} {n}"
            # each kind from the source LINE sends it from: user n's one-to-one chat, or group n
            user = self.plan.users[n]
            event = self.factory.event(kind, source_for(kind, self.plan.user_ids[user], chat=user), text=trace)
            self.event_ids[n] = event["webhookEventId"]
            self.sent_events.append((n, event))
            events.append(event)
        return self.factory.body(events)

    def run(self) -> dict:
        with _status_store(self.settings) as store:
            cpu = RoleCpu(store, _port(self.url), _port(self.sandbox.base_url))
            cpu.start()
            try:
                report = self._run()
            finally:
                usage = cpu.stop()
        report.update(_cpu_report(usage, report["acked"], report["api_calls"]))
        return report

    def _run(self) -> dict:
        rate = self.args.rate / self.per_request
        self.progress.start(lambda: f"sending: {self.sender.done}/{self.requests} webhook requests answered")
        if self.chaos:
            self.chaos.start()
        try:
            posted = self.posted = self.sender.run(self.requests, rate, self.build)
        finally:
            if self.chaos:
                self.chaos.stop()
        send_s = time.monotonic() - self.sender.started_mono
        acked_events = self._acked_events(posted)
        expected = {n for n in acked_events if self.plan.kinds[n] in ANSWERED_KINDS}
        matcher = self.matcher = Matcher(self.run_id, self.event_ids)
        matcher.last_id = self.before.get("last_delivery_id", 0)
        self.progress.describe(lambda: f"settling: {sum(1 for n in expected if n in matcher.deliveries)}"
                                       f"/{len(expected)} expected deliveries seen")
        try:
            self._collect(matcher, expected)
            after = self.sandbox.stats()
        except (requests.RequestException, ValueError) as exc:
            print(f"frontdesk bench: reading the sandbox failed: {exc}", file=sys.stderr)
            after = self.before
        finally:
            self.progress.stop()
        return self._report(posted, acked_events, expected, matcher, after, send_s)

    def report_sent(self) -> None:
        """Tell the sandbox's chat history what this run sent (its newest REPORTED_EVENTS events),
        once the run is measured, so the chat page shows bench's users too and no figure moves."""
        answers = {}
        for request in self.posted:
            first = request.index * self.per_request
            for n in range(first, min(self.count, first + self.per_request)):
                answers[n] = (request.status, round((request.answered - request.sent) * 1000.0, 2))
        report_sent(self.sandbox.base_url, [{"event": event, "status": answers.get(n, (0, None))[0],
                                             "ack_ms": answers.get(n, (0, None))[1]}
                                            for n, event in self.sent_events], "bench")

    def _acked_events(self, posted) -> dict[int, float]:
        """Event number -> the due time (monotonic) of its request, for events answered 200."""
        acked = {}
        for request in posted:
            if request.status == 200:
                first = request.index * self.per_request
                for n in range(first, min(self.count, first + self.per_request)):
                    acked[n] = request.due
        return acked

    def _collect(self, matcher: Matcher, expected: set[int]) -> None:
        """Read deliveries (long poll) until every expected event is seen or --settle runs out."""
        deadline = time.monotonic() + self.args.settle
        complete_at = None
        while True:
            now = time.monotonic()
            if complete_at is None and all(n in matcher.deliveries for n in expected):
                complete_at = now
            stop_at = deadline if complete_at is None else min(deadline, complete_at + DUPLICATE_GRACE_S)
            if now >= stop_at:
                return
            page = self.sandbox.deliveries(matcher.last_id, wait_s=min(5.0, stop_at - now))
            for delivery in page:
                matcher.add(delivery)

    def received(self) -> list[dict]:
        """Per event sent: its kind, its user and what the sandbox delivered for it (--show)."""
        matched = self.matcher.deliveries if hasattr(self, "matcher") else {}
        return [{"n": n, "kind": self.plan.kinds[n], "from": describe_source(source_for(
                    self.plan.kinds[n], self.plan.user_ids[self.plan.users[n]], chat=self.plan.users[n])),
                 "deliveries": [{"endpoint": d["endpoint"], "to": d["to"], "messages": d["messages"]}
                                for d in matched.get(n, [])]}
                for n in range(self.count)]

    def _achieved_rate(self, posted, sent: int) -> float | None:
        """Events per second actually sent: up to the last send, plus one request interval."""
        if not posted:
            return None
        span = max(r.sent for r in posted) - self.sender.started_mono + self.per_request / self.args.rate
        return round(sent / span, 1)

    def _order_breaks(self, posted, delivered: list[int], matcher: Matcher) -> int:
        """Events delivered before an earlier event of the same user that was acked before they were sent.

        Only such pairs have an order the system must keep: events sent concurrently on different
        connections may reach the receiver in either order.
        """
        sent_at, acked_at = {}, {}
        for request in posted:
            first = request.index * self.per_request
            for n in range(first, min(self.count, first + self.per_request)):
                sent_at[n], acked_at[n] = request.sent, request.answered
        breaks = 0
        previous: dict[int, int] = {}   # user -> the last delivered event of theirs, in send order
        for n in sorted(delivered):
            user = self.plan.users[n]
            before = previous.get(user)
            if before is not None and acked_at[before] < sent_at[n] and \
                    min(d["id"] for d in matcher.deliveries[n]) < min(d["id"] for d in matcher.deliveries[before]):
                breaks += 1
            previous[user] = n
        return breaks

    def _report(self, posted, acked_events, expected, matcher: Matcher, after: dict, send_s: float) -> dict:
        to_ms = self.sender.epoch_ms
        sent = sum(min(self.per_request, self.count - r.index * self.per_request) for r in posted)
        statuses = Counter(r.status for r in posted)
        delivered = [n for n in expected if n in matcher.deliveries]
        e2e = [min(d["time"] for d in matcher.deliveries[n]) - to_ms(acked_events[n]) for n in delivered]
        order_breaks = self._order_breaks(posted, delivered, matcher)
        report = {
            "run_id": self.run_id, "url": self.url,
            "sent": sent, "acked": len(acked_events), "rejected": sent - len(acked_events),
            "expected": len(expected), "delivered": len(delivered), "lost": len(expected) - len(delivered),
            "duplicates": sum(1 for n in delivered if len(matcher.deliveries[n]) > 1),
            "out_of_order": order_breaks,
            "ack_ms": percentiles([(r.answered - r.due) * 1000 for r in posted]),
            "e2e_ms": percentiles(e2e),
            "send_lag_ms": percentiles([(r.sent - r.due) * 1000 for r in posted]),
            "api_calls": after.get("api_calls", 0) - self.before.get("api_calls", 0),
            # an answer that came as a push although the event had a reply token (it aged past
            # reply_max_age_s, or LINE refused the token): billed to the channel, unlike a reply
            "replies_as_push": sum(1 for n in delivered
                                   if min(matcher.deliveries[n], key=lambda d: d["id"])["endpoint"] == "push"),
            "http_429": after.get("http_429", 0) - self.before.get("http_429", 0),
            **_loading_report(self.before.get("loading") or {}, after.get("loading") or {}),
            "statuses": {str(status): n for status, n in sorted(statuses.items())},
            "offered_rate": self.args.rate, "achieved_rate": self._achieved_rate(posted, sent),
            "duration_s": round(send_s, 2), "users": self.args.users,
            "events_per_request": self.per_request, "connections": self.args.connections,
        }
        if self.chaos:
            report["chaos_kills"] = self.chaos.kills
        if after.get("api_calls", 0) < self.before.get("api_calls", 0):
            report["warning"] = "the sandbox's counters were reset during the run: api_calls and http_429 are wrong"
        return report


def _loading_report(before: dict, after: dict) -> dict:
    """The loading animation during the run (the sandbox's counts per chat): how many users saw
    it, and the API calls it cost (docs/ratelimiter.md, "Users told to wait")."""
    was, now = before.get("by_chat") or {}, after.get("by_chat") or {}
    return {"loading_users": sum(1 for chat, n in now.items() if n > was.get(chat, 0)),
            "loading_calls": after.get("started", 0) - before.get("started", 0)}


@contextlib.contextmanager
def _status_store(settings: Settings):
    """The store the system publishes its processes' statuses in, or None (never created here)."""
    store = None
    if not sqlite_file_missing(settings.store):
        try:
            store = open_store(settings.store)
        except StoreError as exc:
            log.warning("event=status_store_unavailable reason=%s", exc)
    try:
        yield store
    finally:
        if store is not None:
            store.close()


def _port(url: str) -> int | None:
    """The port of a URL on this host (its processes can be read from /proc), else None."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname not in LOOPBACK:
        return None
    return parts.port or {"http": 80, "https": 443}.get(parts.scheme)


LOOPBACK = ("127.0.0.1", "localhost", "::1")
FRONTDESK_ROLES = ("receiver", "dispatcher", "handlers", "ratelimiter")


def _cpu_report(usage: dict, events: int, api_calls: int) -> dict:
    """CPU milliseconds per acked event, per role and for frontdesk's own processes together; the
    sandbox (LINE's stand-in) also per API call it answered."""
    per_event = {role: None if seconds is None or not events else round(seconds * 1000 / events, 3)
                 for role, seconds in usage["cpu_s"].items()}
    own = [per_event[role] for role in FRONTDESK_ROLES]
    sandbox = usage["cpu_s"]["sandbox"]
    return {"cpu_ms_per_event": per_event,
            "frontdesk_cpu_ms_per_event": None if None in own else round(sum(own), 3),
            "sandbox_cpu_ms_per_api_call": None if sandbox is None or not api_calls
            else round(sandbox * 1000 / api_calls, 3),
            "cpu_s": usage["cpu_s"], "cpu_processes": usage["processes"], "cpu_note": usage["note"],
            "rss_mb": usage["rss_mb"]}


def print_received(received: list[dict]) -> None:
    """--show: one line per event and what its user (or group) received."""
    print("what the users received:")
    for item in received:
        said = "; ".join(f"{d['endpoint']}: " + " | ".join(
            m.get("text") or f"({m.get('type')})" for m in d["messages"]) for d in item["deliveries"])
        print(f"  #{item['n']} {item['kind']} from {item['from']} -> {said or 'nothing'}")


def print_table(report: dict) -> None:
    rows = [("webhook events sent", report["sent"]), ("acked (200)", report["acked"]),
            ("rejected (non-200 or no answer)", report["rejected"]),
            ("expected deliveries", report["expected"]), ("delivered", report["delivered"]),
            ("lost", report["lost"]), ("duplicates", report["duplicates"]),
            ("out of per-user order", report["out_of_order"]),
            ("API calls", report["api_calls"]), ("HTTP 429 from the API", report["http_429"]),
            ("replies that went out as a push", report["replies_as_push"]),
            ("users shown the loading animation / its calls", f"{report['loading_users']} / {report['loading_calls']}"),
            ("offered / achieved events/s", f"{report['offered_rate']:g} / {report['achieved_rate']}")]
    for name in ("ack_ms", "e2e_ms", "send_lag_ms"):
        p = report[name]
        rows.append((f"{name} p50 / p99 / max", f"{p['p50']} / {p['p99']} / {p['max']}"))
    cpu = report.get("cpu_ms_per_event")
    if cpu:
        rows.append(("CPU ms per event, frontdesk in all", report["frontdesk_cpu_ms_per_event"]))
        rows += [(f"  {role}", value) for role, value in cpu.items()]
        rows.append(("  sandbox, per API call", report["sandbox_cpu_ms_per_api_call"]))
    rss = report.get("rss_mb")
    if rss:
        rows.append(("RSS MB at start -> end", ""))
        rows += [(f"  {role}", f"{value['start']} -> {value['end']}" if value else None)
                 for role, value in rss.items()]
    width = max(len(name) for name, _ in rows)
    print(f"frontdesk bench e2e  run {report['run_id']}  -> {report['url']}")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    if report.get("warning"):
        print(f"  warning: {report['warning']}")
    if cpu:
        print(f"  (CPU {report['cpu_note']})")


class Progress:
    """One progress line on stderr, rewritten each second, until stopped."""

    def __init__(self, stream):
        self.stream = stream
        self.line: Callable[[], str] = lambda: ""
        self._stop = threading.Event()
        self._finishing = False
        self._finish_by = math.inf
        self._thread: threading.Thread | None = None
        self._started = 0.0

    def start(self, line: Callable[[], str]) -> None:
        self.line, self._started = line, time.monotonic()
        self._thread = threading.Thread(target=self._run, name="bench-progress", daemon=True)
        self._thread.start()

    def describe(self, line: Callable[[], str]) -> None:
        self.line = line

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self._write()

    def _write(self) -> None:
        line = f"bench {time.monotonic() - self._started:6.1f}s  {self.line()}"
        # On a terminal the line is rewritten in place; in a log file, one line each time.
        self.stream.write(f"\r{line}\033[K" if self.stream.isatty() else line + "\n")
        self.stream.flush()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._write()
            if self.stream.isatty():
                self.stream.write("\n")
                self.stream.flush()


class Chaos:
    """Kills parts of a running system at random moments while the bench sends (--chaos).

    Targets come from `frontdesk status --json` ("processes"): handler processes and the rate
    limiter of every dispatcher on this host (the dispatcher restarts them), and every dispatcher
    run by `frontdesk run` (which restarts it). A pid is killed only while it is still a child of
    the process that published it, so a stale status never hits an unrelated process.
    """

    def __init__(self, settings: Settings, rng: random.Random, mean_interval_s: float = 2.0,
                 first_kill_s: float = 1.0):
        self.settings, self.rng, self.mean_interval_s = settings, rng, mean_interval_s
        self.first_kill_s = first_kill_s
        self.kills: list[dict] = []
        self._store = None
        self._roles_seen: set[str] = set()
        self._stop = threading.Event()
        self._finishing = False
        self._finish_by = math.inf
        self._thread = threading.Thread(target=self._run, name="bench-chaos", daemon=True)
        self._started = 0.0

    def start(self) -> None:
        self._store = open_store(self.settings.store)   # where every process publishes its status
        self._started = time.monotonic()
        self._thread.start()

    def stop(self, finish_within_s: float = 60.0) -> None:
        """Ends the chaos once every role seen has been killed at least once (a short run on a
        slow box may not have got round to all of them while the bench was sending), or after
        finish_within_s."""
        self._finish_by = time.monotonic() + finish_within_s
        self._finishing = True
        if self._round_complete():
            self._stop.set()
        self._thread.join()
        self._store.close()

    def _round_complete(self) -> bool:
        killed = {kill["role"] for kill in self.kills}
        return bool(self._roles_seen) and self._roles_seen <= killed

    def targets(self) -> tuple[list[tuple[str, int, int]], set[str]]:
        """(role, pid, parent pid) of every process this host's supervisors published, and every
        role they run, whether or not its process is up right now (handlers of a dispatcher just
        restarted have no pid yet, but the round must still get to them)."""
        found, roles = [], set()
        for doc in self._store.get_statuses().values():
            if doc.get("host") != socket.gethostname() or not doc.get("pid") or doc.get("state") != "running":
                continue
            parent = doc["pid"]
            if doc.get("handlers_target") or doc.get("handlers"):   # the list is empty until they start
                roles.add("handler")
                found += [("handler", h["pid"], parent) for h in doc.get("handlers") or [] if h.get("pid")]
            if "ratelimiter" in doc:
                roles.add("ratelimiter")
                if (doc["ratelimiter"] or {}).get("pid"):
                    found.append(("ratelimiter", doc["ratelimiter"]["pid"], parent))
            if "dispatcher" in (doc.get("services") or {}):
                roles.add("dispatcher")
                if (doc["services"]["dispatcher"] or {}).get("pid"):
                    found.append(("dispatcher", doc["services"]["dispatcher"]["pid"], parent))
        return found, roles

    def _run(self) -> None:
        """The first kill comes early in the run (so every chaos run has one), then every
        0.5-1.5 mean intervals; each kill hits the role killed least so far (ties at random), so
        a run with three kills has hit a handler, the rate limiter and a dispatcher. After
        stop() the kills come faster until that round is complete."""
        pause = self.first_kill_s
        while not self._stop.wait(pause):
            if self._finishing and (self._round_complete() or time.monotonic() > self._finish_by):
                return
            pause = self.mean_interval_s * self.rng.uniform(0.5, 1.5)
            if self._finishing:
                pause = min(pause, 0.5)
            try:
                found, roles = self.targets()
            except (OSError, StoreError) as exc:
                log.warning("event=chaos_status_failed error=%s", exc)
                continue
            candidates = [t for t in found if _still_ours(*t)]
            self._roles_seen.update(roles)
            if not self._roles_seen:
                continue
            killed = Counter(kill["role"] for kill in self.kills)
            role = min(sorted(self._roles_seen), key=lambda r: (killed[r], self.rng.random()))
            of_role = [c for c in candidates if c[0] == role]
            if not of_role:   # e.g. a restarted dispatcher's handlers are not up yet
                pause = 0.05
                continue
            _, pid, _ = self.rng.choice(of_role)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            self.kills.append({"at_s": round(time.monotonic() - self._started, 2), "role": role, "pid": pid})
            log.info("event=chaos_kill role=%s pid=%d", role, pid)


def _still_ours(role: str, pid: int, parent: int | None) -> bool:
    """Is pid alive and still the child of the process that published it?"""
    try:
        with open(f"/proc/{pid}/stat") as f:
            ppid = int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return False
    return ppid == parent
