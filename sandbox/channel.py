"""The channel itself: bot info, the webhook endpoint (get, set, test), link tokens for account
linking, read receipts and the loading animation; and PUT /sandbox/channel, for what only the
LINE Developers Console and the LINE Official Account Manager change.

The webhook endpoint starts as `public_url`, else the local receiver's callback URL. Setting it
(PUT, as LINE's API does) leaves "Use webhook" (`active`) as it is: LINE's API cannot switch
that, the console does, and so does PUT /sandbox/channel here. The webhook test really posts: an
empty, signed webhook body (`{"destination", "events": []}`, what LINE's verify button sends) to
the endpoint, and reports what came back. LINE accepts only HTTPS endpoints; the sandbox also
accepts plain HTTP to a loopback host, where a local receiver listens.
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
INVALID_ENDPOINT = "Invalid webhook endpoint URL"
NO_ENDPOINT = "Webhook endpoint not found"


class ChannelSettings:
    """The webhook endpoint ("" while none is set) and whether webhooks are on ("Use webhook")."""

    def __init__(self, webhook_endpoint: str = ""):
        self.lock = threading.Lock()
        self.webhook_endpoint = webhook_endpoint
        self.webhook_active = bool(webhook_endpoint)
        self.marked_as_read: list[str] = []   # the markAsReadTokens used, in order (GET /sandbox/channel)


def _check_endpoint(body: dict, required: bool) -> None:
    """LINE's 400 "Invalid webhook endpoint URL", with a detail saying why."""
    check = Validator()
    _endpoint_rules(check, body.get("endpoint"), required)
    if check.details:
        raise LineError(400, INVALID_ENDPOINT, check.details)


def _endpoint_rules(check: Validator, value, required: bool) -> None:
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
            endpoint, active = settings.webhook_endpoint, settings.webhook_active
        if not endpoint:
            raise LineError(404, NO_ENDPOINT)
        send_json(resp, 200, {"endpoint": endpoint, "active": active})

    def on_put(self, req, resp):
        body = read_json(req)
        _check_endpoint(body, required=True)
        with self.state.channel.lock:
            self.state.channel.webhook_endpoint = body["endpoint"]
        send_json(resp, 200, {})


class WebhookTest(Endpoint):
    """POST /v2/bot/channel/webhook/test: sends the verify request to `endpoint` or the one set."""
    endpoint = "webhook_test"

    def on_post(self, req, resp):
        body = read_json(req) if req.content_length else {}
        _check_endpoint(body, required=False)
        with self.state.channel.lock:
            url = body.get("endpoint") or self.state.channel.webhook_endpoint
        if not url:
            raise LineError(404, NO_ENDPOINT)
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
        with self.state.channel.lock:
            self.state.channel.marked_as_read.append(body["markAsReadToken"])
        send_json(resp, 200, {})


class LoadingAnimation(Endpoint):
    """POST /v2/bot/chat/loading/start: one-to-one chats only; each chat's starts are counted
    (`loading` of /sandbox/stats: which chats saw the animation)."""
    endpoint = "loading"

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
        self.state.loading_started(value)
        send_json(resp, 202, {})


class ChannelControl:
    """GET / PUT /sandbox/channel: the channel's settings that LINE's API cannot change (the LINE
    Developers Console's "Use webhook", the LINE Official Account Manager's target limit and its
    own sends), and its webhook URL; GET also lists the markAsReadTokens used (`marked_as_read`). PUT takes any of `webhook_active` (true/false),
    `webhook_endpoint` (a URL, or null: none set), `quota` (a whole number, or null: no target
    limit) and `sent_by_manager` (this month's messages sent from the Manager)."""

    def __init__(self, state):
        self.state = state

    def on_get(self, req, resp):
        send_json(resp, 200, self._snapshot())

    def on_put(self, req, resp):
        body = read_json(req)
        check = Validator()
        for key in sorted(set(body) - {"webhook_active", "webhook_endpoint", "quota", "sent_by_manager"}):
            check.fail(key, "is not a setting of /sandbox/channel")
        if "webhook_active" in body and not isinstance(body["webhook_active"], bool):
            check.fail("webhook_active", "must be true or false")
        if body.get("webhook_endpoint") is not None:
            _endpoint_rules(check, body["webhook_endpoint"], required=True)
        for key, nullable in (("quota", True), ("sent_by_manager", False)):
            value = body.get(key)
            if key in body and not (value is None and nullable) and (
                    not isinstance(value, int) or isinstance(value, bool) or value < 0):
                check.fail(key, "must be a whole number, 0 or more" + (", or null" if nullable else ""))
        check.raise_if_failed()
        channel, statistics = self.state.channel, self.state.statistics
        with channel.lock:
            channel.webhook_active = body.get("webhook_active", channel.webhook_active)
            channel.webhook_endpoint = body.get("webhook_endpoint", channel.webhook_endpoint) or ""
        statistics.quota = body.get("quota", statistics.quota)
        statistics.sent_by_manager = body.get("sent_by_manager", statistics.sent_by_manager)
        send_json(resp, 200, self._snapshot())

    def _snapshot(self) -> dict:
        channel, statistics = self.state.channel, self.state.statistics
        with channel.lock:
            webhook = {"endpoint": channel.webhook_endpoint or None, "active": channel.webhook_active}
            marked = list(channel.marked_as_read)
        return {"channel_id": self.state.tokens.channel_id, "webhook": webhook, "quota": statistics.quota,
                "sent_by_manager": statistics.sent_by_manager, "usage": statistics.usage(self.state.now_ms()),
                "assertion_kids": self.state.tokens.registered_kids(), "marked_as_read": marked}


ROUTES = {
    "/v2/bot/info": BotInfo,
    "/v2/bot/channel/webhook/endpoint": WebhookEndpoint,
    "/v2/bot/channel/webhook/test": WebhookTest,
    "/v2/bot/user/{user_id}/linkToken": LinkToken,
    "/v2/bot/message/markAsRead": MarkAsRead,
    "/v2/bot/chat/markAsRead": MarkAsReadByToken,
    "/v2/bot/chat/loading/start": LoadingAnimation,
}
CONTROL_ROUTES = {"/sandbox/channel": ChannelControl}
