"""`frontdesk top`: the running system, live, in a terminal (like top(1), for one frontdesk store).

Once a second it reads the store (event counts and every process's published status, a few rows:
command/observe.py) and draws one frame: the queue, each dispatcher with its handler processes,
the rate limiter per endpoint, and the advice (command/advice.py). Keys act through the store,
like `frontdesk scale`, so they reach every dispatcher on any machine within a second or two:
`+`/`-` one handler more or fewer, `h` a rolling restart of the handlers, `q` quits.
`--once` prints one frame (two samples a publish interval apart, so rates are real) and exits.
"""
from __future__ import annotations

import curses
import secrets
import sys
import time

from frontdesk.dispatcher.arbiter import ROLLING_RESTART_CONTROL
from frontdesk.store import StoreError, StoreGone, open_store, sqlite_file_missing
from frontdesk.store.mongo import redact_url
from frontdesk.store.status import STATUS_INTERVAL_S

from .advice import advise
from .handler_table import figure, handler_table, percent
from .observe import Observer

REFRESH_S = 1.0
KEYS_HELP = "keys: + one handler more  - one fewer  h rolling restart  q quit"


def render(view: dict, store_name: str) -> list[str]:
    """One frame as lines of text (no curses: `--once` prints it, the live view draws it)."""
    q = view["queue"]
    lines = [f"frontdesk top  {store_name}  {time.strftime('%H:%M:%S', time.localtime(view['at']))}",
             f"queue  pending {q.get('pending', 0)}  in_flight {q.get('in_flight', 0)}  "
             f"oldest {q.get('oldest_pending_s', 0):.1f}s  arrivals/s {figure(q.get('arrivals_per_s'), 1)}  "
             f"completions/s {figure(q.get('completions_per_s'), 1)}  done {q.get('done', 0)}  "
             f"dead letters {q.get('dead', 0)}"]
    if q.get("busiest_key") and q["busiest_key"]["share"] >= 0.1:   # below that, no conversation stands out
        busiest = q["busiest_key"]
        lines.append(f"       busiest conversation {busiest['key']}: {busiest['events']} events "
                     f"({percent(busiest['share'])} of those waiting)")
    lines.append("")
    if not view["dispatchers"]:
        lines.append("no dispatcher has published a status")
    for d in view["dispatchers"]:
        auto = d.get("autoscale")
        scale = f"auto {auto['min']}..{auto['max']}" if auto else "fixed"
        lines.append(f"dispatcher {d['name']}  {d['state']}{'  STALE' if d['stale'] else ''}  "
                     f"handlers {d['handlers_target']} ({scale})  events/s {figure(d['events_per_s'], 1)}  "
                     f"e2e p50 {figure(d['e2e_p50_ms'])}ms p99 {figure(d['e2e_p99_ms'])}ms")
        if d.get("degraded"):
            lines.append(f"  DEGRADED: {d['degraded']}")
        if auto and auto.get("last_change"):
            lines.append(f"  autoscale: {auto['last_change']}")
        lines += handler_table(d["handlers"], rates=True, indent="  ")
        r = d["ratelimiter"]
        lines.append(f"  rate limiter pid {figure(r['pid'])}  restarts {r['restarts']}  pending calls "
                     f"{r['pending_calls']}  429s {r['429s']}  batches {r['batches']} "
                     f"({figure(r['batches_per_s'], 1)}/s)")
        lines += [f"  {line}" for line in r.get("quota_lines", [])]
        if r["endpoints"]:
            lines.append(f"  {'endpoint':<12} {'calls/s':>8} {'limit/s':>8} {'queued':>7} {'429s':>6} {'calls':>8}")
        for e in r["endpoints"]:
            lines.append(f"  {e['endpoint']:<12} {figure(e['calls_per_s'], 1):>8} {figure(e['limit_per_s'], 0):>8} "
                         f"{e['queued']:>7} {e['429s']:>6} {e['calls']:>8}")
        lines.append("")
    advice = advise(view)
    lines += ["advice: " + (advice[0] if advice else "none, the figures look healthy")]
    lines += [f"        {line}" for line in advice[1:]]
    return lines


def current_target(view: dict) -> int:
    """The handler count the keys start from: the largest target of the running dispatchers."""
    targets = [d["handlers_target"] for d in view["dispatchers"]
               if d["state"] == "running" and not d["stale"] and isinstance(d["handlers_target"], int)]
    return max(targets, default=0)


def handle_key(key: str, view: dict, store) -> str | None:
    """Act on one key press through the store; returns the line to show, or None to quit."""
    if key == "q":
        return None
    if key in ("+", "-"):
        count = max(0, current_target(view) + (1 if key == "+" else -1))
        store.set_control("handlers", count)
        return f"handlers: {count} requested (frontdesk scale {count})"
    if key == "h":
        store.set_control(ROLLING_RESTART_CONTROL, secrets.token_hex(4))
        return "rolling restart of the handlers requested"
    return KEYS_HELP     # any other key (a resize or an arrow arrives as "") only shows the help


def still_the_file(store) -> None:
    """Raise StoreGone when the store's file was removed or replaced: a view that kept the old
    file open would keep the new one from opening (docs/store.md), so top stops and says why."""
    try:
        store.health()
    except StoreGone:
        raise
    except StoreError:
        pass   # a store that cannot take writes can still be watched


def _live(screen, observer: Observer, store_name: str) -> None:
    try:
        curses.curs_set(0)
    except curses.error:   # a terminal that cannot hide its cursor shows it
        pass
    screen.timeout(int(REFRESH_S * 1000))
    message = KEYS_HELP
    next_sample = 0.0
    view = None
    while True:
        if time.monotonic() >= next_sample:
            next_sample = time.monotonic() + REFRESH_S
            still_the_file(observer.store)
            observer.sample()
            view = observer.view()
        _draw(screen, render(view, store_name) + ["", message])
        key = screen.getch()
        if key == -1:
            continue
        message = handle_key(chr(key) if 0 <= key < 256 else "", view, observer.store)
        if message is None:
            return


def _draw(screen, lines: list[str]) -> None:
    """As much of the frame as the terminal holds (a tiny or shrinking terminal shows less)."""
    height, width = screen.getmaxyx()
    screen.erase()
    for row, line in enumerate(lines[:max(0, height - 1)]):
        try:
            screen.addnstr(row, 0, line, max(0, width - 1))
        except curses.error:   # resized between getmaxyx and the write
            break
    screen.refresh()


def main_top(settings, args) -> int:
    """Live view of queue, dispatchers, handlers and rate limiter; --once prints one frame."""
    store_name = redact_url(settings.store)
    if sqlite_file_missing(settings.store):
        print(f"frontdesk top: no store at {store_name} (is frontdesk running with this --store?)",
              file=sys.stderr)
        return 1
    try:
        store = open_store(settings.store)
    except StoreError as exc:
        print(f"frontdesk top: {exc}", file=sys.stderr)
        return 1
    try:
        observer = Observer(store)
        if args.once:
            observer.sample()
            time.sleep(STATUS_INTERVAL_S * 1.5)   # one publish later: every rate has two documents
            observer.sample()
            print("\n".join(render(observer.view(), store_name)))
            return 0
        if not sys.stdout.isatty():
            print("frontdesk top: the live view needs a terminal (use --once for one frame)", file=sys.stderr)
            return 2
        curses.wrapper(_live, observer, store_name)
        return 0
    except StoreError as exc:
        print(f"frontdesk top: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
