"""Which webhooks the receiver refuses, and in which order: the contract of docs/receiver.md,
"What each request gets", as one function of the request.

The order matters: the size before anything is read into a parser, the signature over the raw
bytes before the body is parsed (an unsigned body is never looked into), the JSON before the events
in it. The route (path, then method) is chosen before, in receiver/app.py.
"""
from __future__ import annotations

from frontdesk.protocol.events import WebhookError, parse_webhook_body, signature_ok
from frontdesk.protocol.http_server import Request


class Rejected(Exception):
    """A webhook answered with an error: the log line gets `reason`, the client `public`
    (the same unless the reason holds server details such as file paths)."""

    def __init__(self, status: int, reason: str, public: str | None = None):
        super().__init__(reason)
        self.status, self.reason = status, reason
        self.public = reason if public is None else public


def check_webhook(request: Request, secret: bytes, max_body_bytes: int) -> tuple[str, list[dict]]:
    """The checks of a POST to the callback path, in order: size, signature, JSON, events.

    The HTTP server already refuses a body over the limit before reading it (protocol/http_server.py,
    Limits); the size is checked here too so that the routes keep the contract whatever server hands
    them a Request.

    Returns:
        (destination, events) of a body every check passed; `events` may be empty (LINE's
        connectivity check).

    Raises:
        Rejected: 413 (too large), 401 (signature missing or wrong), 400 (not a webhook body:
            the reason names what is wrong).
    """
    if len(request.body) > max_body_bytes:
        raise Rejected(413, f"body of {len(request.body)} bytes exceeds the limit of {max_body_bytes}")
    signature = request.headers.get("x-line-signature")
    if not signature:
        raise Rejected(401, "the x-line-signature header is missing")
    if not signature_ok(secret, request.body, signature):
        raise Rejected(401, "x-line-signature does not match the body")
    try:
        return parse_webhook_body(request.body)
    except WebhookError as exc:
        raise Rejected(400, str(exc)) from None
