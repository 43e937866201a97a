"""Operator commands that talk to the store: status, scale, dead-letters, integrity, config.

Each is `main_X(settings, args)` wired by command/cli.py. They open the store, do one thing,
print it (a small table, or JSON with --json) and exit: 0 done, 1 the store failed, 2 bad usage.
Errors are one line naming the problem; secrets (credentials in a store URL) are never shown.
"""
from __future__ import annotations

import json
import sqlite3
import sys
import time
from contextlib import contextmanager

from frontdesk.protocol import config
from frontdesk.store import StoreError, open_store, sqlite_file_missing
from frontdesk.store.mongo import redact_url as public_url

from .advice import advise
from .observe import STALE_AFTER_S, Observer

EMPTY_STATS = {"pending": 0, "in_flight": 0, "done": 0, "dead": 0, "oldest_pending_s": 0.0}


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

def _summarise(doc: dict) -> str:
    """One line for a process's status document: its scalars, and handler states counted."""
    parts = []
    for key, value in doc.items():
        if key == "updated_at" or key.endswith("_counts"):   # histograms: `frontdesk top` shows them
            continue
        if key == "handlers" and isinstance(value, list):
            states: dict[str, int] = {}
            for handler in value:
                state = handler.get("state", "?") if isinstance(handler, dict) else "?"
                states[state] = states.get(state, 0) + 1
            parts.append(f"handlers={len(value)}"
                         + (" (" + ", ".join(f"{s} {n}" for s, n in sorted(states.items())) + ")" if states else ""))
        elif isinstance(value, (str, int, float, bool)) or value is None:
            parts.append(f"{key}={value}")
        else:
            text = json.dumps(value, separators=(",", ":"), default=str)
            parts.append(f"{key}={text if len(text) <= 60 else text[:57] + '...'}")
    return " ".join(parts)


INTEGRITY_FAILED = 3   # `frontdesk status` exit status while the store's integrity check has failed


def print_status_table(report: dict) -> None:
    events = report["events"]
    print(f"store      {report['store']}")
    if report.get("integrity"):
        for problem in report["integrity"]["problems"]:
            print(f"INTEGRITY  FAILED at open ({time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(report['integrity']['checked_at']))}): {problem}")
    print("events     pending  in_flight  done      dead      oldest_pending_s")
    print(f"           {events['pending']:<8} {events['in_flight']:<10} {events['done']:<9} "
          f"{events['dead']:<9} {events['oldest_pending_s']:.1f}")
    processes = report["processes"]
    if not processes:
        print("processes  none published a status")
        return
    now = time.time()
    width = max(len(name) for name in processes)
    print(f"processes  {'name':<{width}}  age_s  status")
    for name, doc in sorted(processes.items()):
        age = now - doc.get("updated_at", now)
        print(f"           {name:<{width}}  {age:>5.0f}  {_summarise(doc)}")
        if age > STALE_AFTER_S and doc.get("state") != "stopped":
            print(f"           {'':<{width}}         STALE: no status for {age:.0f} s (killed, or its host is down)")
        if doc.get("degraded"):
            print(f"           {'':<{width}}         DEGRADED: {doc['degraded']}")
        _print_handlers(doc.get("handlers"), indent=11 + width + 9)
        _print_budget(doc.get("ratelimiter"), indent=11 + width + 9)


def _print_handlers(handlers, indent: int) -> None:
    """One row per handler process: what an operator looks at when a pool misbehaves."""
    if not isinstance(handlers, list) or not handlers:
        return
    pad = " " * indent
    print(f"{pad}{'handler':<12} {'pid':>7}  {'state':<16} {'in_flight':>9} {'handled':>8} {'restarts':>8}")
    for h in handlers:
        if isinstance(h, dict):
            print(f"{pad}{str(h.get('name', '?')):<12} {str(h.get('pid') or '-'):>7}  "
                  f"{str(h.get('state', '?')):<16} {h.get('in_flight', 0):>9} {h.get('handled', 0):>8} "
                  f"{h.get('restarts', 0):>8}")


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


def _measure(store, interval_s: float) -> dict:
    """Two samples interval_s apart when some process is publishing (rates need two), else one."""
    observer = Observer(store)
    first = observer.sample()
    fresh = any(first.at - doc.get("updated_at", 0) <= STALE_AFTER_S for doc in first.statuses.values())
    if interval_s > 0 and fresh:
        time.sleep(interval_s)
        observer.sample()
    return observer.view()


@_reported
def main_status(settings, args) -> int:
    """Queue depth, in flight, dead letters, every process's published status, and advice."""
    report = {"store": public_url(settings.store), "events": dict(EMPTY_STATS), "processes": {},
              "integrity": None}
    view = None
    if not sqlite_file_missing(settings.store):   # status shows zeros and creates nothing
        with _store("status", settings.store) as store:
            report["integrity"] = store.integrity()
            report["events"] = store.stats()
            report["processes"] = store.get_statuses()
            if not report["integrity"]:   # measuring reads every waiting event: a damaged file may fail it
                view = _measure(store, args.interval)
    report["advice"] = advise(view) if view is not None else []
    if args.json:
        report["view"] = view
        print(json.dumps(report, indent=2, sort_keys=True, default=str))
    else:
        print_status_table(report)
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
    (store/salvage.py); clear: forget the integrity report, once an operator has dealt with it."""
    if args.action == "clear":
        with _store("integrity", settings.store) as store:
            report = store.integrity()
            store.clear_integrity()
        print("integrity report cleared" if report else "no integrity report to clear")
        return 0
    if not settings.store.startswith("sqlite:///"):
        _fail("integrity", "salvage: only a SQLite store keeps copies of a damaged WAL", 2)
    from frontdesk.store import salvage
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
