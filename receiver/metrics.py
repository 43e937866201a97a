"""What the receiver's `GET /metrics` shows: its own counters and latencies, and the store's and
the dispatchers' figures read at most once a second (a scrape must not load the store).

Written in the one Prometheus text format of protocol/prometheus.py.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from frontdesk.protocol.process import status_role
from frontdesk.protocol.prometheus import Registry
from frontdesk.store import Store, StoreError

log = logging.getLogger("frontdesk.receiver")

STATS_TTL_S = 1.0  # /metrics reads the store's queue counts at most this often
STATUS_FRESH_S = 10.0  # a dispatcher publishes every second: older than this, it is gone
# Seconds; fine steps below 50 ms (the ack target) and coarse ones up to LINE's 2 s limit.
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)


class CachedStats:
    """store.stats() and the processes' statuses at most once per STATS_TTL_S; `clock` is
    time.monotonic (injected for tests), `wall` time.time (a status's updated_at is wall time)."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time):
        self._store = store
        self._clock, self._wall = clock, wall
        self._lock = threading.Lock()
        self._read_at: float | None = None
        self._stats: dict = {}
        self._statuses: dict[str, dict] = {}

    def _refresh(self) -> None:
        now = self._clock()
        if self._read_at is not None and now - self._read_at < STATS_TTL_S:
            return
        self._read_at = now
        try:
            self._stats, self._statuses = self._store.stats(), self._store.get_statuses()
        except StoreError as exc:
            log.warning("event=stats_failed reason=%s", exc)
            self._stats, self._statuses = {}, {}

    def get(self, name: str) -> float | None:
        with self._lock:
            self._refresh()
            return self._stats.get(name)

    def dispatchers(self) -> dict[str, dict]:
        """Status documents of dispatchers that published lately (a dead one's doc goes stale)."""
        with self._lock:
            self._refresh()
            fresh_after = self._wall() - STATUS_FRESH_S
            return {name: doc for name, doc in self._statuses.items()
                    if status_role(name) == "dispatcher" and doc.get("updated_at", 0) >= fresh_after}


class ReceiverMetrics:
    """Everything /metrics shows; one instance per receiver. It owns the counters the routes
    update and the gauges read at scrape time (the store's through CachedStats, `busy` for the
    HTTP server's requests read and not answered yet)."""

    def __init__(self, stats: CachedStats, busy: Callable[[], int | None]):
        self.registry = registry = Registry()
        self.requests = registry.counter(
            "frontdesk_receiver_requests_total", "HTTP requests answered, by route and status code.",
            ("route", "status"))
        self.events_stored = registry.counter(
            "frontdesk_receiver_events_stored_total", "Webhook events newly stored.")
        self.duplicates = registry.counter(
            "frontdesk_receiver_events_duplicate_total",
            "Webhook events acknowledged but already stored (redeliveries).")
        self.ack_seconds = registry.histogram(
            "frontdesk_receiver_ack_seconds", "Webhook arrival to answer, seconds.", LATENCY_BUCKETS)
        self.append_seconds = registry.histogram(
            "frontdesk_receiver_store_append_seconds",
            "One store append (waiting for the group commit included), seconds.", LATENCY_BUCKETS)
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()
        registry.gauge("frontdesk_receiver_appends_in_flight",
                       "Requests waiting for their events to become durable.", lambda: self._in_flight)
        registry.gauge("frontdesk_store_pending_events",
                       "Events stored and not yet delivered (read at most once a second).",
                       lambda: stats.get("pending"))
        registry.gauge("frontdesk_store_in_flight_events",
                       "Events leased to a dispatcher (read at most once a second).",
                       lambda: stats.get("in_flight"))
        registry.gauge("frontdesk_store_dead_events", "Dead letters (read at most once a second).",
                       lambda: stats.get("dead"))
        registry.gauge("frontdesk_receiver_server_queue_depth", "Requests read and not answered yet.", busy)
        self._pool_gauges(stats)
        self._budget_gauge(stats)

    def append_started(self) -> None:
        with self._in_flight_lock:
            self._in_flight += 1

    def append_finished(self, seconds: float) -> None:
        with self._in_flight_lock:
            self._in_flight -= 1
        self.append_seconds.observe(seconds)

    def _pool_gauges(self, stats: CachedStats) -> None:
        """The handler pools as `frontdesk status` shows them, for alerting on a degraded pool."""
        self.registry.gauge(
            "frontdesk_handler_pool_degraded",
            "1 while a dispatcher's handler pool is degraded (restart intensity exceeded).",
            lambda: [((name, doc.get("degraded") or ""), 1 if doc.get("degraded") else 0)
                     for name, doc in sorted(stats.dispatchers().items())],
            labelnames=("process", "reason"))
        self.registry.gauge(
            "frontdesk_handlers_ready", "Handler processes ready, per dispatcher.",
            lambda: [((name,), sum(1 for h in doc.get("handlers", []) if h.get("state") == "ready"))
                     for name, doc in sorted(stats.dispatchers().items())],
            labelnames=("process",))

    def _budget_gauge(self, stats: CachedStats) -> None:
        """Each rate limiter's share of each endpoint's shared budget (docs/ratelimiter.md)."""
        def shares():
            return [((name, endpoint), figures.get("share", 0.0))
                    for name, doc in sorted(stats.dispatchers().items())
                    for endpoint, figures in sorted((((doc.get("ratelimiter") or {}).get("stats") or {})
                                                     .get("budget") or {}).items())]
        self.registry.gauge(
            "frontdesk_rate_budget_share",
            "Part of an endpoint's rate (rate_limits) a dispatcher's rate limiter reserved in its "
            "last second; all of them on one store add up to at most 1.", shares,
            labelnames=("process", "endpoint"))
