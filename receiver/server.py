"""`frontdesk receiver`: the webhook app served by waitress, until SIGTERM or SIGINT.

Waitress serves plain HTTP only (it has no TLS support); run it behind a TLS-terminating
proxy (docs/receiver.md).
"""
from __future__ import annotations

import logging
import queue
import signal
import time
from logging.handlers import QueueHandler, QueueListener

import waitress
from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer

from frontdesk.protocol.config import Settings
from frontdesk.protocol.serving import QuietChannel, stop_waitress_on_signals
from frontdesk.store import run_with_store

from .app import create_app

log = logging.getLogger("frontdesk.receiver")

FLUSH_TIMEOUT_S = 2.0  # at shutdown, time allowed to send answers already computed


def waitress_options(settings: Settings) -> dict:
    """Waitress adjustments from the receiver_* knobs (the bench serves its bare app with these too)."""
    return {
        "listen": settings.listen,
        "threads": settings.receiver_threads,
        "connection_limit": settings.receiver_connection_limit,
        "backlog": settings.receiver_backlog,
        "channel_timeout": settings.receiver_channel_timeout_s,
        # Waitress buffers a whole body before the app runs; this caps what it buffers, while
        # the app enforces the exact max_body_bytes (with a log line and a JSON error).
        "max_request_body_size": 2 * settings.max_body_bytes + 1,
        "ident": "frontdesk",
    }


def serve(app_factory, settings: Settings) -> None:
    """Serve `app_factory(queue_depth)` until SIGTERM/SIGINT, then finish in-flight requests.

    `queue_depth()` tells the app how many requests wait for a free worker thread.
    """
    # Under load waitress logs "Task queue depth is N" for every queued request.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    socket_map: dict = {}
    server = None

    def queue_depth() -> int | None:
        return len(server.task_dispatcher.queue) if server is not None else None

    server = waitress.create_server(app_factory(queue_depth), map=socket_map, **waitress_options(settings))
    for dispatcher in socket_map.values():
        if isinstance(dispatcher, BaseWSGIServer):
            dispatcher.channel_class = QuietChannel

    previous = stop_waitress_on_signals(log)
    log_writer = _log_through_queue()
    log.info("event=listening address=%s threads=%d", settings.listen, settings.receiver_threads)
    try:
        server.run()
        _flush_answers(socket_map)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _stop_log_writer(log_writer)


def _log_through_queue() -> QueueListener:
    """Let one thread write the log: request threads only enqueue their line.

    A write to the log file inside each request releases and re-takes the GIL, and every
    worker then queues behind every other (measured on the 2-core box with the store taken
    out: ~130 req/s with direct writes, ~1,600 through the queue).
    """
    root = logging.getLogger()
    handlers = root.handlers[:]
    records: queue.SimpleQueue = queue.SimpleQueue()
    for handler in handlers:
        root.removeHandler(handler)
    root.addHandler(QueueHandler(records))
    listener = QueueListener(records, *handlers, respect_handler_level=True)
    listener.start()
    return listener


def _stop_log_writer(listener: QueueListener) -> None:
    """Write what is queued, then log directly again."""
    listener.stop()
    root = logging.getLogger()
    for handler in root.handlers[:]:
        if isinstance(handler, QueueHandler):
            root.removeHandler(handler)
    for handler in listener.handlers:
        root.addHandler(handler)


def _flush_answers(socket_map: dict) -> None:
    """Send the answers of requests finished during shutdown: their events are already stored."""
    for dispatcher in list(socket_map.values()):
        if not isinstance(dispatcher, HTTPChannel):
            dispatcher.close()  # listening sockets and the wake-up trigger; the workers are done
    deadline = time.monotonic() + FLUSH_TIMEOUT_S
    while time.monotonic() < deadline and any(
            channel.total_outbufs_len for channel in list(socket_map.values())):
        wasyncore.loop(timeout=0.05, map=socket_map, count=1)
    wasyncore.close_all(socket_map)


def main(settings: Settings) -> int:
    settings.require_secrets("channel_secret")

    def receive(store) -> int:
        try:
            serve(lambda queue_depth: create_app(settings, store, queue_depth), settings)
        except OSError as exc:
            log.error("event=listen_failed address=%s reason=%s", settings.listen, exc.strerror or exc)
            return 1
        log.info("event=stopped")
        return 0

    return run_with_store(settings.store, log, receive, append_linger_s=settings.append_linger_ms / 1000)
