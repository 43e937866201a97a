"""The comparison point for `frontdesk bench --suite compare`: the official SDK's echo pattern.

This is what line-bot-sdk-python's echo example does — check the signature and call the reply
API *inside* the webhook request, with a fresh `ApiClient` per event — served as such a WSGI app
is deployed: falcon on waitress with 16 worker threads (a reply blocks its thread for the API's
latency), pointed at the sandbox. Its replies echo the event's text and use the event's reply token, so
`frontdesk bench` matches them to events as it matches frontdesk's. It exists only to be
measured side by side with frontdesk; it needs the optional `baseline` extra
(`pip install '.[baseline]'`).

Run: python -m frontdesk.bench.baseline  (settings from the environment and ./frontdesk.toml, like
every frontdesk process: LINE_CHANNEL_SECRET, LINE_CHANNEL_ACCESS_TOKEN, FRONTDESK_LISTEN,
FRONTDESK_API_BASE)
"""
from __future__ import annotations

import logging
import sys

import falcon
import waitress
from waitress.server import BaseWSGIServer

from frontdesk.protocol import config
from .serving import QuietChannel, stop_waitress_on_signals

log = logging.getLogger("frontdesk.baseline")

SDK_MISSING = "the official line-bot-sdk is not installed: pip install '.[baseline]'"
THREADS = 16


def sdk_available() -> bool:
    try:
        import linebot.v3  # noqa: F401
    except ImportError:
        return False
    return True


def create_app(settings: config.Settings) -> falcon.App:
    from linebot.v3 import WebhookHandler
    from linebot.v3.exceptions import InvalidSignatureError
    from linebot.v3.messaging import ApiClient, Configuration, MessagingApi, ReplyMessageRequest, TextMessage
    from linebot.v3.webhooks import MessageEvent, TextMessageContent

    configuration = Configuration(host=settings.api_base, access_token=settings.channel_access_token)
    handler = WebhookHandler(settings.channel_secret)

    @handler.add(MessageEvent, message=TextMessageContent)
    def handle_message(event):
        with ApiClient(configuration) as api_client:
            MessagingApi(api_client).reply_message_with_http_info(
                ReplyMessageRequest(reply_token=event.reply_token,
                                    messages=[TextMessage(text=event.message.text)])
            )

    class Callback:
        """The SDK echo's webhook route: verify, parse and reply inside the request."""

        def on_post(self, req, resp):
            signature = req.get_header("X-Line-Signature") or ""
            body = req.bounded_stream.read().decode()
            try:
                handler.handle(body, signature)
            except InvalidSignatureError:
                raise falcon.HTTPBadRequest(title="invalid signature")
            resp.text = "OK"

    app = falcon.App()
    app.add_route(settings.callback_path, Callback())
    return app


def main() -> int:
    try:
        settings = config.load()
        settings.require_secrets("channel_secret", "channel_access_token")
    except config.ConfigError as exc:
        print(f"baseline: configuration error: {exc}", file=sys.stderr)
        return 2
    if not sdk_available():
        print(f"baseline: {SDK_MISSING}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s")
    try:
        socket_map: dict = {}
        server = waitress.create_server(create_app(settings), map=socket_map, listen=settings.listen,
                                        threads=THREADS, connection_limit=settings.receiver_connection_limit,
                                        backlog=settings.receiver_backlog, ident="sdk-echo")
        for dispatcher in socket_map.values():
            if isinstance(dispatcher, BaseWSGIServer):
                dispatcher.channel_class = QuietChannel
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        stop_waitress_on_signals(log)
        server.run()
    except OSError as exc:
        log.error("event=listen_failed address=%s reason=%s", settings.listen, exc.strerror or exc)
        return 1
    log.info("event=stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
