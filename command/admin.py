"""Operator commands that talk to the store: status, scale, dead-letters, integrity, config.

Each is `main_X(settings, args)` wired by command/cli.py. They open the store, do one thing,
print it (a small table, or JSON with --json) and exit: 0 done, 1 the store failed, 2 bad usage
(status: 3 the store failed its integrity check, 4 no store at that URL).
Errors are one line naming the problem; secrets (credentials in a store URL) are never shown.
"""
from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
import urllib.request
from contextlib import contextmanager

from frontdesk.protocol import config
from frontdesk.protocol.process import status_role
from frontdesk.store import StoreError, open_store
from frontdesk.store.mongo import redact_url as public_url
from frontdesk.store.sqlite import path_from_url

from .advice import advise
from .handler_table import handler_table
from .observe import STALE_AFTER_S, Observer
from .quota_view import quota_lines

class _Failed(Exception):
    """Already reported to the user; carries the exit status."""

    def __init__(self, status: int):
        self.status = status


def _fail(command: str, message: str, status: int = 1):
    print(f"frontdesk {command}: {message}", file=sys.stderr)
    raise _Failed(status)


@contextmanager
def _store(command: str, url: str):
    try:
        store = open_store(url)
    except StoreError as exc:
        _fail(command, str(exc))
    try:
        yield store
    except StoreError as exc:
        _fail(command, str(exc))
    finally:
        store.close()


def _reported(function):
    """Turn an already-reported failure into its exit status."""
    def run(settings, args):
        try:
            return function(settings, args)
        except _Failed as failed:
            return failed.status
    run.__doc__, run.__name__ = function.__doc__, function.__name__
    return run


# --- status ------------------------------------------------------------------------------------

INTEGRITY_FAILED = 3   # `frontdesk status` exit status while the store's integrity check has failed
NO_STORE = 4           # `frontdesk status` exit status when the store's SQLite file does not exist
PAGE_TIMEOUT_S = 1.0   # a status page that has not answered within this is not asked further
# Keys of a status document that its summary line or a line of their own shows (or that only
# `frontdesk top` and the page use: the cumulative counters and histograms).
_SHOWN_APART = frozenset({"pid", "host", "owner", "state", "started_at", "updated_at", "handlers_target",
                          "in_flight", "handled", "degraded", "store_error", "handlers", "ratelimiter",
                          "autoscale", "services", "e2e_s"})


def _clock(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch_s))


def _duration(seconds: float) -> str:
    """3 s, 4 min, 2 h 5 min, 3 d 4 h: how long, in the units a person reads."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def _count(numbers: dict) -> str:
    """{"ready": 2, "starting": 1} -> "ready 2, starting 1"."""
    return ", ".join(f"{name} {n}" for name, n in sorted(numbers.items()))


def _summarise(doc: dict, now: float) -> str:
    """The first line of a process: what it is doing, since when, and its main counts."""
    parts = [str(doc.get("state", "?"))]
    if doc.get("pid"):
        parts.append(f"pid {doc['pid']}" + (f" on {doc['host']}" if doc.get("host") else ""))
    if isinstance(doc.get("started_at"), (int, float)):
        parts.append(f"up {_duration(now - doc['started_at'])} (since {_clock(doc['started_at'])})")
    handlers = doc.get("handlers")
    if isinstance(handlers, list):
        states: dict[str, int] = {}
        for handler in handlers:
            state = handler.get("state", "?") if isinstance(handler, dict) else "?"
            states[state] = states.get(state, 0) + 1
        target = doc.get("handlers_target")
        wanted = target if isinstance(target, int) else len(handlers)
        others = {state: n for state, n in states.items() if state != "ready"}
        parts.append(f"handlers {states.get('ready', 0)} of {wanted} ready" + (f" ({_count(others)})" if others else ""))
    if "in_flight" in doc:
        parts.append(f"in flight {doc['in_flight']}")
    if "handled" in doc:
        parts.append(f"handled {doc['handled']}")
    return ", ".join(parts)


def _detail_lines(doc: dict) -> list[str]:
    """The lines under a process's summary: problems first, then its parts, each in words."""
    lines = []
    if doc.get("degraded"):
        lines.append(f"DEGRADED: {doc['degraded']}")
    if doc.get("store_error"):
        lines.append(f"STORE ERROR: {doc['store_error']}")
    autoscale = doc.get("autoscale")
    if isinstance(autoscale, dict):
        lines.append(f"autoscale: {autoscale.get('min')} to {autoscale.get('max')} handlers"
                     + (f"; last change {autoscale['last_change']}" if autoscale.get("last_change") else ""))
    limiter = doc.get("ratelimiter")
    if isinstance(limiter, dict):
        lines += _ratelimiter_lines(limiter)
    services = doc.get("services")
    if isinstance(services, dict):
        lines += _service_lines(services)
    for key, value in doc.items():   # what a newer process publishes that this one does not know
        if key not in _SHOWN_APART and not key.endswith("_counts") and value is not None:
            lines.append(f"{key}: {value if isinstance(value, str) else json.dumps(value, default=str)}")
    return lines


def _ratelimiter_lines(limiter: dict) -> list[str]:
    calls = (limiter.get("stats") or {}).get("calls") if isinstance(limiter.get("stats"), dict) else None
    sent = "; calls: " + ", ".join(
        f"{endpoint} {sum(by_status.values())} ({', '.join(f'{code} ×{n}' for code, n in sorted(by_status.items()))})"
        for endpoint, by_status in sorted(calls.items()) if isinstance(by_status, dict)) if calls else ""
    lines = [f"rate limiter: pid {limiter.get('pid') or '-'}, restarts {limiter.get('restarts', 0)}, "
             f"pending calls {limiter.get('pending_calls', 0)}{sent}"]
    if limiter.get("degraded"):
        lines.append(f"DEGRADED rate limiter: {limiter['degraded']}")
    return lines + quota_lines((limiter.get("stats") or {}).get("quota") if isinstance(limiter.get("stats"), dict)
                               else None)


def _service_lines(services: dict) -> list[str]:
    """`frontdesk run`'s children: one line each."""
    lines = []
    for name, service in services.items():
        if not isinstance(service, dict):
            continue
        line = f"{name:<10} pid {service.get('pid') or '- (not running)'}"
        if service.get("address"):
            line += f"  {service['address']}"
        if service.get("restarts"):
            line += f"  restarts {service['restarts']}"
        lines.append(line)
        if service.get("degraded"):
            lines.append(f"DEGRADED {name}: {service['degraded']}")
    return lines


def print_status_table(report: dict) -> None:
    events = report["events"]
    print(f"store      {report['store']}")
    if report.get("integrity"):
        for problem in report["integrity"]["problems"]:
            print(f"INTEGRITY  FAILED at open ({_clock(report['integrity']['checked_at'])}): {problem}")
    print("events     pending  in_flight  done      dead      oldest_pending_s")
    print(f"           {events['pending']:<8} {events['in_flight']:<10} {events['done']:<9} "
          f"{events['dead']:<9} {events['oldest_pending_s']:.1f}")
    processes = report["processes"]
    if not processes:
        print("processes  none published a status")
        return
    now = time.time()
    width = max(len(name) for name in processes)
    indent = 11 + width + 9
    print(f"processes  {'name':<{width}}  age_s  status")
    for name, doc in sorted(processes.items()):
        age = now - doc.get("updated_at", now)
        print(f"           {name:<{width}}  {age:>5.0f}  {_summarise(doc, now)}")
        if age > STALE_AFTER_S and doc.get("state") != "stopped":
            print(f"{'':<{indent}}STALE: no status for {age:.0f} s (killed, or its host is down)")
        for line in _detail_lines(doc):
            print(f"{'':<{indent}}{line}")
        for line in handler_table(doc.get("handlers"), indent=" " * indent):
            print(line)
        _print_budget(doc.get("ratelimiter"), indent=indent)


def _print_budget(ratelimiter, indent: int) -> None:
    """A dispatcher's rate limiter's share of each endpoint's shared budget (ratelimiter/shared_budget.py)
    in its last second: the shares of all rate limiters on one store add up to at most 100 %."""
    stats = ratelimiter.get("stats") if isinstance(ratelimiter, dict) else None
    budget = stats.get("budget") if isinstance(stats, dict) else None
    if not isinstance(budget, dict) or not budget:
        return
    shares = ", ".join(f"{endpoint} {100 * b.get('share', 0):.0f}% ({b.get('sent', 0)} sent)"
                       for endpoint, b in sorted(budget.items()) if isinstance(b, dict))
    print(f"{' ' * indent}rate budget share: {shares}")


def _publishing(statuses: dict, now: float) -> bool:
    return any(now - doc.get("updated_at", 0) <= STALE_AFTER_S for doc in statuses.values())


def _page_view(statuses: dict, now: float) -> tuple[dict, str] | None:
    """(the view, its address) from a status page of this store that answers at once: it samples
    every second and keeps the last seconds, so its rates cost nothing to ask for. Only pages that
    a `frontdesk run` of this store published are asked (another address may serve another store)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))   # loopback: no proxies
    for name, doc in sorted(statuses.items()):
        page = ((doc.get("services") or {}).get("statuspage") or {}) if status_role(name) == "run" else {}
        if not page.get("pid") or not page.get("address") or now - doc.get("updated_at", 0) > STALE_AFTER_S:
            continue
        address = page["address"].rstrip("/")
        try:
            with opener.open(f"{address}/status.json", timeout=PAGE_TIMEOUT_S) as answer:
                view = json.load(answer).get("view")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(view, dict):
            return view, f"{address}/"
    return None


def _measure(store, interval_s: float) -> dict:
    """Two samples interval_s apart (rates need two), or one when interval_s is 0: the cost of
    rates measured here is that wait (it made `frontdesk status` take 1.6 s by default)."""
    observer = Observer(store)
    observer.sample()
    if interval_s > 0:
        time.sleep(interval_s)
        observer.sample()
    return observer.view()


def _rates(store, statuses: dict, interval_s: float | None) -> tuple[dict, str]:
    """The view the advice reads, and where its rates came from (in words)."""
    now = time.time()
    if not _publishing(statuses, now):
        return _measure(store, 0.0), "none (no process publishes a status)"
    if interval_s is None:
        found = _page_view(statuses, now)
        if found is not None:
            return found[0], f"from the status page {found[1]}"
        return _measure(store, 0.0), "none: no status page of this store answers (--interval 1.5 measures them)"
    if interval_s == 0:
        return _measure(store, 0.0), "none (--interval 0)"
    return _measure(store, interval_s), f"measured over {interval_s:g} s"


def _absent_sqlite_file(url: str) -> str | None:
    """The path of a SQLite store that does not exist, else None."""
    if not url.startswith("sqlite:///"):
        return None
    try:
        path = path_from_url(url)
    except StoreError:
        return None
    return None if os.path.exists(path) else path


@_reported
def main_status(settings, args) -> int:
    """Queue depth, in flight, dead letters, every process's published status, and advice."""
    if args.interval is not None and args.interval < 0:
        _fail("status", f"--interval must be 0 or more, got {args.interval:g}", 2)
    store_url = public_url(settings.store)
    missing = _absent_sqlite_file(settings.store)
    if missing is not None:   # say so, and create nothing
        _fail("status", f"no store at {store_url}: {os.path.abspath(missing)} does not exist (nothing has run "
                        "with this store here: give the system's --store, or run this in its folder)", NO_STORE)
    report = {"store": store_url, "events": {}, "processes": {}, "integrity": None, "rates": None}
    view = None
    with _store("status", settings.store) as store:
        report["integrity"] = store.integrity()
        report["events"] = store.stats()
        report["processes"] = store.get_statuses()
        if not report["integrity"]:   # measuring reads every waiting event: a damaged file may fail it
            view, report["rates"] = _rates(store, report["processes"], args.interval)
    report["advice"] = advise(view) if view is not None else []
    if args.json:
        report["view"] = view
        print(json.dumps(report, indent=2, sort_keys=True, default=str))
    else:
        print_status_table(report)
        if report["processes"] and report["rates"]:
            print(f"rates      {report['rates']}")
        for number, line in enumerate(report["advice"]):
            print(f"{'advice' if number == 0 else '':<10} {line}")
    if report["integrity"]:
        print("frontdesk status: the store failed its integrity check; see docs/store.md, "
              "\"Integrity check\"", file=sys.stderr)
        return INTEGRITY_FAILED
    return 0


# --- scale -------------------------------------------------------------------------------------

@_reported
def main_scale(settings, args) -> int:
    """Ask running dispatchers for a number of handler processes (they read it from the store)."""
    if args.count < 0:
        _fail("scale", f"count must be 0 or more, got {args.count}", 2)
    with _store("scale", settings.store) as store:
        store.set_control("handlers", args.count)
    print(f"handlers: {args.count} requested; running dispatchers pick it up within a few seconds")
    return 0


# --- dead letters ----------------------------------------------------------------------------------

def _print_dead_table(letters: list[dict]) -> None:
    if not letters:
        print("no dead letters")
        return
    print(f"{'id':<34} {'key':<34} {'attempts':>8}  {'dead_at':<19}  error")
    for letter in letters:
        dead_at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(letter["dead_at"] or 0))
        error = (letter["error"] or "").replace("\n", " ")
        print(f"{letter['id']:<34} {letter['key']:<34} {letter['attempts']:>8}  {dead_at}  "
              f"{error if len(error) <= 80 else error[:77] + '...'}")


@_reported
def main_dead_letters(settings, args) -> int:
    """list | retry | drop dead letters (retry and drop need ids or --all)."""
    if args.action in (None, "list"):
        if args.ids or args.all:
            _fail("dead-letters", "list takes no ids and no --all (use --limit)", 2)
        with _store("dead-letters", settings.store) as store:
            letters = store.dead_letters(args.limit)
        if args.json:
            print(json.dumps(letters, indent=2, ensure_ascii=False))
        else:
            _print_dead_table(letters)
        return 0
    if bool(args.ids) == bool(args.all):
        _fail("dead-letters", f"{args.action} needs event ids or --all (not both)", 2)
    with _store("dead-letters", settings.store) as store:
        operation = store.retry_dead if args.action == "retry" else store.drop_dead
        if args.all:
            count, unknown = operation(None), []
        else:   # one call per id (a few, typed by hand), so that the unknown ones can be named
            done = {event_id: operation([event_id]) for event_id in dict.fromkeys(args.ids)}
            count, unknown = sum(done.values()), [event_id for event_id, n in done.items() if not n]
    verb = "re-queued" if args.action == "retry" else "dropped"
    if args.json:
        print(json.dumps({verb: count, **({"not_dead_letters": unknown} if unknown else {})}))
    else:
        print(f"{verb} {count} dead letter(s)")
    if unknown:
        print(f"frontdesk dead-letters: not dead letters: {' '.join(unknown)}", file=sys.stderr)
        return 1
    return 0


# --- integrity ----------------------------------------------------------------------------------------

@_reported
def main_integrity(settings, args) -> int:
    """salvage: append again the events that kept copies of a damaged WAL hold and SQLite dropped
    (store/sqlite_salvage.py); clear: forget the integrity report, once an operator has dealt with it."""
    if args.action == "clear":
        with _store("integrity", settings.store) as store:
            report = store.integrity()
            store.clear_integrity()
        print("integrity report cleared" if report else "no integrity report to clear")
        return 0
    if not settings.store.startswith("sqlite:///"):
        _fail("integrity", "salvage: only a SQLite store keeps copies of a damaged WAL", 2)
    from frontdesk.store import sqlite_salvage as salvage
    from frontdesk.store.sqlite import path_from_url

    pairs = salvage.copies_beside(path_from_url(settings.store))
    if not pairs:
        print("no copies of a damaged WAL beside the store: nothing to salvage")
        return 0
    with _store("integrity", settings.store) as store:
        for db_copy, wal_copy in pairs:
            try:
                lost = salvage.lost_events(db_copy, wal_copy)
            except (sqlite3.DatabaseError, OSError) as exc:
                _fail("integrity", f"salvage: {wal_copy}: cannot be read back: {exc}")
            new = duplicates = 0
            for event in lost:
                if not event.finished and event.event is not None:
                    result = store.append(event.destination, [event.event], event.received_at_ms)
                    new, duplicates = new + len(result.new), duplicates + len(result.duplicates)
            finished = sum(event.finished for event in lost)
            unreadable = sum(event.event is None and not event.finished for event in lost)
            print(f"{wal_copy}: {len(lost)} event(s) SQLite had dropped; re-queued {new}, "
                  f"{duplicates} already in the store, {finished} finished before the crash"
                  + (f", {unreadable} unreadable (their page was damaged)" if unreadable else ""))
    return 0


# --- config ------------------------------------------------------------------------------------------

@_reported
def main_config(settings, args) -> int:
    """The resolved configuration, one knob a line with where its value came from (secrets masked)."""
    if args.markdown:
        print(config.markdown_table())
        return 0
    values = settings.public()
    values["store"] = public_url(values["store"])
    width = max(len(name) for name in values)
    for name, value in values.items():
        print(f"{name:<{width}}  {value}  ({settings.source(name)})")
    return 0
