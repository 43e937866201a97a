"""The webhook receiver as a falcon WSGI app: verify, validate, store durably, then answer.

The order is the contract (docs/receiver.md, "What each request gets"): admission (is there still time to answer
within the ack budget?), size limit, signature over the raw bytes, then parsing, then one
durable append of every event of the body. Only a 200 means anything was stored.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import falcon

from frontdesk.protocol.config import Settings
from frontdesk.protocol.events import WebhookError, parse_webhook_body, signature_ok
from frontdesk.protocol.roles import status_role
from frontdesk.store import Store, StoreError

from . import metrics as prom

log = logging.getLogger("frontdesk.receiver")

STATS_TTL_S = 1.0  # /metrics reads the store's queue counts at most this often
STATUS_FRESH_S = 10.0  # a dispatcher publishes every second: older than this, it is gone


def queued_seconds(environ: dict) -> float:
    """How long the server held this request before a worker thread took it.

    Waitress stamps its channel's `last_activity` when the request's last bytes arrive; time
    spent in its task queue counts against LINE's 2 s as much as our own work. Other WSGI
    servers give 0 (the budget then starts when the app sees the request).
    """
    channel = getattr(environ.get("waitress.client_disconnected"), "__self__", None)
    arrived = getattr(channel, "last_activity", None)
    if not isinstance(arrived, float):
        return 0.0
    return max(0.0, time.time() - arrived)


class _Rejected(Exception):
    """A webhook answered with an error: the log line gets `reason`, the client `public`
    (the same unless the reason holds server details such as file paths)."""

    def __init__(self, status: int, title: str, reason: str, public: str | None = None):
        super().__init__(reason)
        self.status, self.title, self.reason = status, title, reason
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


class Callback:
    """POST /callback: the LINE webhook."""

    def __init__(self, settings: Settings, store: Store, metrics: ReceiverMetrics):
        self._secret = settings.channel_secret.encode()
        self._max_body = settings.max_body_bytes
        self._budget_s = settings.ack_budget_s
        self._store = store
        self._metrics = metrics

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        now = time.monotonic()
        accepted = now - queued_seconds(req.env)
        fields = {"events": 0, "new": 0, "dup": 0}
        rejected = None
        try:
            self._accept(req, accepted, fields)
        except _Rejected as exc:
            rejected = exc
        status, reason = (rejected.status, rejected.reason) if rejected else (200, "")
        elapsed = time.monotonic() - accepted
        self._metrics.ack_seconds.observe(elapsed)
        level = logging.WARNING if status >= 500 else logging.INFO
        log.log(level, "status=%d events=%d new=%d dup=%d ms=%.1f%s", status, fields["events"],
                fields["new"], fields["dup"], elapsed * 1000, f" reason={reason!r}" if reason else "")
        if rejected:
            raise falcon.HTTPError(status, title=rejected.title, description=rejected.public)
        resp.data = b'{"status":"ok"}'

    def _accept(self, req: falcon.Request, accepted: float, fields: dict) -> None:
        deadline = accepted + self._budget_s
        if time.monotonic() >= deadline:
            raise _Rejected(503, "overloaded", "queued past the ack budget before a worker took it")
        length = req.content_length
        if length is not None and length > self._max_body:
            raise _Rejected(413, "body too large", f"body of {length} bytes exceeds the limit of "
                                                   f"{self._max_body}")
        raw = req.bounded_stream.read(self._max_body + 1)
        if len(raw) > self._max_body:
            raise _Rejected(413, "body too large", f"body exceeds the limit of {self._max_body} bytes")
        signature = req.get_header("X-Line-Signature")
        if not signature:
            raise _Rejected(401, "missing signature", "the x-line-signature header is missing")
        if not signature_ok(self._secret, raw, signature):
            raise _Rejected(401, "bad signature", "x-line-signature does not match the body")
        try:
            destination, events = parse_webhook_body(raw)
        except WebhookError as exc:
            raise _Rejected(400, "malformed webhook body", str(exc)) from None
        fields["events"] = len(events)
        if not events:
            return  # LINE's connectivity check: nothing to store
        received_at_ms = int((time.time() - (time.monotonic() - accepted)) * 1000)
        self._metrics.append_started()
        started = time.monotonic()
        try:
            result = self._store.append(destination, events, received_at_ms, deadline=deadline)
        except StoreError as exc:
            raise _Rejected(503, "store unavailable", f"store unavailable: {exc}",
                            "the events cannot be stored now; send them again later") from None
        finally:
            self._metrics.append_finished(time.monotonic() - started)
        fields["new"], fields["dup"] = len(result.new), len(result.duplicates)
        self._metrics.events_stored.inc(amount=len(result.new))
        self._metrics.duplicates.inc(amount=len(result.duplicates))


class Health:
    """GET /healthz: 200 when the store can take writes, 503 (with the reason) otherwise."""

    def __init__(self, store: Store):
        self._store = store

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        try:
            self._store.health()
        except StoreError as exc:
            resp.status = falcon.HTTP_503
            resp.media = {"status": "unavailable", "reason": str(exc)}
            return
        resp.media = {"status": "ok"}


class Metrics:
    """GET /metrics in the Prometheus text format."""

    def __init__(self, registry: prom.Registry):
        self._registry = registry

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = prom.CONTENT_TYPE
        resp.text = self._registry.render()


class _CountResponses:
    """Counts every answer by status; logs wrong paths and methods (a misconfigured webhook
    URL shows up here)."""

    def __init__(self, metrics: ReceiverMetrics):
        self._metrics = metrics

    def process_response(self, req, resp, resource, req_succeeded) -> None:
        self._metrics.requests.inc(req.uri_template or "unmatched", str(resp.status_code))
        if resp.status_code in (404, 405):
            log.info("status=%d method=%s path=%r", resp.status_code, req.method, req.path)


def create_app(settings: Settings, store: Store,
               server_queue_depth: Callable[[], float | None] = lambda: None) -> falcon.App:
    """The receiver app. `server_queue_depth` reports requests waiting for a worker thread."""
    metrics = ReceiverMetrics(prom.Registry())
    stats = _CachedStats(store)
    metrics.registry.gauge("frontdesk_store_pending_events",
                           "Events stored and not yet delivered (read at most once a second).",
                           lambda: stats.get("pending"))
    metrics.registry.gauge("frontdesk_store_in_flight_events",
                           "Events leased to a dispatcher (read at most once a second).",
                           lambda: stats.get("in_flight"))
    metrics.registry.gauge("frontdesk_store_dead_events", "Dead letters (read at most once a second).",
                           lambda: stats.get("dead"))
    metrics.registry.gauge("frontdesk_receiver_server_queue_depth",
                           "Requests waiting for a free worker thread.", server_queue_depth)
    _pool_gauges(metrics.registry, stats)
    app = falcon.App(middleware=[_CountResponses(metrics)])
    app.add_route(settings.callback_path, Callback(settings, store, metrics))
    app.add_route("/healthz", Health(store))
    app.add_route("/metrics", Metrics(metrics.registry))
    return app
