"""The webhook receiver's routes: verify, validate, store durably, then answer.

The order is the contract (docs/receiver.md, "What each request gets"): the route (path, then
method), then the webhook's checks (receiver/intake.py: size, signature over the raw bytes, JSON,
events), then one durable append of every event of the body, which must start within the ack
budget counted from the request's arrival. Only a 200 means anything was stored. The routes run
on the receiver's event loop (protocol/http_server.py); the append is handed to the store's writer
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

from frontdesk.protocol.coalesce import WorkRate
from frontdesk.protocol.config import Settings
from frontdesk.protocol.http_server import Request, Response, error_body
from frontdesk.protocol.prometheus import CONTENT_TYPE as METRICS_TYPE
from frontdesk.store import Store, StoreError, StoreGone

from .intake import Rejected, check_webhook
from .metrics import CachedStats, ReceiverMetrics

log = logging.getLogger("frontdesk.receiver")


class Receiver:
    """The receiver's routes on its event loop: POST <callback_path>, GET /healthz, GET /metrics.

    It owns the appends in progress: each webhook that passed its checks (receiver/intake.py) is
    handed to the store's group-commit writer (`append_nowait`) and answered on the loop when the
    writer says it is durable, or with 503 when it could not start within the ack budget. `busy`
    reads the HTTP server's count of requests not answered yet; `fail(reason)` stops the receiver
    (exit status 1) for its supervisor to restart it. `webhooks` counts the webhooks taken on (the
    loop's coalescing pauses pay only while they come often: protocol/coalesce.py)."""

    def __init__(self, settings: Settings, store: Store, busy: Callable[[], int | None] = lambda: None,
                 fail: Callable[[str], None] = lambda reason: None, webhooks: WorkRate | None = None):
        self._secret = settings.channel_secret.encode()
        self._webhooks = webhooks
        self._callback_path = settings.callback_path
        self._max_body_bytes = settings.max_body_bytes
        self._budget_s = settings.ack_budget_s
        self._store = store
        self._fail = fail
        self.metrics = ReceiverMetrics(CachedStats(store), busy)
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
            answer = Response(200, self.metrics.registry.render().encode(), METRICS_TYPE) \
                if request.method == "GET" else _method_not_allowed(request)
        else:
            log.info("event=request_refused status=404 method=%s path=%r", request.method, request.path[:200])
            route, answer = "unmatched", Response(404, error_body(404, f"no route {request.path[:200]!r}"))
        if isinstance(answer, Response):
            self.metrics.requests.inc(route, str(answer.status))
        else:
            answer.add_done_callback(lambda done: self.metrics.requests.inc(route, str(done.result().status)))
        return answer

    # --- POST /callback ----------------------------------------------------------------------
    def _callback(self, request: Request) -> Response | asyncio.Future:
        try:
            destination, events = check_webhook(request, self._secret, self._max_body_bytes)
        except Rejected as rejected:
            return self._answer(request, rejected.status, 0, 0, 0, rejected)
        if not events:   # LINE's connectivity check: nothing to store
            return self._answer(request, 200, 0, 0, 0)
        if self._webhooks is not None:
            self._webhooks.add(1)
        deadline = request.arrived + self._budget_s
        if time.monotonic() >= deadline:
            return self._answer(request, 503, len(events), 0, 0,
                                Rejected(503, "queued past the ack budget before it could be stored"))
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
                rejected: Rejected | None = None) -> Response:
        elapsed = time.monotonic() - request.arrived
        self.metrics.ack_seconds.observe(elapsed)
        # a stored webhook at DEBUG: one line each cost ~30 µs of CPU (10 % of the receiver's at
        # one event per webhook; docs/benchmarks.md); /metrics counts them
        level = logging.WARNING if status >= 500 else logging.DEBUG if status == 200 else logging.INFO
        log.log(level, "event=webhook_answered status=%d events=%d new=%d dup=%d ms=%.1f%s", status, events,
                new, dup, elapsed * 1000, f" reason={rejected.reason!r}" if rejected else "")
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


def _store_rejection(exc: Exception) -> Rejected:
    return Rejected(503, f"store unavailable: {exc}", "the events cannot be stored now; send them again later")


def _method_not_allowed(request: Request) -> Response:
    log.info("event=request_refused status=405 method=%s path=%r", request.method, request.path[:200])
    return Response(405, error_body(405, f"{request.method} is not allowed here"))
