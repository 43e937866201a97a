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
import threading

import msgpack
import orjson

MAX_NESTING = 64
"""Deepest nesting of objects and arrays a webhook body may have (the body itself is level 1;
LINE's events use fewer than ten). Deeper bodies are refused, so that every event stored fits
in a handler frame, where it sits two levels deeper, within any msgpack decoder's limits."""

PACKER_NEST_LIMIT = 1024   # msgpack's packer refuses containers nested deeper than this


def webhook_signature(secret: bytes, body: bytes) -> bytes:
    """x-line-signature as LINE computes it: base64(HMAC-SHA256(channel secret, raw body))."""
    return base64.b64encode(hmac.new(secret, body, hashlib.sha256).digest())


def signature_ok(secret: bytes, body: bytes, header: str) -> bool:
    """Constant-time check of an x-line-signature header (WSGI gives latin-1 strings, so any
    header bytes compare without an error)."""
    return hmac.compare_digest(webhook_signature(secret, body), header.encode("latin-1"))


class WebhookError(ValueError):
    """The webhook body is malformed; the message says which part (safe to return to the client)."""


def _refuse_constant(name: str):
    raise WebhookError(f"body holds {name}, which is not JSON (RFC 8259) and cannot be carried")


class _CarriageCheck:
    """Refuses a parsed body that msgpack cannot carry to a handler: an integer outside
    -2**63 .. 2**64-1, a string with a lone surrogate, nesting deeper than MAX_NESTING.

    One msgpack.packb call, all in C, instead of walking every value in Python: msgpack's packer
    itself refuses big integers (OverflowError), surrogates (UnicodeEncodeError) and containers
    nested past PACKER_NEST_LIMIT (ValueError). Most bodies cannot be deep: fewer `[` and `{` in
    the raw text than MAX_NESTING (one bytes.count each) and the body alone is packed (~1.5 µs
    for a one-event webhook). Only a body with more brackets is packed at the bottom of a
    prebuilt chain of PACKER_NEST_LIMIT - MAX_NESTING one-item lists, so that the packer's limit
    falls exactly MAX_NESTING levels into the body (~50 µs: the chain's levels cost ~50 ns each).
    Returns what was packed, which parse_webhook_body looks into for floats.
    """

    def __init__(self):
        self._lock = threading.Lock()   # one chain, so one body at a time
        self._slot: list = [None]
        self._chain: list = self._slot
        for _ in range(PACKER_NEST_LIMIT - MAX_NESTING - 1):
            self._chain = [self._chain]

    def __call__(self, body: dict, raw: bytes) -> bytes:
        try:
            if raw.count(b"[") + raw.count(b"{") <= MAX_NESTING:
                return msgpack.packb(body, use_bin_type=True)
            with self._lock:
                self._slot[0] = body
                try:
                    return msgpack.packb(self._chain, use_bin_type=True)
                finally:
                    self._slot[0] = None
        except OverflowError:
            raise WebhookError("body holds an integer outside -2**63 .. 2**64-1 (64 bits), "
                               "which cannot be carried") from None
        except UnicodeEncodeError:
            raise WebhookError("body holds a string with a lone surrogate (an unpaired "
                               "\\ud800-\\udfff escape), which is not Unicode text") from None
        except ValueError:
            raise WebhookError(f"body is nested deeper than {MAX_NESTING} levels") from None


_check_carriable = _CarriageCheck()


MSGPACK_FLOAT64 = b"\xcb"   # the marker of every float msgpack packs (use_single_float off)


def _parse_json(raw: bytes, fast: bool):
    """The body parsed: by orjson when `fast` (a third of the standard library's time for a
    one-event webhook), else, or when orjson refuses it, by the standard library, which names
    the problem as it always has."""
    if fast:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass   # named below
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WebhookError(f"body is not UTF-8: {exc}") from None
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise WebhookError(f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise WebhookError(f"body is nested deeper than {MAX_NESTING} levels") from None


def parse_webhook_body(raw: bytes) -> tuple[str, list[dict]]:
    """Parse and validate a webhook body; return (destination, events).

    Raises WebhookError (its message names the problem) for a body that is not UTF-8 (json.loads
    on bytes would also take UTF-16 and UTF-32), not JSON, holds NaN or Infinity, or holds what
    msgpack cannot carry to a handler (_CarriageCheck)."""
    return _parse_webhook_body(raw, fast=True)


def _parse_webhook_body(raw: bytes, fast: bool) -> tuple[str, list[dict]]:
    body = _parse_json(raw, fast)
    if not isinstance(body, dict):
        raise WebhookError(f"body must be a JSON object, got {type(body).__name__}")
    destination = body.get("destination", "")
    if not isinstance(destination, str):
        raise WebhookError("`destination` must be a string")
    events = body.get("events")
    if not isinstance(events, list):
        raise WebhookError("`events` must be a list")
    packed = _check_carriable(body, raw)
    if fast and MSGPACK_FLOAT64 in packed:
        # a float, or maybe (the byte is in a string or an integer too) an integer beyond 64 bits
        # that orjson read as a float, where the standard library keeps it exact (and refuses it)
        return _parse_webhook_body(raw, fast=False)
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
