"""`frontdesk receiver`: the webhook routes (receiver/app.py) on the receiver's own HTTP server
(protocol/http_server.py), one asyncio event loop, until SIGTERM or SIGINT.

It serves plain HTTP only; run it behind a TLS-terminating proxy (docs/receiver.md). A first
SIGTERM or SIGINT stops accepting, answers every request already read (their events are being
stored), and exits 0; a second one exits at once.
"""
from __future__ import annotations

import asyncio
import logging
import queue
from logging.handlers import QueueHandler, QueueListener

from frontdesk.protocol import coalesce, http_server
from frontdesk.protocol.config import Settings
from frontdesk.protocol.http_server import Limits, Server
from frontdesk.store import run_with_store

from .app import Receiver

log = logging.getLogger("frontdesk.receiver")

FLUSH_TIMEOUT_S = 2.0  # at shutdown, longest wait for the answers of requests already read


def limits(settings: Settings) -> Limits:
    return Limits(settings.max_body_bytes, settings.receiver_request_timeout_s,
                  settings.receiver_idle_timeout_s, settings.receiver_connection_limit)


async def serve(settings: Settings, handler_factory) -> str | None:
    """Serve `handler_factory(busy, fail)` on settings.listen until SIGTERM/SIGINT or until the
    handler calls `fail(reason)`, then finish the requests already read. `busy()` counts the
    requests read and not answered yet. Returns the failure's reason, or None after a signal."""
    stopped = asyncio.get_running_loop().create_future()

    def fail(reason: str) -> None:
        if not stopped.done():
            stopped.set_result(reason)

    server: Server | None = None
    server = Server(handler_factory(lambda: server.busy if server is not None else None, fail),
                    limits(settings), log)
    return await http_server.serve(server, settings.listen, settings.receiver_backlog,
                                   settings.ack_budget_s + FLUSH_TIMEOUT_S, stopped)


def main(settings: Settings) -> int:
    settings.require_secrets("channel_secret")

    def receive(store) -> int:
        log_writer = _log_through_queue()
        try:
            webhooks = coalesce.WorkRate()   # whether the loop's pauses pay
            failure = coalesce.run(serve(settings, lambda busy, fail: Receiver(settings, store, busy, fail, webhooks)),
                                   settings.loop_coalesce_ms / 1000, webhooks)
        except OSError as exc:
            log.error("event=listen_failed address=%s reason=%s", settings.listen, exc.strerror or exc)
            return 1
        finally:
            _stop_log_writer(log_writer)
        if failure:
            log.critical("event=stopped_on_failure reason=%s", failure)
            return 1
        log.info("event=stopped")
        return 0

    return run_with_store(settings.store, log, receive, append_linger_s=settings.append_linger_ms / 1000)


def _log_through_queue() -> QueueListener:
    """Let one thread write the log: the loop only enqueues its line, so a slow log pipe (the
    terminal or `frontdesk run`'s output) never holds up webhooks."""
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
