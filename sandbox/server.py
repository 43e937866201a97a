"""`frontdesk sandbox`: the LINE Messaging API emulator served by waitress, until SIGTERM or SIGINT.

Dropped connections (sandbox_drop_rate) need the server's help: a WSGI app cannot close its
connection without answering. The app marks the request in its environ (app.DROP_CONNECTION);
the task below then writes nothing and closes the connection, so the client sees the socket
closed with no response at all, as when a proxy or LINE's front end fails mid-call.
"""
from __future__ import annotations

import logging

import waitress
from waitress.server import BaseWSGIServer
from waitress.task import WSGITask

from frontdesk.protocol.config import SANDBOX_ACCESS_TOKEN, SANDBOX_CHANNEL_SECRET, Settings, sandbox_credentials
from frontdesk.protocol.serving import QuietChannel, stop_waitress_on_signals

from .app import DROP_CONNECTION, create_app

log = logging.getLogger("frontdesk.sandbox")


class _DroppingTask(WSGITask):
    """A request task that sends nothing, and closes the connection, when the app asked for a drop."""

    def write(self, data):
        if self.environ is not None and self.environ.get(DROP_CONNECTION):
            self.wrote_header = True      # so waitress sends neither headers nor an error page
            self.close_on_finish = True   # the channel closes the socket once this task ends
            return
        super().write(data)


class _SandboxChannel(QuietChannel):
    task_class = _DroppingTask


def main(settings: Settings) -> int:
    secret, token = sandbox_credentials(settings)
    if not settings.channel_access_token:
        print(f"sandbox: no channel access token configured; accepting the dev token {SANDBOX_ACCESS_TOKEN!r} "
              f"(Authorization: Bearer {SANDBOX_ACCESS_TOKEN})", flush=True)
    if not settings.channel_secret:
        print(f"sandbox: no channel secret configured; reply tokens are sealed with the dev secret "
              f"{SANDBOX_CHANNEL_SECRET!r}", flush=True)
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    socket_map: dict = {}
    try:
        server = waitress.create_server(create_app(settings, secret, token), map=socket_map,
                                        listen=settings.sandbox_listen,
                                        threads=settings.sandbox_threads, ident="frontdesk-sandbox",
                                        connection_limit=1000, backlog=2048)
    except (OSError, ValueError) as exc:
        log.error("event=listen_failed address=%s reason=%s", settings.sandbox_listen,
                  getattr(exc, "strerror", None) or exc)
        return 1
    for dispatcher in socket_map.values():
        if isinstance(dispatcher, BaseWSGIServer):
            dispatcher.channel_class = _SandboxChannel

    stop_waitress_on_signals(log)
    log.info("event=listening address=%s threads=%d latency_ms=%g fault_rate=%g drop_rate=%g",
             settings.sandbox_listen, settings.sandbox_threads, settings.sandbox_latency_ms,
             settings.sandbox_fault_rate, settings.sandbox_drop_rate)
    print(f"sandbox: LINE Messaging API emulator on http://{settings.sandbox_listen} "
          f"(deliveries: http://{settings.sandbox_listen}/sandbox/deliveries)", flush=True)
    server.run()
    server.close()
    log.info("event=stopped")
    return 0
