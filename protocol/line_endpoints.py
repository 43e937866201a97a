"""LINE's per-endpoint rate limits, named once for the rate limiter and the sandbox.

LINE limits each API function (method and path) separately, per channel, and answers 429 beyond
("Rate limits" in LINE's Messaging API reference). Endpoints with no row of their own share the
figure of "Other API endpoints", 2,000 requests per second. The names below are the rate
limiter's bucket names and the keys of the `rate_limits` and `sandbox_rate_limits` settings.
"""
from __future__ import annotations

SECOND, MINUTE, HOUR = 1.0, 60.0, 3600.0

LIMITS: dict[str, tuple[float, float]] = {
    "reply": (2000, SECOND),
    "push": (2000, SECOND),
    "multicast": (200, SECOND),
    "broadcast": (60, HOUR),
    "narrowcast": (60, HOUR),
    "profile": (2000, SECOND),
    "content": (2000, SECOND),
    "richmenu_create": (100, HOUR),        # POST /v2/bot/richmenu
    "richmenu_delete": (100, HOUR),        # DELETE /v2/bot/richmenu/{richMenuId}
    "richmenu_alias_delete": (100, HOUR),  # DELETE /v2/bot/richmenu/alias/{richMenuAliasId}
    "richmenu_batch": (3, HOUR),           # POST /v2/bot/richmenu/batch
    "webhook_test": (60, HOUR),            # POST /v2/bot/channel/webhook/test
    "default": (2000, SECOND),             # every other endpoint, each on its own
}
"""LINE's published figure per endpoint name: (count, period in seconds)."""

# (method, path with "*" for one path segment) -> endpoint name, for the rows that are not a
# fixed message path. Checked in this order; the first match wins.
_PATTERNS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("POST", ("v2", "bot", "richmenu"), "richmenu_create"),
    ("DELETE", ("v2", "bot", "richmenu", "alias", "*"), "richmenu_alias_delete"),
    ("DELETE", ("v2", "bot", "richmenu", "*"), "richmenu_delete"),
    ("POST", ("v2", "bot", "richmenu", "batch"), "richmenu_batch"),
    ("POST", ("v2", "bot", "channel", "webhook", "test"), "webhook_test"),
    ("GET", ("v2", "bot", "profile", "*"), "profile"),
    ("GET", ("v2", "bot", "message", "*", "content"), "content"),
)
MESSAGE_PATHS = {
    "reply": "/v2/bot/message/reply",
    "push": "/v2/bot/message/push",
    "multicast": "/v2/bot/message/multicast",
    "broadcast": "/v2/bot/message/broadcast",
    "narrowcast": "/v2/bot/message/narrowcast",
}
_ENDPOINT_OF_MESSAGE_PATH = {path: name for name, path in MESSAGE_PATHS.items()}


def endpoint_name(method: str, path: str) -> str:
    """The rate-limit name of a request (a key of LIMITS); "default" for the other endpoints."""
    name = _ENDPOINT_OF_MESSAGE_PATH.get(path)
    if name is not None:
        return name if method == "POST" else "default"
    if path.startswith("/v2/bot/profile/") and method == "GET" and path.count("/") == 4:
        return "profile"    # the hot path, before the general match
    segments = tuple(path.strip("/").split("/"))
    for pattern_method, pattern, name in _PATTERNS:
        if method == pattern_method and len(segments) == len(pattern) and all(
                p == "*" or p == s for p, s in zip(pattern, segments)):
            return name
    return "default"


def limits_text(limits: dict[str, tuple[float, float]] = LIMITS) -> str:
    """LIMITS as a setting's value: `reply=2000/s,...,broadcast=60/h`."""
    units = {SECOND: "s", MINUTE: "m", HOUR: "h"}
    return ",".join(f"{name}={count:g}/{units[period]}" for name, (count, period) in limits.items())
