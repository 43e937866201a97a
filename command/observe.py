"""What `frontdesk top`, `frontdesk status` and the status page show: figures from two samples.

Every process publishes cumulative counters in its status document once a second (events
handled, time busy, a handling-time histogram, API calls per endpoint and status); the store
counts events per state. Nothing here asks a process for more: an `Observer` keeps the last
samples and turns two of them into rates (events/s, busy share, p50/p99, arrivals/s vs
completions/s, calls/s against the limit). The result, a `view`, is plain JSON: the page serves it
as /status.json and the advice (command/advice.py) reads it.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

from frontdesk.protocol.process import HANDLING_BUCKETS_S
from frontdesk.protocol.process import status_role

from .quota_view import quota_lines

STALE_AFTER_S = 5.0         # a status older than this: its process stopped publishing
RATE_WINDOW_S = 5.0         # rates are averaged over about this long
BUSIEST_KEYS_EVERY_S = 5.0  # the per-key count reads every event not done: not every second
BUSIEST_KEYS_MIN = 20       # below this many events not done, no key can be hot


@dataclass
class Sample:
    """One read of the store (take_sample): what every figure of a view is computed from."""
    at: float                # epoch seconds, when it was read
    events: dict             # store.stats()
    statuses: dict           # store.get_statuses()
    busiest_key: tuple[str, int] | None = None   # store.busiest_keys(1), read every few seconds


def take_sample(store, with_busiest_key: bool = True, wall: Callable[[], float] = time.time) -> Sample:
    """One read of the store: event counts and every status document (a few rows); with
    with_busiest_key, the conversation with the most events not done, when there are enough.
    `wall` stamps it (status documents carry wall-clock times)."""
    events = store.stats()
    busiest = None
    if with_busiest_key and events.get("pending", 0) + events.get("in_flight", 0) >= BUSIEST_KEYS_MIN:
        busiest = next(iter(store.busiest_keys(1)), None)
    return Sample(wall(), events, store.get_statuses(), busiest)


def percentile(counts: list[int], q: float) -> float | None:
    """The upper bound (s) of the histogram bucket holding the q-quantile; None with no events,
    inf beyond the last bound."""
    total = sum(counts)
    if total <= 0:
        return None
    rank, cumulative = q * total, 0
    for bound, count in zip((*HANDLING_BUCKETS_S, float("inf")), counts):
        cumulative += count
        if cumulative >= rank:
            return bound
    return float("inf")


def _ms(seconds: float | None) -> float | None:
    if seconds is None:
        return None
    return None if seconds == float("inf") else round(seconds * 1000, 1)


def _delta(new, old) -> float:
    """A counter's growth; a restarted process starts again from zero."""
    new, old = new or 0, old or 0
    return new if new < old else new - old


def _counts_delta(new: list | None, old: list | None) -> list[int]:
    new = new or []
    if not old or len(old) != len(new) or any(n < o for n, o in zip(new, old)):
        return list(new)
    return [n - o for n, o in zip(new, old)]


def _rate(amount: float, seconds: float) -> float:
    return round(amount / seconds, 2) if seconds > 0 else 0.0


def handler_view(new: dict, old: dict | None, seconds: float) -> dict:
    """One handler process between two of its dispatcher's status documents."""
    same = old is not None and old.get("pid") == new.get("pid")
    old = old if same else {}
    handled = _delta(new.get("handled"), old.get("handled"))
    busy = _delta(new.get("busy_s"), old.get("busy_s"))
    counts = _counts_delta(new.get("handling_counts"), old.get("handling_counts"))
    return {
        "name": new.get("name"), "pid": new.get("pid"), "state": new.get("state"),
        "in_flight": new.get("in_flight", 0), "max_in_flight": new.get("max_in_flight", 0),
        "handled": new.get("handled", 0), "restarts": new.get("restarts", 0),
        "events_per_s": _rate(handled, seconds),
        "busy_share": round(min(1.0, busy / seconds), 3) if seconds > 0 and new.get("pid") else 0.0,
        "p50_ms": _ms(percentile(counts, 0.50)), "p99_ms": _ms(percentile(counts, 0.99)),
    }


def ratelimiter_view(new: dict, old: dict | None, seconds: float) -> dict:
    """The rate limiter: per endpoint calls/s against its limit, queued calls, 429s, batches."""
    new = new or {}
    stats, old_stats = new.get("stats") or {}, ((old or {}).get("stats") or {})
    if (old or {}).get("pid") != new.get("pid"):
        old_stats = {}
    limits = new.get("limits_per_s") or {}
    calls, old_calls = stats.get("calls") or {}, old_stats.get("calls") or {}
    queues = stats.get("queues") or {}
    endpoints = []
    for endpoint in sorted(set(calls) | set(queues)):
        by_status, old_by_status = calls.get(endpoint, {}), old_calls.get(endpoint, {})
        sent = sum(_delta(by_status.get(code), old_by_status.get(code)) for code in by_status)
        endpoints.append({
            "endpoint": endpoint, "calls_per_s": _rate(sent, seconds),
            "limit_per_s": limits.get(endpoint, limits.get("default")),
            "queued": (queues.get(endpoint) or {}).get("queued", 0),
            "429s": by_status.get("429", 0),
            "429s_per_s": _rate(_delta(by_status.get("429"), old_by_status.get("429")), seconds),
            "calls": sum(by_status.values()),
        })
    return {"pid": new.get("pid"), "restarts": new.get("restarts", 0), "degraded": new.get("degraded"),
            "pending_calls": new.get("pending_calls", 0), "endpoints": endpoints,
            "429s": stats.get("429s", 0), "batches": stats.get("batches", 0),
            "batches_per_s": _rate(_delta(stats.get("batches"), old_stats.get("batches")), seconds),
            "quota": stats.get("quota"), "quota_lines": quota_lines(stats.get("quota"))}


def dispatcher_view(name: str, new: dict, old: dict | None, now: float) -> dict:
    seconds = new.get("updated_at", 0) - old.get("updated_at", 0) if old else 0.0
    old_handlers = {h.get("name"): h for h in (old or {}).get("handlers", []) if isinstance(h, dict)}
    handlers = [handler_view(h, old_handlers.get(h.get("name")), seconds)
                for h in new.get("handlers", []) if isinstance(h, dict)]
    e2e = _counts_delta(new.get("e2e_counts"), (old or {}).get("e2e_counts"))
    age = now - new.get("updated_at", now)
    return {
        "name": name, "pid": new.get("pid"), "host": new.get("host"), "state": new.get("state"),
        "status_age_s": round(age, 1), "stale": age > STALE_AFTER_S and new.get("state") != "stopped",
        "handlers_target": new.get("handlers_target"), "autoscale": new.get("autoscale"),
        "degraded": new.get("degraded"), "store_error": new.get("store_error"),
        "in_flight": new.get("in_flight", 0), "handled": new.get("handled", 0),
        "events_per_s": round(sum(h["events_per_s"] for h in handlers), 2),
        "busy_share": round(sum(h["busy_share"] for h in handlers) / len(handlers), 3) if handlers else 0.0,
        "e2e_p50_ms": _ms(percentile(e2e, 0.50)), "e2e_p99_ms": _ms(percentile(e2e, 0.99)),
        "handlers": handlers,
        "ratelimiter": ratelimiter_view(new.get("ratelimiter"), (old or {}).get("ratelimiter"), seconds),
    }


def queue_view(new: Sample, old: Sample | None) -> dict:
    """Store counts, with arrivals/s (growth of all events) and completions/s (done + dead)."""
    events = dict(new.events)
    seconds = new.at - old.at if old else 0.0
    if old is not None and seconds > 0:
        total = lambda e: sum(e.get(k, 0) for k in ("pending", "in_flight", "done", "dead"))
        finished = lambda e: e.get("done", 0) + e.get("dead", 0)
        # retention purges done events: a shrinking total counts as no arrivals, not negative ones
        events["arrivals_per_s"] = _rate(max(0, total(new.events) - total(old.events)), seconds)
        events["completions_per_s"] = _rate(max(0, finished(new.events) - finished(old.events)), seconds)
    else:
        events["arrivals_per_s"] = events["completions_per_s"] = None
    waiting = events.get("pending", 0) + events.get("in_flight", 0)
    if new.busiest_key is not None and waiting:
        key, count = new.busiest_key
        events["busiest_key"] = {"key": key, "events": count, "share": round(min(1.0, count / waiting), 3)}
    else:
        events["busiest_key"] = None
    return events


class Observer:
    """The last samples of one store, and the view between the newest and one RATE_WINDOW_S older.

    It owns the samples (kept keep_s) and when the costly per-key count is read again; `clock`
    (time.monotonic) paces that read, `wall` (time.time) stamps the samples."""

    def __init__(self, store, keep_s: float = 2 * RATE_WINDOW_S, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time):
        self.store = store
        self.samples: deque[Sample] = deque()
        self.keep_s = keep_s
        self._clock, self._wall = clock, wall
        self._busiest_at: float | None = None

    def sample(self) -> Sample:
        now = self._clock()
        fresh = self._busiest_at is None or now - self._busiest_at >= BUSIEST_KEYS_EVERY_S
        sample = take_sample(self.store, with_busiest_key=fresh, wall=self._wall)
        if fresh:
            self._busiest_at = now
        elif self.samples:      # between reads, the last one stands
            sample.busiest_key = self.samples[-1].busiest_key
        self.samples.append(sample)
        while self.samples and sample.at - self.samples[0].at > self.keep_s:
            self.samples.popleft()
        return sample

    def view(self) -> dict:
        if not self.samples:
            raise ValueError("no sample taken yet")
        newest = self.samples[-1]
        window = [s for s in self.samples if s is not newest and newest.at - s.at <= RATE_WINDOW_S]
        if not window and len(self.samples) > 1:
            window = [self.samples[-2]]
        return build_view(newest, window)


def build_view(new: Sample, older: list[Sample]) -> dict:
    """Everything top, status and the page show, from the newest sample and older ones (oldest
    first) to take rates against; with none, rates are absent or zero."""
    dispatchers, others = [], {}
    for name, doc in sorted(new.statuses.items()):
        if status_role(name) == "dispatcher":
            # the oldest earlier document of this dispatcher that differs (one publish later at least)
            previous = next((s.statuses[name] for s in older if name in s.statuses
                             and s.statuses[name].get("updated_at") != doc.get("updated_at")), None)
            dispatchers.append(dispatcher_view(name, doc, previous, new.at))
        else:
            age = new.at - doc.get("updated_at", new.at)
            others[name] = {**doc, "status_age_s": round(age, 1),
                            "stale": age > STALE_AFTER_S and doc.get("state") != "stopped"}
    return {"at": new.at, "queue": queue_view(new, older[0] if older else None),
            "dispatchers": dispatchers, "processes": others}
