"""The webhook (its signature and body) and the event document: validation and construction in
one place.

The event document is what every store hands out and every handler receives:
`{"ts", "op": "i", "ns": "<db>.events", "o": {"_id", "destination", "event", "key",
"received_at", "attempt"}}` (protocol/SPEC.md, section 7). The LINE event inside is kept exactly as received.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json


def webhook_signature(secret: bytes, body: bytes) -> bytes:
    """x-line-signature as LINE computes it: base64(HMAC-SHA256(channel secret, raw body))."""
    return base64.b64encode(hmac.new(secret, body, hashlib.sha256).digest())


def signature_ok(secret: bytes, body: bytes, header: str) -> bool:
    """Constant-time check of an x-line-signature header (WSGI gives latin-1 strings, so any
    header bytes compare without an error)."""
    return hmac.compare_digest(webhook_signature(secret, body), header.encode("latin-1"))


class WebhookError(ValueError):
    """The webhook body is malformed; the message says which part (safe to return to the client)."""


def parse_webhook_body(raw: bytes) -> tuple[str, list[dict]]:
    """Parse and validate a webhook body; return (destination, events)."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WebhookError(f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise WebhookError(f"body must be a JSON object, got {type(body).__name__}")
    destination = body.get("destination", "")
    if not isinstance(destination, str):
        raise WebhookError("`destination` must be a string")
    events = body.get("events")
    if not isinstance(events, list):
        raise WebhookError("`events` must be a list")
    for index, event in enumerate(events):
        validate_event(event, index)
    # An event id repeated inside one body is a repeat like one across bodies: the store keeps the
    # first and counts the others as duplicates.
    return destination, events


def validate_event(event, index: int = 0) -> None:
    where = f"events[{index}]"
    if not isinstance(event, dict):
        raise WebhookError(f"{where} must be an object")
    if not isinstance(event.get("type"), str) or not event["type"]:
        raise WebhookError(f"{where}.type must be a non-empty string")
    timestamp = event.get("timestamp")
    if not isinstance(timestamp, int) or isinstance(timestamp, bool):
        raise WebhookError(f"{where}.timestamp must be an integer (epoch ms)")
    event_id = event.get("webhookEventId")
    if not isinstance(event_id, str) or not event_id or len(event_id) > 128:
        raise WebhookError(f"{where}.webhookEventId must be a non-empty string of at most 128 chars")
    source = event.get("source")
    if source is not None and not isinstance(source, dict):
        raise WebhookError(f"{where}.source must be an object")


# Events LINE sends with no source, by what they are about: each stream keeps its own order without
# waiting behind (or holding up) the others (SPEC.md, "The event document").
_NO_SOURCE_KEYS = {"botSuspended": "-bot", "botResumed": "-bot", "activated": "-chatControl",
                   "deactivated": "-chatControl"}


def conversation_key(event: dict) -> str:
    """The ordering key: groupId, else roomId, else userId. Events with no source: `-bot` (suspended,
    resumed), `-chatControl` (activated, deactivated), `-module:<botId>`, `-delivery:<data>`, else
    `-<type>`."""
    source = event.get("source") or {}
    for field in ("groupId", "roomId", "userId"):
        value = source.get(field)
        if isinstance(value, str) and value:
            return value
    kind = event.get("type")
    if not isinstance(kind, str):
        return "-"
    key = _NO_SOURCE_KEYS.get(kind)
    if key is not None:
        return key
    detail = event.get(kind)
    about = (detail.get("botId") or detail.get("data")) if isinstance(detail, dict) else None
    return f"-{kind}:{about}" if isinstance(about, str) else f"-{kind}"


def make_document(ts: int, db: str, event_id: str, destination: str, event: dict, key: str,
                  received_at: int, attempt: int) -> dict:
    return {
        "ts": ts,
        "op": "i",
        "ns": f"{db}.events",
        "o": {
            "_id": event_id,
            "destination": destination,
            "event": event,
            "key": key,
            "received_at": received_at,
            "attempt": attempt,
        },
    }
