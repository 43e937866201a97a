"""The webhook receiver's routes: verify, validate, store durably, then answer.

The order is the contract (docs/receiver.md, "What each request gets"): size limit (the HTTP
server refuses a larger body before reading it), signature over the raw bytes, then parsing, then
one durable append of every event of the body, which must start within the ack budget counted
from the request's arrival. Only a 200 means anything was stored. The routes run on the
receiver's event loop (protocol/http_server.py); the append is handed to the store's writer
thread and answered when it is durable.
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import deque
from typing import Callable

from frontdesk.protocol.config import Settings
from frontdesk.protocol.events import WebhookError, parse_webhook_body, signature_ok
from frontdesk.protocol.http_server import Request, Response, error_body
from frontdesk.protocol.process import status_role
from frontdesk.store import Store, StoreError, StoreGone

from . import metrics as prom

log = logging.getLogger("frontdesk.receiver")

STATS_TTL_S = 1.0  # /metrics reads the store's queue counts at most this often
STATUS_FRESH_S = 10.0  # a dispatcher publishes every second: older than this, it is gone


class _Rejected(Exception):
    """A webhook answered with an error: the log line gets `reason`, the client `public`
    (the same unless the reason holds server details such as file paths)."""

    def __init__(self, status: int, reason: str, public: str | None = None):
        super().__init__(reason)
        self.status, self.reason = status, reason
        self.public = reason if public is None else public


class ReceiverMetrics:
    """Everything /metrics shows; one instance per app."""

    def __init__(self, registry: prom.Registry):
        self.registry = registry
        self.requests = registry.counter(
            "frontdesk_receiver_requests_total", "HTTP requests answered, by route and status code.",
            ("route", "status"))
        self.events_stored = registry.counter(
            "frontdesk_receiver_events_stored_total", "Webhook events newly stored.")
        self.duplicates = registry.counter(
            "frontdesk_receiver_events_duplicate_total",
            "Webhook events acknowledged but already stored (redeliveries).")
        self.ack_seconds = registry.histogram(
            "frontdesk_receiver_ack_seconds", "Webhook arrival to answer, seconds.")
        self.append_seconds = registry.histogram(
            "frontdesk_receiver_store_append_seconds",
            "One store append (waiting for the group commit included), seconds.")
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()
        registry.gauge("frontdesk_receiver_appends_in_flight",
                       "Requests waiting for their events to become durable.", lambda: self._in_flight)

    def append_started(self) -> None:
        with self._in_flight_lock:
            self._in_flight += 1

    def append_finished(self, seconds: float) -> None:
        with self._in_flight_lock:
            self._in_flight -= 1
        self.append_seconds.observe(seconds)


class _CachedStats:
    """store.stats() and the processes' statuses at most once per STATS_TTL_S: a scrape must not
    load the store."""

    def __init__(self, store: Store):
        self._store = store
        self._lock = threading.Lock()
        self._read_at = -STATS_TTL_S
        self._stats: dict = {}
        self._statuses: dict[str, dict] = {}

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._read_at < STATS_TTL_S:
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
            fresh_after = time.time() - STATUS_FRESH_S
            return {name: doc for name, doc in self._statuses.items()
                    if status_role(name) == "dispatcher" and doc.get("updated_at", 0) >= fresh_after}


def _pool_gauges(registry: prom.Registry, stats: _CachedStats) -> None:
    """The handler pools as `frontdesk status` shows them, for alerting on a degraded pool."""
    registry.gauge("frontdesk_handler_pool_degraded",
                   "1 while a dispatcher's handler pool is degraded (restart intensity exceeded).",
                   lambda: [((name, doc.get("degraded") or ""), 1 if doc.get("degraded") else 0)
                            for name, doc in sorted(stats.dispatchers().items())],
                   labelnames=("process", "reason"))
    registry.gauge("frontdesk_handlers_ready", "Handler processes ready, per dispatcher.",
                   lambda: [((name,), sum(1 for h in doc.get("handlers", []) if h.get("state") == "ready"))
                            for name, doc in sorted(stats.dispatchers().items())],
                   labelnames=("process",))


def _budget_gauge(registry: prom.Registry, stats: _CachedStats) -> None:
    """Each rate limiter's share of each endpoint's shared budget (docs/ratelimiter.md)."""
    def shares():
        return [((name, endpoint), figures.get("share", 0.0))
                for name, doc in sorted(stats.dispatchers().items())
                for endpoint, figures in sorted((((doc.get("ratelimiter") or {}).get("stats") or {})
                                                 .get("budget") or {}).items())]
    registry.gauge("frontdesk_rate_budget_share",
                   "Part of an endpoint's rate (rate_limits) a dispatcher's rate limiter reserved in its "
                   "last second; all of them on one store add up to at most 1.", shares,
                   labelnames=("process", "endpoint"))


class Receiver:
    """The receiver's routes on its event loop: POST <callback_path>, GET /healthz, GET /metrics."""

    def __init__(self, settings: Settings, store: Store, busy: Callable[[], int | None] = lambda: None,
                 fail: Callable[[str], None] = lambda reason: None):
        self._secret = settings.channel_secret.encode()
        self._callback_path = settings.callback_path
        self._budget_s = settings.ack_budget_s
        self._store = store
        self._fail = fail   # stops the receiver (exit status 1) for its supervisor to restart it
        self.metrics = ReceiverMetrics(prom.Registry())
        self._stats = _CachedStats(store)
        registry = self.metrics.registry
        registry.gauge("frontdesk_store_pending_events",
                       "Events stored and not yet delivered (read at most once a second).",
                       lambda: self._stats.get("pending"))
        registry.gauge("frontdesk_store_in_flight_events",
                       "Events leased to a dispatcher (read at most once a second).",
                       lambda: self._stats.get("in_flight"))
        registry.gauge("frontdesk_store_dead_events", "Dead letters (read at most once a second).",
                       lambda: self._stats.get("dead"))
        registry.gauge("frontdesk_receiver_server_queue_depth",
                       "Requests read and not answered yet.", busy)
        _pool_gauges(registry, self._stats)
        _budget_gauge(registry, self._stats)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._durable: deque = deque()     # appends the writer thread finished, for the loop
        self._durable_lock = threading.Lock()
        self._pending: dict[int, tuple] = {}   # appends handed to the store, not answered yet, by handle id

    def __call__(self, request: Request) -> Response | asyncio.Future:
        if request.path == self._callback_path:
            route = self._callback_path
            answer = self._callback(request) if request.method == "POST" else _method_not_allowed(request)
        elif request.path == "/healthz":
            route, answer = "/healthz", self._health() if request.method == "GET" else _method_not_allowed(request)
        elif request.path == "/metrics":
            route = "/metrics"
            answer = Response(200, self.metrics.registry.render().encode(), prom.CONTENT_TYPE) \
                if request.method == "GET" else _method_not_allowed(request)
        else:
            log.info("status=404 method=%s path=%r", request.method, request.path[:200])
            route, answer = "unmatched", Response(404, error_body(404, f"no route {request.path[:200]!r}"))
        if isinstance(answer, Response):
            self.metrics.requests.inc(route, str(answer.status))
        else:
            answer.add_done_callback(lambda done: self.metrics.requests.inc(route, str(done.result().status)))
        return answer

    # --- POST /callback ----------------------------------------------------------------------
    def _callback(self, request: Request) -> Response | asyncio.Future:
        try:
            destination, events = self._check(request)
        except _Rejected as rejected:
            return self._answer(request, rejected.status, 0, 0, 0, rejected)
        if not events:   # LINE's connectivity check: nothing to store
            return self._answer(request, 200, 0, 0, 0)
        deadline = request.arrived + self._budget_s
        if time.monotonic() >= deadline:
            return self._answer(request, 503, len(events), 0, 0,
                                _Rejected(503, "queued past the ack budget before it could be stored"))
        received_at_ms = int((time.time() - (time.monotonic() - request.arrived)) * 1000)
        self._loop = self._loop or asyncio.get_running_loop()
        future = self._loop.create_future()
        self.metrics.append_started()
        started = time.monotonic()
        try:
            handle = self._store.append_nowait(destination, events, received_at_ms, deadline,
                                               self._durable_soon)
        except StoreError as exc:
            self.metrics.append_finished(time.monotonic() - started)
            return self._answer(request, 503, len(events), 0, 0, _store_rejection(exc))
        timer = self._loop.call_at(self._loop.time() + (deadline - time.monotonic()), self._deadline_passed,
                                   handle, future, request, len(events), started)
        self._pending[id(handle)] = (future, request, len(events), started, timer)
        return future

    def _check(self, request: Request) -> tuple[str, list[dict]]:
        signature = request.headers.get("x-line-signature")
        if not signature:
            raise _Rejected(401, "the x-line-signature header is missing")
        if not signature_ok(self._secret, request.body, signature):
            raise _Rejected(401, "x-line-signature does not match the body")
        try:
            return parse_webhook_body(request.body)
        except WebhookError as exc:
            raise _Rejected(400, str(exc)) from None

    def _durable_soon(self, handle) -> None:
        """On the writer thread: queue the finished append for the loop (one wake-up per group)."""
        with self._durable_lock:
            first = not self._durable
            self._durable.append(handle)
        if first:
            self._loop.call_soon_threadsafe(self._durable_now)

    def _durable_now(self) -> None:
        with self._durable_lock:
            handles, self._durable = self._durable, deque()
        for handle in handles:
            pending = self._pending.pop(id(handle), None)
            if pending is None:
                continue   # answered 503 at its deadline (abandoned, so nothing was stored)
            future, request, count, started, timer = pending
            timer.cancel()
            self.metrics.append_finished(time.monotonic() - started)
            if handle.error is not None:
                self._stop_if_gone(handle.error)
                response = self._answer(request, 503, count, 0, 0, _store_rejection(handle.error))
            else:
                result = handle.result
                self.metrics.events_stored.inc(amount=len(result.new))
                self.metrics.duplicates.inc(amount=len(result.duplicates))
                response = self._answer(request, 200, count, len(result.new), len(result.duplicates))
            if not future.done():
                future.set_result(response)

    def _stop_if_gone(self, error: Exception) -> None:
        """The store's file was removed or replaced: every later webhook would go to a file
        nobody reads, so stop (after answering what was read) and let the supervisor restart
        this process on the file at the configured path."""
        if isinstance(error, StoreGone):
            log.critical("event=store_file_gone reason=%s action=exit_for_restart", error)
            self._fail(str(error))

    def _deadline_passed(self, handle, future, request, count, started) -> None:
        """The append could not start in time: give up on it unless it is being written."""
        if id(handle) not in self._pending or not self._store.abandon_append(handle):
            return   # being written: its outcome is coming
        del self._pending[id(handle)]
        self.metrics.append_finished(time.monotonic() - started)
        future.set_result(self._answer(request, 503, count, 0, 0, _store_rejection(
            StoreError("the write could not start before its deadline"))))

    def _answer(self, request: Request, status: int, events: int, new: int, dup: int,
                rejected: _Rejected | None = None) -> Response:
        elapsed = time.monotonic() - request.arrived
        self.metrics.ack_seconds.observe(elapsed)
        level = logging.WARNING if status >= 500 else logging.INFO
        log.log(level, "status=%d events=%d new=%d dup=%d ms=%.1f%s", status, events, new, dup,
                elapsed * 1000, f" reason={rejected.reason!r}" if rejected else "")
        if rejected:
            return Response(status, error_body(status, rejected.public))
        return Response(200, b'{"status":"ok"}')

    # --- GET /healthz ---------------------------------------------------------------------------
    def _health(self) -> Response:
        """200 when the store can take writes, 503 (with the reason) otherwise; 503 too while the
        store's integrity check at open stands failed (acknowledged events may have been lost:
        docs/store.md, "Integrity check"), so that nothing starts serving as if all were well."""
        try:
            self._store.health()
            integrity = self._store.integrity()
        except StoreError as exc:
            self._stop_if_gone(exc)
            return Response(503, json.dumps({"status": "unavailable", "reason": str(exc)}).encode())
        if integrity:
            return Response(503, json.dumps({"status": "integrity_failed", "reason": (
                "the store failed its integrity check at open; `frontdesk status` says what")}).encode())
        return Response(200, b'{"status": "ok"}')


def _store_rejection(exc: Exception) -> _Rejected:
    return _Rejected(503, f"store unavailable: {exc}", "the events cannot be stored now; send them again later")


def _method_not_allowed(request: Request) -> Response:
    log.info("status=405 method=%s path=%r", request.method, request.path[:200])
    return Response(405, error_body(405, f"{request.method} is not allowed here"))
