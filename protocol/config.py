"""Configuration: every knob a typed, documented entry; one loader for every process.

Precedence (README, "Configuration"): command-line flag > environment > file
(`frontdesk.toml`, or `--config` / `FRONTDESK_CONFIG`) > default. Errors name the key and the
source, never a secret's value. Child processes receive the resolved settings through their
environment (`Settings.to_environ`), so every process of one system sees the same values; the
secrets never go there: a child that needs one inherits a descriptor (protocol/credentials.py).
"""
from __future__ import annotations

import logging
import os
import tomllib
from dataclasses import dataclass
from typing import Any

from .frames import FRAME_ENVELOPE_BYTES
from .line_endpoints import limits_text

REPLY_EXPIRY = ("push", "push-within-budget", "dead-letter")

DEFAULT_CONFIG_FILE = "frontdesk.toml"
CREDENTIALS_DIRECTORY = "CREDENTIALS_DIRECTORY"   # systemd's folder of LoadCredential= files

# What the sandbox accepts when no credentials are configured (`frontdesk run --sandbox` uses
# them too). Only the local emulator accepts them, so they are documented values, not secrets.
SANDBOX_CHANNEL_SECRET = "frontdesk-sandbox-secret"
SANDBOX_ACCESS_TOKEN = "frontdesk-sandbox-token"
SANDBOX_CHANNEL_ID = "1000000001"


class ConfigError(Exception):
    """A configuration value is missing or wrong; the message names the key and its source."""


@dataclass(frozen=True)
class Knob:
    """One setting: its key, type and default, the help the README's table shows, and where a
    secret may come from (`env`, `<ENV>_FILE`, `<ENV>_FD`, systemd's `credential`)."""
    name: str
    type: type
    default: Any
    help: str
    env: str | None = None
    secret: bool = False
    minimum: float | None = None
    credential: str | None = None   # a secret's systemd credential name (LoadCredential=)

    @property
    def env_name(self) -> str:
        return self.env or "FRONTDESK_" + self.name.upper()

    @property
    def file_env_name(self) -> str:
        """A secret's `<ENV>_FILE`: the path of a file holding it."""
        return self.env_name + "_FILE"

    @property
    def fd_env_name(self) -> str:
        """A secret's `<ENV>_FD`: the number of an inherited descriptor of a file holding it."""
        return self.env_name + "_FD"


def _rates(text: str) -> dict[str, tuple[float, float]]:
    """`reply=2000/s,broadcast=60/h` -> {"reply": (2000, 1.0), "broadcast": (60, 3600.0)}."""
    if not isinstance(text, str):
        raise ValueError(f"expected a string like reply=2000/s, got {type(text).__name__}")
    periods = {"s": 1.0, "m": 60.0, "h": 3600.0}
    rates = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        endpoint, sep, spec = part.partition("=")
        count, slash, unit = spec.partition("/")
        if not sep or not slash or unit not in periods:
            raise ValueError(f"{part!r} is not ENDPOINT=COUNT/s|m|h")
        if float(count) <= 0:
            raise ValueError(f"{part!r}: the count must be positive")
        rates[endpoint.strip()] = (float(count), periods[unit])
    return rates


def _reply_expiry(raw) -> str:
    """One of the reply_expiry policies (ratelimiter/quota.py)."""
    if not isinstance(raw, str) or raw.strip() not in REPLY_EXPIRY:
        raise ValueError(f"expected one of {', '.join(REPLY_EXPIRY)}")
    return raw.strip()


def _handler_count(raw) -> int | str:
    """A process count (0 or more) or `auto`."""
    if isinstance(raw, str) and raw.strip().lower() == "auto":
        return "auto"
    if isinstance(raw, (bool, float)):
        raise ValueError("expected a whole number or auto")
    try:
        return int(raw)
    except ValueError:
        raise ValueError("expected a whole number or auto") from None


TOKEN_SOURCES = ("fixed", "stateless", "v2.1")
MAX_TOKEN_LIFETIME_S = 30 * 86400   # LINE's limit on a v2.1 token's token_exp


def _token_source(raw) -> str:
    """One of TOKEN_SOURCES (docs/tokens.md)."""
    if not isinstance(raw, str) or raw.strip().lower() not in TOKEN_SOURCES:
        raise ValueError(f"expected one of {', '.join(TOKEN_SOURCES)}")
    return raw.strip().lower()


def _loading_seconds(raw) -> int:
    """LINE's loadingSeconds: 5 to 60, a multiple of 5."""
    if isinstance(raw, (bool, float)):
        raise ValueError("expected a whole number")
    value = int(raw)
    if not 5 <= value <= 60 or value % 5:
        raise ValueError("LINE takes 5 to 60 seconds, a multiple of 5")
    return value


# Every knob. Grouped by the process that uses it; the README's configuration table is made
# from this list (`frontdesk config --markdown`), so the help texts are user documentation.
KNOBS: tuple[Knob, ...] = (
    # --- credentials and addresses
    Knob("channel_secret", str, "", "LINE channel secret: the receiver verifies webhook signatures with it. "
         "Or from a file: `LINE_CHANNEL_SECRET_FILE`, systemd's credential `line-channel-secret`, or an "
         "inherited descriptor `LINE_CHANNEL_SECRET_FD`; never on the command line.",
         env="LINE_CHANNEL_SECRET", secret=True, credential="line-channel-secret"),
    Knob("channel_access_token", str, "", "LINE channel access token: the rate limiter calls the Messaging "
         "API with it. Or from a file: `LINE_CHANNEL_ACCESS_TOKEN_FILE`, systemd's credential "
         "`line-channel-access-token`, or an inherited descriptor `LINE_CHANNEL_ACCESS_TOKEN_FD`; never on "
         "the command line.",
         env="LINE_CHANNEL_ACCESS_TOKEN", secret=True, credential="line-channel-access-token"),
    Knob("token_source", _token_source, "fixed",
         "Where the rate limiter's channel access token comes from: `fixed` (channel_access_token), "
         "`stateless` (issued from channel_id and channel_secret, 15 minutes, renewed before expiry) or "
         "`v2.1` (issued from an assertion signed with channel_private_key, token_lifetime_s, renewed "
         "before expiry, revoked on a clean stop): docs/tokens.md."),
    Knob("channel_private_key", str, "", "token_source = v2.1: the channel's assertion signing key, the "
         "JWK private key (JSON) whose public half is registered in the LINE Developers Console. From a "
         "file: `LINE_CHANNEL_PRIVATE_KEY_FILE`, systemd's credential `line-channel-private-key`, or an "
         "inherited descriptor `LINE_CHANNEL_PRIVATE_KEY_FD`; never on the command line.",
         env="LINE_CHANNEL_PRIVATE_KEY", secret=True, credential="line-channel-private-key"),
    Knob("channel_key_id", str, "",
         "token_source = v2.1: the kid LINE gave the registered public key (LINE Developers Console)."),
    Knob("token_lifetime_s", int, 86400,
         "token_source = v2.1: the lifetime asked for each token (LINE's token_exp, at most 2592000: 30 "
         "days); it is renewed at 80 % of its life. A token of a rate limiter that was killed cannot be "
         "revoked and counts against LINE's 30 valid tokens until it expires: hence a day.", minimum=60),
    Knob("channel_id", str, "",
         "LINE channel ID (LINE Developers Console, Basic settings): `frontdesk doctor` checks that the "
         "access token belongs to it; the sandbox serves the channel access token API for it (default "
         "there: " + SANDBOX_CHANNEL_ID + ")."),
    Knob("public_url", str, "",
         "The https URL LINE sends webhooks to (your TLS proxy's address of callback_path, e.g. "
         "https://bot.example.com/callback): `frontdesk doctor` checks the channel's webhook URL "
         "against it; the sandbox starts with it as its webhook URL (`frontdesk run --sandbox`: the "
         "receiver's callback URL when unset)."),
    Knob("quota_warning_share", float, 0.9,
         "When this share of the month's message limit (LINE's target limit, or push_budget if lower) "
         "is used: one `event=quota_warning` log line and the warning flag in `frontdesk status`, `top`, "
         "the status page and `/metrics`; `reply_expiry = push-within-budget` stops pushing expired "
         "replies; `frontdesk doctor` names it a problem (pushes beyond LINE's limit are refused).",
         minimum=0.0),
    Knob("store", str, "sqlite:///frontdesk.db",
         "Store URL: sqlite:///path.db or mongodb://host/db?replicaSet=rs0."),
    Knob("listen", str, "127.0.0.1:8000", "Receiver address HOST:PORT."),
    Knob("admin_listen", str, "127.0.0.1:8001",
         "Status page address HOST:PORT (/, /status.json, /metrics, /healthz); keep it on loopback "
         "or a private network. Empty: `frontdesk run` starts no status page."),
    Knob("api_base", str, "https://api.line.me", "Messaging API base URL."),
    Knob("api_data_base", str, "https://api-data.line.me", "Messaging API data (content) base URL."),
    Knob("log_level", str, "INFO", "Log level: DEBUG, INFO, WARNING, ERROR."),
    Knob("log_file", str, "", "Every process appends its log lines to this file instead of writing them to "
         "stderr (reopened when logrotate moves it); `frontdesk logs [ROLE] -f` follows it. Empty: stderr."),
    # --- receiver
    Knob("callback_path", str, "/callback", "Webhook path."),
    Knob("max_body_bytes", int, 1024 * 1024, "Largest webhook body accepted (413 beyond); at most "
         "max_frame_bytes - 1 KiB (the default follows a smaller max_frame_bytes).", minimum=1),
    Knob("ack_budget_s", float, 1.0,
         "Longest a webhook may wait for durable storage before it gets a fast 503.", minimum=0.01),
    Knob("receiver_connection_limit", int, 1000,
         "Open connections the receiver keeps. At the limit a new connection takes the place of the "
         "longest idle one, else of the one whose unfinished request started first (408); it gets 503 "
         "only while every open connection is waiting for its answer.", minimum=1),
    Knob("receiver_backlog", int, 2048, "Listen socket backlog.", minimum=1),
    Knob("receiver_idle_timeout_s", int, 30, "An idle keep-alive connection is closed after this (the old "
         "key receiver_channel_timeout_s still works, with a warning).", minimum=1),
    Knob("receiver_request_timeout_s", float, 10.0,
         "A request not complete (headers and body) this long after its first byte gets 408 and its "
         "connection is closed: a slow client cannot hold a connection.", minimum=0.1),
    Knob("append_linger_ms", float, 5.0,
         "How long a group commit of webhooks waits for more to share its fsync: fewer commits under "
         "load (receiver CPU per event -26% at 500/s), at most this much more ack latency.", minimum=0.0),
    # --- store
    Knob("max_attempts", int, 5, "Deliveries of one event before it becomes a dead letter.", minimum=1),
    Knob("retry_backoff_s", float, 1.0, "First retry delay after a nack; doubles per attempt.",
         minimum=0.0),
    Knob("retry_backoff_max_s", float, 300.0, "Longest retry delay after a nack.", minimum=0.0),
    Knob("lease_s", float, 60.0,
         "How long a claimed event stays leased to one dispatcher without news (crash recovery).",
         minimum=1.0),
    Knob("retention_s", float, 7 * 86400.0, "How long done events are kept.", minimum=0.0),
    Knob("feed_rescan_s", float, 5.0, "Safety-net re-scan interval of the change feed.", minimum=0.1),
    # --- dispatcher and handlers
    Knob("handler", str, "",
         "Handler command line (shell words). Empty: the bundled Python echo example."),
    Knob("handlers", _handler_count, 2,
         "Number of handler processes, or `auto`: between handlers_min and handlers_max, grown while "
         "events wait and handlers are busy, shrunk after autoscale_idle_s of quiet.", minimum=0),
    Knob("handlers_min", int, 1, "handlers = auto: the fewest handler processes.", minimum=0),
    Knob("handlers_max", int, 8, "handlers = auto: the most handler processes.", minimum=1),
    Knob("autoscale_backlog_s", float, 1.0,
         "handlers = auto: grow while the oldest waiting event is older than this (and handlers are busy).",
         minimum=0.0),
    Knob("autoscale_idle_s", float, 30.0,
         "handlers = auto: one handler fewer after this long mostly idle with nothing waiting.", minimum=0.0),
    Knob("handler_user", str, "",
         "Run handler processes as this user (name or uid; its primary group, no other groups) when "
         "frontdesk starts as root, so a handler cannot read frontdesk's files, environment or "
         "secrets. Empty: as frontdesk's own user."),
    Knob("max_frame_bytes", int, 16 * 1024 * 1024, "Largest frame accepted on any pipe.", minimum=64),
    Knob("event_deadline_s", float, 30.0,
         "A handler that holds an event longer than this (time its API calls wait on frontdesk not "
         "counted) is killed and the event retried.",
         minimum=0.1),
    Knob("handler_outbound_max_bytes", int, 64 * 1024 * 1024,
         "Bytes the dispatcher may hold for one handler that has not read them yet (events, API "
         "answers); past this the handler is declared stuck, killed and its events retried. At "
         "least max_frame_bytes.", minimum=64),
    Knob("max_calls_per_event", int, 100,
         "API calls one delivery of an event may make; calls past it get an error naming this limit.",
         minimum=1),
    Knob("handler_api_max_calls", int, 64,
         "API calls one handler process may have at the rate limiter at once; more wait in the "
         "dispatcher, and a handler with this many waiting is not read until they go "
         "(docs/dispatcher.md, \"A handler that stops reading\").", minimum=1),
    Knob("handler_api_max_bytes", int, 4 * 1024 * 1024,
         "Bytes of one handler process's calls at the rate limiter plus the bytes it has not read "
         "yet (answers, events); past it its calls wait in the dispatcher. A call goes alone "
         "whatever its size.", minimum=1),
    Knob("event_api_max_calls", int, 2,
         "API calls one event may have at the rate limiter at once (a handler's calls made for no "
         "event count as one event); more wait in the dispatcher while its other events go on.",
         minimum=1),
    Knob("event_api_max_bytes", int, 1024 * 1024,
         "Bytes of one event's calls at the rate limiter at once; past it they wait in the dispatcher. "
         "A call goes alone whatever its size.", minimum=1),
    Knob("kill_grace_s", float, 5.0, "Time between TERM and KILL for a handler being stopped.",
         minimum=0.0),
    Knob("handler_start_timeout_s", float, 10.0, "Time a new handler has to complete the handshake.",
         minimum=0.1),
    Knob("restart_backoff_max_s", float, 30.0, "Longest delay before restarting a crashed process.",
         minimum=0.0),
    Knob("restart_intensity", int, 5,
         "More than this many early deaths (before serving) of a pool's processes within "
         "restart_period_s mark it degraded.",
         minimum=1),
    Knob("restart_period_s", float, 60.0, "Window for restart_intensity.", minimum=1.0),
    Knob("loop_coalesce_ms", float, 3.0,
         "A busy receiver or dispatcher looks at its sockets and pipes at most this often, so that "
         "what arrives meanwhile is handled in one turn: at 1,000 events/s about a quarter less CPU "
         "per event for a few ms of latency. An idle one answers at once. 0: look after every "
         "wake-up.",
         minimum=0.0),
    Knob("store_turn_ms", float, 2.0,
         "Under load, a dispatcher writes acks and claims new events at most this often (each store "
         "transaction then carries many events); with half its handlers' window free, and events to "
         "claim, it goes at once.",
         minimum=0.0),
    Knob("claim_run", int, 32,
         "When a claim finds fewer conversations ready than its handlers have room for, it also leases "
         "up to this many - 1 following events of each conversation, handed out one after another "
         "without a store turn (10 busy conversations: dispatcher CPU per event 90 -> 65 µs). 1: one "
         "event per conversation per claim.",
         minimum=1),
    Knob("drain_grace_s", float, 30.0, "On TERM/INT, how long in-flight work may take to finish.",
         minimum=0.0),
    # --- rate limiter and LINE API client
    Knob("api_connections", int, 64,
         "Keep-alive connections the rate limiter keeps to the LINE API, each carrying one call at a "
         "time: at 20 ms of latency one carries ~45 calls/s, so LINE's 2,000 replies/s need ~45 "
         "(16 held 1,000 events/s at 20 ms to 800/s, e2e p99 5 s; 64: 82 ms).", minimum=1),
    Knob("api_connect_timeout_s", float, 5.0, "LINE API connect timeout.", minimum=0.1),
    Knob("api_read_timeout_s", float, 30.0, "LINE API read timeout.", minimum=0.1),
    Knob("api_max_retries", int, 5, "Retries of one API call after 429, 5xx or connection errors.",
         minimum=0),
    Knob("rate_limits", _rates, limits_text(),
         "Per-endpoint limits ENDPOINT=COUNT/s|m|h (LINE's published figures, docs/ratelimiter.md); "
         "endpoints not named keep LINE's figure, `default` covers the rest."),
    Knob("shared_rate_budget", bool, True,
         "The rate limiters of every dispatcher on one store share rate_limits (each leases slices of "
         "an endpoint's budget as its load needs); false: each rate limiter uses all of rate_limits."),
    Knob("reply_max_age_s", float, 50.0,
         "A reply whose token is older than this is sent as a push to the same source.", minimum=0.0),
    Knob("loading_after_s", float, 2.0,
         "A one-to-one chat whose oldest event has waited this long unanswered (a backlog) is shown LINE's "
         "loading animation, refreshed while it waits; never groups or rooms, never ahead of real calls "
         "(docs/ratelimiter.md, \"Users told to wait\"). 0: off.", minimum=0.0),
    Knob("loading_seconds", _loading_seconds, 20,
         "How long each loading animation lasts (LINE's loadingSeconds: 5 to 60, a multiple of 5); it is "
         "started again 2 s before it ends while the chat still waits."),
    Knob("reply_expiry", _reply_expiry, "push",
         "What a reply whose token is too old (older than reply_max_age_s, or refused unused) does: "
         "`push` (its messages go as a push, which LINE bills), `push-within-budget` (a push until "
         "quota_warning_share of the month's limit is used, then the call fails and the event becomes "
         "a dead letter), `dead-letter` (never a push). Each choice is logged (`event=reply_expired`) "
         "and counted."),
    Knob("push_budget", int, 0,
         "Messages frontdesk may have billed per quota month (LINE counts a push once per recipient, a "
         "group push once per member; replies are free); its warning share and `remaining` act on the "
         "lower of it and LINE's target limit. 0: none, LINE's target limit only.", minimum=0),
    Knob("quota_poll_s", float, 300.0,
         "How often the rate limiter reads LINE's quota and this month's consumption, and checks the "
         "webhook endpoint (also once at start).", minimum=1.0),
    Knob("mark_as_read", bool, False,
         "When a handler acks a message event that carries a `markAsReadToken`, the rate limiter marks "
         "the message read (LINE's `POST /v2/bot/chat/markAsRead`), at its lowest priority: never ahead "
         "of a waiting reply. One API call per message event."),
    Knob("batch_window_ms", float, 20.0,
         "Identical pushes to different users within this window become one multicast.", minimum=0.0),
    Knob("batching", bool, True, "Turn push-to-multicast batching on or off."),
    Knob("profile_ttl_s", float, 86400.0, "How long a cached profile answers profile calls.",
         minimum=0.0),
    Knob("user_data_max_bytes", int, 64 * 1024,
         "Largest data a handler may store for a user with user_set_data, as compact UTF-8 JSON; "
         "larger is refused with an error naming this limit. Every user_get answers the whole record "
         "(docs/ratelimiter.md, \"Profile, content, user data\").", minimum=2),
    Knob("content_max_bytes", int, 16 * 1024 * 1024 - FRAME_ENVELOPE_BYTES,
         "Largest content download. It reaches the handler in one frame, so at most max_frame_bytes - 1 KiB "
         "(the default follows a smaller max_frame_bytes).",
         minimum=1),
    Knob("api_trace", bool, False,
         "Send each API call with an `X-Frontdesk-Trace` header naming the events it serves, the "
         "handler and when the event was stored and handed to it: the sandbox's chat page shows an "
         "event's path with it. `frontdesk run --sandbox` turns it on; LINE itself ignores it."),
    # --- sandbox (the local LINE API emulator)
    Knob("sandbox_listen", str, "127.0.0.1:8100", "Sandbox LINE API address HOST:PORT."),
    Knob("sandbox_latency_ms", float, 0.0, "Latency the sandbox adds to every API answer.",
         minimum=0.0),
    Knob("sandbox_fault_rate", float, 0.0, "Share of sandbox API calls answered 500.", minimum=0.0),
    Knob("sandbox_drop_rate", float, 0.0, "Share of sandbox API calls whose connection is dropped.",
         minimum=0.0),
    Knob("sandbox_rate_limits", _rates, limits_text(),
         "Sandbox per-endpoint limits (429 beyond), like rate_limits; burst = one period's worth."),
    Knob("sandbox_reply_token_ttl_s", float, 60.0,
         "Sandbox: a reply token is refused this long after its webhook event.", minimum=0.0),
    Knob("sandbox_stateless_token_s", int, 900,
         "Sandbox: the lifetime of a stateless channel access token it issues (LINE's: 15 minutes); "
         "shorter to see renewals.", minimum=1),
    Knob("sandbox_threads", int, 32,
         "Sandbox threads for calls that block (long polls of /sandbox/deliveries, the webhook test); "
         "every other call is answered on its event loop.", minimum=1),
    Knob("sandbox_recorder_size", int, 200_000,
         "Deliveries the sandbox keeps for /sandbox/deliveries; the oldest are dropped beyond it "
         "(about 0.4 KB each).", minimum=10),
)

KNOBS_BY_NAME = {knob.name: knob for knob in KNOBS}

# Keys that were renamed, old -> new. The old key still works under every source (flag, `--set`,
# environment `FRONTDESK_<OLD>`, file) when the new one is not given under the same source, and the
# process logs a warning naming the new key (Settings.log_deprecations).
RENAMED = {"receiver_channel_timeout_s": "receiver_idle_timeout_s"}
OLD_NAMES = {new: old for old, new in RENAMED.items()}


@dataclass(frozen=True)
class Ceiling:
    """A combination the table implies: `low` may not be above `high` less `room`. With
    `default_follows`, a `low` left at its default is lowered to fit instead (a default is no
    statement of the user's); a value given for it is checked."""
    low: str
    high: str
    why: str
    room: int = 0
    default_follows: bool = False

    def broken_by(self, values: dict[str, Any]) -> bool:
        return values[self.low] > values[self.high] - self.room


# Checked after every knob is resolved (load): each broken one is an error naming both keys.
CEILINGS: tuple[Ceiling, ...] = (
    Ceiling("max_frame_bytes", "handler_outbound_max_bytes",
            "the dispatcher must be able to hold one whole frame for a handler"),
    Ceiling("max_body_bytes", "max_frame_bytes",
            "each event of a webhook reaches its handler in one frame, with room for its envelope",
            room=FRAME_ENVELOPE_BYTES, default_follows=True),
    Ceiling("content_max_bytes", "max_frame_bytes",
            "a content download reaches the handler in one frame, with room for the answer around it",
            room=FRAME_ENVELOPE_BYTES, default_follows=True),
    Ceiling("handlers_min", "handlers_max", "handlers = auto grows and shrinks the pool between the two"),
    Ceiling("retry_backoff_s", "retry_backoff_max_s",
            "the first retry delay after a nack cannot be longer than the longest"),
)


def check_combinations(values: dict[str, Any], sources: dict[str, str]) -> None:
    """Apply CEILINGS to resolved values (a default that follows its ceiling is lowered in place).

    Raises:
        ConfigError: a broken ceiling, naming both keys with their values and sources: a
            contradiction is refused, never clamped silently.
    """
    for ceiling in CEILINGS:
        if not ceiling.broken_by(values):
            continue
        room = f" - {ceiling.room}" if ceiling.room else ""
        lowered = values[ceiling.high] - ceiling.room
        if ceiling.default_follows and sources[ceiling.low] == "default" and lowered >= (
                KNOBS_BY_NAME[ceiling.low].minimum or 0):
            values[ceiling.low] = lowered
            sources[ceiling.low] = f"default, lowered to {ceiling.high}{room}"
            continue
        raise ConfigError(f"{ceiling.low}={values[ceiling.low]} (from {sources[ceiling.low]}) is above "
                          f"{ceiling.high}={values[ceiling.high]}{room} (from {sources[ceiling.high]}): "
                          f"{ceiling.why}")


def _convert(knob: Knob, raw: Any, source: str) -> Any:
    """Coerce a raw value (str from env/flags, typed from TOML) to the knob's type."""
    where = f"{knob.name} (from {source})"
    try:
        if knob.type is bool:
            if isinstance(raw, bool):
                value = raw
            elif isinstance(raw, str) and raw.strip().lower() in ("1", "true", "yes", "on"):
                value = True
            elif isinstance(raw, str) and raw.strip().lower() in ("0", "false", "no", "off"):
                value = False
            else:
                raise ValueError("expected true or false")
        elif knob.type is int:
            if isinstance(raw, bool) or isinstance(raw, float):
                raise ValueError("expected a whole number")
            value = int(raw)
        elif knob.type is float:
            if isinstance(raw, bool):
                raise ValueError("expected a number")
            value = float(raw)
        elif knob.type is str:
            if not isinstance(raw, str):
                raise ValueError(f"expected a string, got {type(raw).__name__}")
            value = raw
        else:
            if isinstance(raw, dict):  # TOML table form: {reply = "2000/s"}
                raw = ",".join(f"{k}={v}" for k, v in raw.items())
            value = knob.type(raw)
    except (ValueError, TypeError) as exc:
        shown = "<secret>" if knob.secret else repr(raw)
        raise ConfigError(f"{where}: invalid value {shown}: {exc}") from None
    if knob.minimum is not None and not isinstance(value, str) and value < knob.minimum:   # "auto" has none
        raise ConfigError(f"{where}: must be at least {knob.minimum}, got {value}")
    return value


class Settings:
    """Resolved configuration: one typed attribute per knob (KNOBS says what each means), plus
    where each value came from. Built by load(); a process passes it to whatever it starts."""

    channel_secret: str
    channel_access_token: str
    token_source: str
    channel_private_key: str
    channel_key_id: str
    token_lifetime_s: int
    channel_id: str
    public_url: str
    quota_warning_share: float
    store: str
    listen: str
    admin_listen: str
    api_base: str
    api_data_base: str
    log_level: str
    log_file: str
    callback_path: str
    max_body_bytes: int
    ack_budget_s: float
    receiver_connection_limit: int
    receiver_backlog: int
    receiver_idle_timeout_s: int
    receiver_request_timeout_s: float
    append_linger_ms: float
    max_attempts: int
    retry_backoff_s: float
    retry_backoff_max_s: float
    lease_s: float
    retention_s: float
    feed_rescan_s: float
    handler: str
    handlers: int | str          # a count, or "auto"
    handlers_min: int
    handlers_max: int
    autoscale_backlog_s: float
    autoscale_idle_s: float
    handler_user: str
    max_frame_bytes: int
    event_deadline_s: float
    handler_outbound_max_bytes: int
    max_calls_per_event: int
    handler_api_max_calls: int
    handler_api_max_bytes: int
    event_api_max_calls: int
    event_api_max_bytes: int
    kill_grace_s: float
    handler_start_timeout_s: float
    restart_backoff_max_s: float
    restart_intensity: int
    restart_period_s: float
    loop_coalesce_ms: float
    store_turn_ms: float
    claim_run: int
    drain_grace_s: float
    api_connections: int
    api_connect_timeout_s: float
    api_read_timeout_s: float
    api_max_retries: int
    rate_limits: dict[str, tuple[float, float]]     # endpoint -> (count, period in seconds)
    shared_rate_budget: bool
    reply_max_age_s: float
    loading_after_s: float
    loading_seconds: int
    reply_expiry: str
    push_budget: int
    quota_poll_s: float
    mark_as_read: bool
    batch_window_ms: float
    batching: bool
    profile_ttl_s: float
    user_data_max_bytes: int
    content_max_bytes: int
    api_trace: bool
    sandbox_listen: str
    sandbox_latency_ms: float
    sandbox_fault_rate: float
    sandbox_drop_rate: float
    sandbox_rate_limits: dict[str, tuple[float, float]]
    sandbox_reply_token_ttl_s: float
    sandbox_stateless_token_s: int
    sandbox_threads: int
    sandbox_recorder_size: int

    def __init__(self, values: dict[str, Any], sources: dict[str, str],
                 secret_fds: dict[str, int] | None = None,
                 deprecations: tuple[tuple[str, str], ...] = ()):
        self.__dict__.update(values)
        self._sources = sources
        self._secret_fds = secret_fds or {}   # knob name -> inherited descriptor, kept unread
        self.deprecations = deprecations      # (renamed key used, where it was given)

    def log_deprecations(self) -> None:
        """One warning per renamed key this configuration used, naming the key to write instead."""
        for old, source in self.deprecations:
            logging.getLogger("frontdesk.config").warning(
                "event=setting_renamed old=%s new=%s source=%r", old, RENAMED[old], source)

    def source(self, name: str) -> str:
        return self._sources[name]

    def replace(self, **changes) -> "Settings":
        values = {k.name: getattr(self, k.name) for k in KNOBS}
        sources = dict(self._sources)
        for name, raw in changes.items():
            knob = KNOBS_BY_NAME[name]
            values[name] = _convert(knob, raw, "override") if isinstance(raw, str) else raw
            sources[name] = "override"
        return Settings(values, sources, {n: fd for n, fd in self._secret_fds.items() if n not in changes})

    def secret_descriptor(self, name: str) -> int | None:
        """The descriptor a secret came in when this process was asked to keep it unread (load's
        `unread_secrets`: the dispatcher hands the token on to its rate limiter); else None."""
        return self._secret_fds.get(name)

    def has_secret(self, name: str) -> bool:
        """Whether the secret `name` is given: as a value, or as a descriptor kept unread."""
        return bool(getattr(self, name)) or name in self._secret_fds

    def holds_secrets(self) -> bool:
        """Whether this process holds any secret, as a value or as a descriptor."""
        return any(self.has_secret(knob.name) for knob in KNOBS if knob.secret)

    def require_secrets(self, *names: str) -> None:
        """Fail with the names (never values) of required secrets that are empty."""
        missing = [KNOBS_BY_NAME[n] for n in names if not self.has_secret(n)]
        if missing:
            listed = ", ".join(f"{k.name} (env {k.env_name})" for k in missing)
            raise ConfigError(f"missing required secret: {listed}")

    def to_environ(self) -> dict[str, str]:
        """Every setting but the secrets as environment variables, for child processes; with
        FRONTDESK_CONFIG pointing nowhere, so that a child reads no secret from a file either."""
        env = {knob.env_name: _as_typed(knob, getattr(self, knob.name)) for knob in KNOBS if not knob.secret}
        env["FRONTDESK_CONFIG"] = os.devnull
        return env

    def secrets_environ(self) -> dict[str, str]:
        """The secrets by value, as a user would export them: for a tool that starts frontdesk
        commands of its own (the bench suites). frontdesk's own children never get this."""
        return {knob.env_name: getattr(self, knob.name) for knob in KNOBS if knob.secret and getattr(self, knob.name)}

    def public(self) -> dict[str, Any]:
        """Every value with secrets masked, for status output and logs; rates in the form one
        types (`reply=2000/s,...`)."""
        return {
            k.name: ("<set>" if self.has_secret(k.name) else "<unset>") if k.secret
            else _as_typed(k, getattr(self, k.name)) if k.type is _rates else getattr(self, k.name)
            for k in KNOBS
        }


def _as_typed(knob: Knob, value: Any) -> str:
    """A value in the form one would type it (flag, environment), which _convert reads back."""
    if knob.type is _rates:
        units = {1.0: "s", 60.0: "m", 3600.0: "h"}
        return ",".join(f"{k}={c:g}/{units[p]}" for k, (c, p) in value.items())
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def load(
    flags: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
    config_file: str | None = None,
    unread_secrets: tuple[str, ...] = (),
) -> Settings:
    """Resolve every knob: flag > environment > file > default.

    `flags` holds values given on the command line (None means not given). The file is
    `config_file`, else $FRONTDESK_CONFIG, else ./frontdesk.toml if it exists. A secret comes,
    after a flag, from its environment variable, an inherited descriptor (`<ENV>_FD`, read and
    closed), a file (`<ENV>_FILE`) or systemd's credential; a descriptor of a secret named in
    `unread_secrets` is kept open and unread (Settings.secret_descriptor) instead.
    """
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    environ = os.environ if environ is None else environ
    file_values, file_name = _read_file(config_file or environ.get("FRONTDESK_CONFIG"))
    unknown = sorted(set(flags) - set(KNOBS_BY_NAME) - set(RENAMED))
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
    values, sources, secret_fds = {}, {}, {}
    deprecations: list[tuple[str, str]] = []
    for knob in KNOBS:
        secret_file = _secret_file(knob, environ) if knob.secret else None
        old = OLD_NAMES.get(knob.name)
        old_env = "FRONTDESK_" + old.upper() if old else None
        if knob.name in flags:
            raw, source = flags[knob.name], "command line"
        elif old is not None and old in flags:
            raw, source = flags[old], "command line"
            deprecations.append((old, f"command line {old}"))
        elif knob.env_name in environ:
            raw, source = environ[knob.env_name], f"environment {knob.env_name}"
        elif old_env is not None and old_env in environ:
            raw, source = environ[old_env], f"environment {old_env}"
            deprecations.append((old, source))
        elif knob.secret and environ.get(knob.fd_env_name):
            source = f"environment {knob.fd_env_name}"
            fd = _descriptor(environ[knob.fd_env_name], source)
            if knob.name in unread_secrets:
                values[knob.name], sources[knob.name], secret_fds[knob.name] = "", source, fd
                continue
            raw = _read_descriptor(fd, source)
        elif secret_file is not None:
            path, source = secret_file
            raw = _read_secret(path, source)
        elif knob.name in file_values:
            raw, source = file_values[knob.name], file_name
        elif old is not None and old in file_values:
            raw, source = file_values[old], file_name
            deprecations.append((old, f"{file_name} {old}"))
        else:
            values[knob.name], sources[knob.name] = _convert(knob, knob.default, "default"), "default"
            continue
        values[knob.name], sources[knob.name] = _convert(knob, raw, source), source
    check_combinations(values, sources)
    return Settings(values, sources, secret_fds, tuple(deprecations))


def _secret_file(knob: Knob, environ) -> tuple[str, str] | None:
    """(path, source) of the file holding a secret: `<ENV>_FILE`, else systemd's credential
    `$CREDENTIALS_DIRECTORY/<credential>` when it exists; None when neither gives one."""
    if environ.get(knob.file_env_name):
        return environ[knob.file_env_name], f"environment {knob.file_env_name}"
    folder = environ.get(CREDENTIALS_DIRECTORY)
    if folder and knob.credential and os.path.exists(os.path.join(folder, knob.credential)):
        return os.path.join(folder, knob.credential), f"systemd credential {knob.credential}"
    return None


def _read_secret(path: str, source: str) -> str:
    """A secret file's text without its trailing newline; errors name the file, never its text."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{source}: {path} is not UTF-8 text") from None


def _descriptor(text: str, source: str) -> int:
    """The open descriptor an `<ENV>_FD` names, made non-inheritable (only a child it is handed to
    explicitly gets it)."""
    try:
        fd = int(text)
        if fd < 3:
            raise ValueError
        os.set_inheritable(fd, False)
    except ValueError:
        raise ConfigError(f"{source}: {text!r} is not the number of a descriptor beyond standard input, "
                          f"output and error") from None
    except OSError as exc:
        raise ConfigError(f"{source}: descriptor {text} is not open ({exc.strerror})") from None
    return fd


def _read_descriptor(fd: int, source: str) -> str:
    """A secret's text from a descriptor of a file (read from its start, so the same descriptor
    serves every child it is handed to), which is then closed; errors never show the text."""
    data = bytearray()
    try:
        while chunk := os.pread(fd, 65536, len(data)):
            data += chunk
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read descriptor {fd} ({exc.strerror}): it must be a file, "
                          f"not a pipe or a socket") from None
    finally:
        os.close(fd)
    try:
        return data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise ConfigError(f"{source}: descriptor {fd} does not hold UTF-8 text") from None


def _read_file(path: str | None) -> tuple[dict[str, Any], str]:
    explicit = path is not None
    path = path or DEFAULT_CONFIG_FILE
    if not os.path.exists(path):
        if explicit:
            raise ConfigError(f"configuration file {path} does not exist")
        return {}, path
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"configuration file {path} cannot be read: {exc.strerror}") from None
    flat = {}
    for key, value in data.items():
        # `[frontdesk]` table or top-level keys are both accepted.
        if key == "frontdesk" and isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    unknown = sorted(set(flat) - set(KNOBS_BY_NAME) - set(RENAMED))
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s): {', '.join(unknown)}")
    return flat, path


def sandbox_credentials(settings: Settings) -> tuple[str, str]:
    """(channel secret, access token) for talking to the sandbox: the configured ones, else the
    documented sandbox values."""
    return (settings.channel_secret or SANDBOX_CHANNEL_SECRET,
            settings.channel_access_token or SANDBOX_ACCESS_TOKEN)


def default_handler_command() -> list[str]:
    """The bundled echo example, run with this interpreter."""
    import sys

    return [sys.executable, "-m", "frontdesk.handlers.examples.echo"]


def handler_command(settings: Settings) -> list[str]:
    import shlex

    return shlex.split(settings.handler) if settings.handler.strip() else default_handler_command()


def markdown_table() -> str:
    """The configuration reference, for the README."""
    rows = ["| key | environment | default | meaning |", "| --- | --- | --- | --- |"]
    for knob in KNOBS:
        default = "(required, no default)" if knob.secret else f"`{knob.default}`"
        rows.append(f"| `{knob.name}` | `{knob.env_name}` | {default} | {knob.help.replace('|', chr(92) + '|')} |")
    return "\n".join(rows)

