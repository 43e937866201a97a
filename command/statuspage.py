"""The status page: an admin listener (admin_listen, loopback by default) apart from the webhook port.

It serves `/` (one self-contained HTML page: tables and small SVG charts of the last minutes, no
CDN), `/status.json` (the view of command/observe.py, the advice, the charts' history),
`/metrics` (Prometheus text: queue, handler pools, rate limiters) and `/healthz`.

It is a process of its own (`python -m frontdesk.statuspage`, started by `frontdesk run` as a
supervised service, or alone on any machine with `frontdesk statuspage`): it reads only the
store, so it shows every dispatcher on every machine; it stays up when a dispatcher crashes (when
the page matters most); and neither the supervisor (which does no work, so it has nothing to lose)
nor the dispatcher's loop (the hot path) takes on HTTP serving. Its cost: one process and one
store read a second (event counts and status documents, a few rows), done by one sampler thread;
requests only read the last result under a lock.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Callable

from frontdesk.protocol.process import HANDLING_BUCKETS_S
from frontdesk.protocol.process import status_role
from frontdesk.protocol.prometheus import CONTENT_TYPE as METRICS_TYPE, Exposition
from frontdesk.store import StoreError, StoreGone, run_with_store

from .advice import advise
from .observe import STALE_AFTER_S, Observer, Sample
from .quota_view import quota_metrics

log = logging.getLogger("frontdesk.statuspage")

SAMPLE_INTERVAL_S = 1.0
HISTORY_S = 600.0           # the charts show the last ten minutes
HEALTHY_SAMPLE_AGE_S = 5.0  # /healthz: 503 once the store has not answered for this long


def history_point(view: dict) -> dict:
    """The few figures each chart needs, for one moment."""
    queue = view["queue"]
    calls: dict[str, float] = {}
    for dispatcher in view["dispatchers"]:
        for endpoint in dispatcher["ratelimiter"]["endpoints"]:
            calls[endpoint["endpoint"]] = round(calls.get(endpoint["endpoint"], 0) + endpoint["calls_per_s"], 2)
    e2e = [d["e2e_p99_ms"] for d in view["dispatchers"] if d["e2e_p99_ms"] is not None]
    e2e50 = [d["e2e_p50_ms"] for d in view["dispatchers"] if d["e2e_p50_ms"] is not None]
    return {"t": round(view["at"], 1), "pending": queue.get("pending", 0),
            "oldest_s": queue.get("oldest_pending_s", 0), "arrivals": queue.get("arrivals_per_s"),
            "completions": queue.get("completions_per_s"), "e2e_p50_ms": max(e2e50, default=None),
            "e2e_p99_ms": max(e2e, default=None), "calls": calls}


class Sampler:
    """One thread reads the store every second; requests read its last result.

    Each read first asks the store whether the file it opened is still the one at its path: after
    a `rm` or a restore it would go on showing a file nobody writes (or fail on it), so it calls
    `gone(reason)`, for the page to stop and be started again on the file now at the path, as the
    receiver and the dispatcher are (docs/store.md)."""

    def __init__(self, store, gone: Callable[[str], None] = lambda reason: None,
                 clock: Callable[[], float] = time.monotonic):
        self.store = store
        self.gone = gone
        self.clock = clock
        self.observer = Observer(store, keep_s=2 * STALE_AFTER_S)
        self.lock = threading.Lock()
        self.history: list[dict] = []
        self.view: dict | None = None
        self.sample: Sample | None = None
        self.error: str | None = None
        self.sampled_at = 0.0      # monotonic time of the last successful read
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="statuspage-sampler", daemon=True)

    def start(self) -> None:
        self.read_once()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            self.read_once()

    def read_once(self) -> None:
        try:
            self.store.health()
        except StoreGone as exc:
            self.gone(str(exc))
            return
        except StoreError:
            pass   # a store that cannot take writes can still be read: the sample says what it can
        try:
            sample = self.observer.sample()
            view = self.observer.view()
        except StoreError as exc:
            with self.lock:
                if self.error != str(exc):
                    log.error("event=store_call_failed op=sample error=%s", exc)
                self.error = str(exc)
            return
        point = history_point(view)
        with self.lock:
            self.sample, self.view, self.error = sample, view, None
            self.sampled_at = self.clock()
            self.history.append(point)
            while self.history and point["t"] - self.history[0]["t"] > HISTORY_S:
                self.history.pop(0)

    def status_json(self) -> dict:
        with self.lock:
            return {"view": self.view, "advice": advise(self.view) if self.view else [],
                    "history": list(self.history), "error": self.error}

    def health(self) -> tuple[int, dict]:
        with self.lock:
            age = self.clock() - self.sampled_at
            if self.view is None or age > HEALTHY_SAMPLE_AGE_S:
                return 503, {"status": "unavailable", "reason": self.error or f"no store read for {age:.0f} s"}
            return 200, {"status": "ok"}

    def metrics(self) -> str:
        with self.lock:
            sample = self.sample
        return metrics_text(sample) if sample is not None else ""


# --- /metrics ----------------------------------------------------------------------------------

def metrics_text(sample: Sample) -> str:
    """Everything the store and the published statuses say, as Prometheus metrics. Counters are
    the processes' own cumulative counts (they restart at zero with a process: Prometheus'
    rate() handles that); gauges are the values of the last read."""
    out = Exposition()
    events = sample.events
    out.family("frontdesk_store_events", "gauge", "Events in the store by state (read once a second).",
               [({"state": state}, events.get(state)) for state in ("pending", "in_flight", "done", "dead")])
    out.family("frontdesk_store_oldest_pending_seconds", "gauge",
               "Age of the oldest event not yet delivered (0 when none waits).", [({}, events.get("oldest_pending_s"))])
    dispatchers = {name: doc for name, doc in sorted(sample.statuses.items()) if status_role(name) == "dispatcher"
                   and sample.at - doc.get("updated_at", 0) <= STALE_AFTER_S}
    handlers = [({"dispatcher": name, "handler": h.get("name", "?")}, h) for name, doc in dispatchers.items()
                for h in doc.get("handlers", []) if isinstance(h, dict) and h.get("pid")]
    out.family("frontdesk_dispatcher_up", "gauge", "1 per dispatcher publishing its status.",
               [({"dispatcher": name}, 1) for name in dispatchers])
    out.family("frontdesk_handlers_target", "gauge", "Handler processes a dispatcher aims for.",
               [({"dispatcher": name}, doc.get("handlers_target")) for name, doc in dispatchers.items()])
    out.family("frontdesk_dispatcher_degraded", "gauge", "1 while a dispatcher's handler pool is degraded.",
               [({"dispatcher": name}, 1 if doc.get("degraded") else 0) for name, doc in dispatchers.items()])
    out.family("frontdesk_handler_events_total", "counter", "Events answered (ack or nack) by a handler process.",
               [(labels, h.get("handled")) for labels, h in handlers])
    out.family("frontdesk_handler_busy_seconds_total", "counter",
               "Time a handler process had at least one event in flight.", [(labels, h.get("busy_s")) for labels, h in handlers])
    out.family("frontdesk_handler_in_flight", "gauge", "Events in flight on a handler process.",
               [(labels, h.get("in_flight")) for labels, h in handlers])
    out.family("frontdesk_handler_restarts_total", "counter", "Restarts after crashes of a handler slot.",
               [(labels, h.get("restarts")) for labels, h in handlers])
    out.histogram("frontdesk_handler_handling_seconds", "Event sent to a handler -> its answer, seconds.",
                  HANDLING_BUCKETS_S,
                  [(labels, h["handling_counts"], h.get("handling_s", 0.0)) for labels, h in handlers
                   if isinstance(h.get("handling_counts"), list)])
    out.histogram("frontdesk_event_e2e_seconds", "Webhook received -> event acked by a handler, seconds.",
                  HANDLING_BUCKETS_S,
                  [({"dispatcher": name}, doc["e2e_counts"], doc.get("e2e_s", 0.0)) for name, doc in dispatchers.items()
                   if isinstance(doc.get("e2e_counts"), list)])
    limiters = {name: (doc.get("ratelimiter") or {}) for name, doc in dispatchers.items()}
    calls = [({"dispatcher": name, "endpoint": endpoint, "status": status}, count)
             for name, limiter in limiters.items()
             for endpoint, by_status in sorted(((limiter.get("stats") or {}).get("calls") or {}).items())
             for status, count in sorted(by_status.items())]
    out.family("frontdesk_api_calls_total", "counter", "LINE API requests by endpoint and HTTP status "
               "(0: no answer).", calls)
    out.family("frontdesk_api_limit_per_second", "gauge", "The rate limiter's limit per endpoint.",
               [({"dispatcher": name, "endpoint": endpoint}, limit) for name, limiter in limiters.items()
                for endpoint, limit in sorted((limiter.get("limits_per_s") or {}).items())])
    out.family("frontdesk_api_queued_calls", "gauge", "Calls waiting for their endpoint's bucket.",
               [({"dispatcher": name, "endpoint": endpoint}, queue.get("queued")) for name, limiter in limiters.items()
                for endpoint, queue in sorted(((limiter.get("stats") or {}).get("queues") or {}).items())])
    out.family("frontdesk_api_batches_total", "counter", "Pushes merged into multicasts (batches sent).",
               [({"dispatcher": name}, (limiter.get("stats") or {}).get("batches", 0)) for name, limiter in limiters.items()])
    out.family("frontdesk_ratelimiter_restarts_total", "counter", "Rate limiter restarts after crashes.",
               [({"dispatcher": name}, limiter.get("restarts", 0)) for name, limiter in limiters.items()])
    quota_metrics(out, {name: (limiter.get("stats") or {}).get("quota") for name, limiter in limiters.items()})
    return out.text()


# --- HTTP ----------------------------------------------------------------------------------------

def page_html() -> bytes:
    return resources.files("frontdesk").joinpath("statuspage.html").read_bytes()


class _Handler(BaseHTTPRequestHandler):
    """The page's four routes, each answered from the sampler's last read (never from the store)."""
    server_version = "frontdesk-statuspage"
    sampler: Sampler       # set on the subclass made per server

    def do_GET(self) -> None:   # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0]
        if path == "/":
            self._send(200, page_html(), "text/html; charset=utf-8")
        elif path == "/status.json":
            self._send(200, json.dumps(self.sampler.status_json(), default=str).encode(), "application/json")
        elif path == "/metrics":
            self._send(200, self.sampler.metrics().encode(), METRICS_TYPE)
        elif path == "/healthz":
            status, body = self.sampler.health()
            self._send(status, json.dumps(body).encode(), "application/json")
        else:
            self._send(404, json.dumps({"error": f"no route {path[:200]!r}; try /, /status.json, "
                                                 "/metrics, /healthz"}).encode(), "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args) -> None:   # requests are not worth a log line each
        log.debug("event=request_served line=%r", format % args)


def serve(server: ThreadingHTTPServer, store) -> int:
    """Answer requests from the sampler's last read of the store, until TERM/INT (exit status 0),
    or until the store's file is removed or replaced (1: for the supervisor to start it again)."""
    gone: list[str] = []

    def store_gone(reason: str) -> None:
        if not gone:
            gone.append(reason)
            log.critical("event=store_file_gone reason=%s action=exit_for_restart", reason)
            # shutdown() waits for serve_forever() to end: not on the thread that runs it
            threading.Thread(target=server.shutdown, name="statuspage-stop", daemon=True).start()

    sampler = Sampler(store, store_gone)
    server.RequestHandlerClass = type("StatusPageHandler", (_Handler,), {"sampler": sampler})
    sampler.start()
    host, port = server.server_address[:2]
    log.info("event=statuspage_listening url=http://%s:%d/", host, port)
    try:
        server.serve_forever()
    finally:
        sampler.stop()
    return 1 if gone else 0


def main(settings) -> int:
    """`frontdesk statuspage` / `python -m frontdesk.statuspage`: bind first (a taken address
    fails at once, before the store is touched), then serve."""
    host, _, port = settings.admin_listen.rpartition(":")
    if not host or not port.isdigit():
        log.error("event=admin_listen_invalid value=%r expected=HOST:PORT", settings.admin_listen)
        return 2
    try:
        server = ThreadingHTTPServer((host, int(port)), _Handler)
    except OSError as exc:
        log.error("event=listen_failed address=%s error=%s", settings.admin_listen, exc.strerror or exc)
        return 2
    server.daemon_threads = True
    try:
        return run_with_store(settings.store, log, lambda store: serve(server, store))
    finally:
        server.server_close()


if __name__ == "__main__":
    import signal
    import sys

    from frontdesk.protocol.process import run_role

    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    sys.exit(run_role("statuspage", main))
