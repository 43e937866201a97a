"""Sending messages: reply, push, multicast, broadcast, narrowcast (and its progress), push by
phone number (PNP), and the validate endpoints.

The reply, push and multicast paths are the benchmarks' hot path (about 0.35 ms of sandbox CPU
per call): they validate, record and answer, and do nothing optional unless the body asks for it
(aggregation units).
"""
from __future__ import annotations

import re
import time

from .api import MESSAGES, Endpoint, LineError, Validator, iso_time, not_found, read_json, send_json
from .statistics import check_units
from .webhooks import ReplyTokenError, read_reply_token

# Narrowcast progress: a request waits, then sends, then has succeeded (at these ages in ms).
NARROWCAST_WAITING_MS = 200
NARROWCAST_SENDING_MS = 1000
PHONE_HASH_PATTERN = re.compile(r"[0-9a-f]{64}")


def _units(check: Validator, body: dict, state) -> dict | None:
    """The delivery's extra fields for customAggregationUnits, checked (None when absent)."""
    if "customAggregationUnits" not in body:
        return None
    check_units(check, body, state.statistics)
    return {"customAggregationUnits": body["customAggregationUnits"]}


def _members(state, to: str) -> int:
    """Recipients of a push or reply to `to`: LINE counts a group's or room's members, each once."""
    if to[:1] not in ("C", "R"):
        return 1
    try:
        return len(state.world.members(to))
    except LineError:   # a chat the bot left: LINE delivers to nobody
        return 0


class Reply(Endpoint):
    endpoint = "reply"

    def on_post(self, req, resp):
        body = read_json(req)
        check = Validator()
        check.string(body, "replyToken", "replyToken")
        check.messages(body)
        check.boolean(body, "notificationDisabled")
        check.raise_if_failed()
        try:
            token = read_reply_token(self.state.channel_secret, body["replyToken"])
        except ReplyTokenError:
            raise LineError(400, MESSAGES["bad_reply_token"]) from None
        req.context.reply_event = token.event_id or None   # the inspector shows the call under its event
        expires_ms = token.issued_ms + self.state.reply_token_ttl_ms
        if time.time() * 1000.0 > expires_ms:
            raise LineError(400, MESSAGES["bad_reply_token"])
        self.state.deliver("reply", req, [token.source_key], body["messages"], reply_token=body["replyToken"],
                           reply_expires_ms=expires_ms, source_event=token.event_id or None,
                           recipients=_members(self.state, token.source_key))
        send_json(resp, 200, {"sentMessages": self.state.sent_messages(body["messages"])})


class Push(Endpoint):
    """The answer's sentMessages are kept with the retry key: a repeat's 409 carries them."""
    endpoint = "push"

    def on_post(self, req, resp):
        body = read_json(req)
        check = Validator()
        check.recipient(body)
        check.messages(body)
        check.boolean(body, "notificationDisabled")
        extra = _units(check, body, self.state)
        check.raise_if_failed()
        sent = self.state.sent_messages(body["messages"])
        self.state.deliver("push", req, [body["to"]], body["messages"], sent=sent, extra=extra,
                           recipients=_members(self.state, body["to"]))
        send_json(resp, 200, {"sentMessages": sent})


class Multicast(Endpoint):
    endpoint = "multicast"

    def on_post(self, req, resp):
        body = read_json(req)
        check = Validator()
        check.user_ids(body)
        check.messages(body)
        check.boolean(body, "notificationDisabled")
        extra = _units(check, body, self.state)
        check.raise_if_failed()
        self.state.deliver("multicast", req, list(body["to"]), body["messages"], extra=extra)
        send_json(resp, 200, {})


class Broadcast(Endpoint):
    """To every follower of the bot: recorded with an empty `to`, counted once per follower."""
    endpoint = "broadcast"

    def on_post(self, req, resp):
        body = read_json(req)
        check = Validator()
        check.messages(body)
        check.boolean(body, "notificationDisabled")
        check.raise_if_failed()
        self.state.deliver("broadcast", req, [], body["messages"], recipients=len(self.state.world.followers))
        send_json(resp, 200, {})


class Narrowcast(Endpoint):
    """Answered 202 like LINE. The audience (recipient, filter, limit) is recorded, not resolved:
    the target is every follower, or `limit.max` of them."""
    endpoint = "narrowcast"

    def on_post(self, req, resp):
        body = read_json(req)
        check = Validator()
        check.messages(body)
        for key in ("recipient", "filter", "limit"):
            if key in body and not isinstance(body[key], dict):
                check.fail(key, "must be an object")
        limit = body.get("limit") if isinstance(body.get("limit"), dict) else {}
        maximum = limit.get("max")
        if maximum is not None and (isinstance(maximum, bool) or not isinstance(maximum, int) or maximum < 1):
            check.fail("limit.max", "must be an integer of at least 1")
        check.boolean(body, "notificationDisabled")
        check.raise_if_failed()
        target = min(len(self.state.world.followers), maximum or len(self.state.world.followers))
        audience = {key: body[key] for key in ("recipient", "filter", "limit") if key in body}
        delivery = self.state.deliver("narrowcast", req, [], body["messages"], extra={"audience": audience},
                                      recipients=target)
        with self.state.lock:
            self.state.narrowcasts[req.context.request_id] = (delivery["time"], target)
        send_json(resp, 202, {})


class NarrowcastProgress(Endpoint):
    """waiting, then sending, then succeeded with every target counted (NARROWCAST_*_MS)."""

    def on_get(self, req, resp):
        request_id = req.get_param("requestId")
        if not request_id:
            raise LineError(400, "The request has 1 error(s)", [{"message": "must be specified",
                                                                   "property": "requestId"}])
        with self.state.lock:
            accepted = self.state.narrowcasts.get(request_id)
        if accepted is None:
            raise not_found("Not found")
        accepted_ms, target = accepted
        age_ms = self.state.now_ms() - accepted_ms
        answer = {"acceptedTime": iso_time(accepted_ms)}
        if age_ms < NARROWCAST_WAITING_MS:
            answer["phase"] = "waiting"
        elif age_ms < NARROWCAST_SENDING_MS:
            answer.update(phase="sending", targetCount=target)
        else:
            answer.update(phase="succeeded", successCount=target, failureCount=0, targetCount=target,
                          completedTime=iso_time(accepted_ms + NARROWCAST_SENDING_MS))
        send_json(resp, 200, answer)


class PushByPhone(Endpoint):
    """POST /bot/pnp/push: `to` is the SHA-256 of a phone number (E.164), lower-case hex."""
    endpoint = "pnp"

    def on_post(self, req, resp):
        body = read_json(req)
        check = Validator()
        to = body.get("to")
        if not isinstance(to, str) or not PHONE_HASH_PATTERN.fullmatch(to):
            check.fail("to", "must be the SHA-256 hash of a phone number in E.164 format (64 hex digits)")
        check.messages(body)
        check.boolean(body, "notificationDisabled")
        tag = req.get_header("X-Line-Delivery-Tag")
        if tag is not None and not 16 <= len(tag) <= 100:
            check.fail("X-Line-Delivery-Tag", "Length must be between 16 and 100")
        extra = {**(_units(check, body, self.state) or {}), **({"delivery_tag": tag} if tag else {})}
        check.raise_if_failed()
        self.state.deliver("pnp", req, [to], body["messages"], extra=extra or None)
        send_json(resp, 200, {})


class ValidateMessages(Endpoint):
    """POST /v2/bot/message/validate/{reply,push,multicast,narrowcast,broadcast}: messages only."""

    def on_post(self, req, resp, kind):
        if kind not in ("reply", "push", "multicast", "narrowcast", "broadcast"):
            raise not_found(MESSAGES["not_found"])
        check = Validator()
        check.messages(read_json(req))
        check.raise_if_failed()
        send_json(resp, 200, {})


ROUTES = {
    "/v2/bot/message/reply": Reply,
    "/v2/bot/message/push": Push,
    "/v2/bot/message/multicast": Multicast,
    "/v2/bot/message/broadcast": Broadcast,
    "/v2/bot/message/narrowcast": Narrowcast,
    "/v2/bot/message/progress/narrowcast": NarrowcastProgress,
    "/v2/bot/message/validate/{kind}": ValidateMessages,
    "/bot/pnp/push": PushByPhone,
}
