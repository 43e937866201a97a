"""The channel itself: bot info, the webhook endpoint (get, set, test), link tokens for account
linking, read receipts and the loading animation.

The webhook test really posts: an empty, signed webhook body (`{"destination", "events": []}`,
what LINE's verify button sends) to the endpoint, and reports what came back. LINE accepts only
HTTPS endpoints; the sandbox also accepts plain HTTP to a loopback host, where a local receiver
listens.
"""
from __future__ import annotations

import base64
import os
import threading
import time
import urllib.parse

from .api import USER_ID_PATTERN, Endpoint, LineError, Validator, iso_time, read_json, send_json
from .webhooks import BOT_USER_ID, post_webhook

MAX_ENDPOINT_LENGTH = 500
WEBHOOK_TEST_TIMEOUT_S = 2.0      # LINE counts a slower answer as a timeout
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class ChannelSettings:
    """The webhook endpoint (the receiver's URL of this machine until set) and whether it is active."""

    def __init__(self, webhook_endpoint: str = ""):
        self.lock = threading.Lock()
        self.webhook_endpoint = webhook_endpoint
        self.webhook_active = bool(webhook_endpoint)


def _check_endpoint(check: Validator, value, required: bool) -> None:
    if value is None and not required:
        return
    if not isinstance(value, str) or not value:
        check.fail("endpoint", "must be specified")
        return
    if len(value) > MAX_ENDPOINT_LENGTH:
        check.fail("endpoint", f"Length must be between 0 and {MAX_ENDPOINT_LENGTH}")
        return
    parts = urllib.parse.urlsplit(value)
    try:
        parts.port    # raises for a port that is not a number in 0-65535
    except ValueError:
        check.fail("endpoint", "has an invalid port")
        return
    loopback_http = parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS
    if not (parts.scheme == "https" or loopback_http) or not parts.hostname:
        check.fail("endpoint", "must be an HTTPS URL (the sandbox also takes http:// to a loopback host)")


class BotInfo(Endpoint):
    def on_get(self, req, resp):
        send_json(resp, 200, {"userId": BOT_USER_ID, "basicId": "@frontdesk", "displayName": "frontdesk sandbox",
                              "chatMode": "bot", "markAsReadMode": "auto"})


class WebhookEndpoint(Endpoint):
    def on_get(self, req, resp):
        settings = self.state.channel
        with settings.lock:
            send_json(resp, 200, {"endpoint": settings.webhook_endpoint, "active": settings.webhook_active})

    def on_put(self, req, resp):
        body = read_json(req)
        check = Validator()
        _check_endpoint(check, body.get("endpoint"), required=True)
        check.raise_if_failed()
        settings = self.state.channel
        with settings.lock:
            settings.webhook_endpoint, settings.webhook_active = body["endpoint"], True
        send_json(resp, 200, {})


class WebhookTest(Endpoint):
    """POST /v2/bot/channel/webhook/test: sends the verify request to `endpoint` or the one set."""
    endpoint = "webhook_test"

    def on_post(self, req, resp):
        body = read_json(req) if req.content_length else {}
        check = Validator()
        _check_endpoint(check, body.get("endpoint"), required=False)
        check.raise_if_failed()
        with self.state.channel.lock:
            url = body.get("endpoint") or self.state.channel.webhook_endpoint
        if not url:
            raise LineError(400, "The webhook endpoint is not set")
        payload = ('{"destination":"%s","events":[]}' % BOT_USER_ID).encode()
        started = time.time() * 1000
        status = post_webhook(url, self.state.channel_secret, payload, timeout=WEBHOOK_TEST_TIMEOUT_S)
        if status == 0:
            reason, detail = "COULD_NOT_CONNECT", "no answer (connection failed or timed out)"
        elif status == 200:
            reason, detail = "OK", "200"
        else:
            reason, detail = "ERROR_STATUS_CODE", f"The webhook returned an HTTP status code other than 200.({status})"
        send_json(resp, 200, {"success": status == 200, "timestamp": iso_time(started), "statusCode": status,
                              "reason": reason, "detail": detail})


class LinkToken(Endpoint):
    """POST /v2/bot/user/{userId}/linkToken: a one-time token for account linking."""

    def on_post(self, req, resp, user_id):
        if not USER_ID_PATTERN.fullmatch(user_id):
            raise LineError(400, "The request has 1 error(s)",
                            [{"message": "must be a user ID (U followed by 32 hex digits)", "property": "userId"}])
        token = base64.urlsafe_b64encode(os.urandom(24)).decode("ascii")
        send_json(resp, 200, {"linkToken": token})


class MarkAsRead(Endpoint):
    """POST /v2/bot/message/markAsRead {"chat": {"userId"}}."""

    def on_post(self, req, resp):
        body = read_json(req)
        check = Validator()
        chat = body.get("chat")
        if not isinstance(chat, dict):
            check.fail("chat", "must be specified")
        elif not isinstance(chat.get("userId"), str) or not USER_ID_PATTERN.fullmatch(chat["userId"]):
            check.fail("chat.userId", "must be a user ID (U followed by 32 hex digits)")
        check.raise_if_failed()
        send_json(resp, 200, {})


class MarkAsReadByToken(Endpoint):
    """POST /v2/bot/chat/markAsRead {"markAsReadToken"} (the token comes with a message event)."""

    def on_post(self, req, resp):
        body = read_json(req)
        check = Validator()
        check.string(body, "markAsReadToken", "markAsReadToken")
        check.raise_if_failed()
        send_json(resp, 200, {})


class LoadingAnimation(Endpoint):
    def on_post(self, req, resp):
        body = read_json(req)
        check = Validator()
        value = body.get("chatId")
        if not isinstance(value, str) or not USER_ID_PATTERN.fullmatch(value):
            check.fail("chatId", "must be a user ID (U followed by 32 hex digits)")
        seconds = body.get("loadingSeconds", 20)
        if isinstance(seconds, bool) or not isinstance(seconds, int) or not 5 <= seconds <= 60 or seconds % 5:
            check.fail("loadingSeconds", "must be a multiple of 5 between 5 and 60")
        check.raise_if_failed()
        self.state.history.add_loading(value, seconds)   # the chat page shows the animation
        send_json(resp, 202, {})


ROUTES = {
    "/v2/bot/info": BotInfo,
    "/v2/bot/channel/webhook/endpoint": WebhookEndpoint,
    "/v2/bot/channel/webhook/test": WebhookTest,
    "/v2/bot/user/{user_id}/linkToken": LinkToken,
    "/v2/bot/message/markAsRead": MarkAsRead,
    "/v2/bot/chat/markAsRead": MarkAsReadByToken,
    "/v2/bot/chat/loading/start": LoadingAnimation,
}
