"""The comparison point for `frontdesk bench --suite compare`: the official SDK's echo pattern.

This is what line-bot-sdk-python's echo example does — check the signature and call the reply
API *inside* the webhook request — served the same way as the receiver (falcon + waitress,
same thread count), pointed at the sandbox. It exists only to be measured side by side with
frontdesk; it needs the optional `baseline` extra (`pip install '.[baseline]'`).

Run: python -m sandbox.baseline  (settings from the environment, like every frontdesk process)
"""
from __future__ import annotations

import logging
import signal
import sys

import falcon
import waitress

from protocol import config

log = logging.getLogger("frontdesk.baseline")


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
    settings = config.load()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    host, _, port = settings.listen.rpartition(":")
    server = waitress.create_server(create_app(settings), host=host, port=int(port),
                                    threads=settings.receiver_threads,
                                    connection_limit=settings.receiver_connection_limit,
                                    backlog=settings.receiver_backlog)
    signal.signal(signal.SIGTERM, lambda *_: server.close())
    log.info("baseline listening on %s", settings.listen)
    try:
        server.run()
    except (KeyboardInterrupt, OSError):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
