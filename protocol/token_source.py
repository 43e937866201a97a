"""Which secrets the rate limiter needs for the configured `token_source` (docs/tokens.md), so that
`frontdesk run` and the dispatcher hand it those and no others, and a missing one stops the start
with its name."""
from __future__ import annotations

from .config import MAX_TOKEN_LIFETIME_S, ConfigError, Settings

RATELIMITER_SECRETS = {
    "fixed": ("channel_access_token",),
    "stateless": ("channel_secret",),                       # issues with the channel ID and secret
    "v2.1": ("channel_secret", "channel_private_key"),      # signs with the key; revokes with the secret
}


def ratelimiter_secrets(settings: Settings) -> tuple[str, ...]:
    """The secrets the rate limiter gets for `settings.token_source`."""
    return RATELIMITER_SECRETS[settings.token_source]


def require_token_source(settings: Settings) -> None:
    """Fail naming every setting the token source lacks (never a value)."""
    settings.require_secrets(*ratelimiter_secrets(settings))
    needed = {"stateless": ("channel_id",), "v2.1": ("channel_id", "channel_key_id")}.get(settings.token_source, ())
    missing = [name for name in needed if not getattr(settings, name)]
    if missing:
        raise ConfigError(f"token_source={settings.token_source} needs {', '.join(missing)}")
    if settings.token_source == "v2.1" and settings.token_lifetime_s > MAX_TOKEN_LIFETIME_S:
        raise ConfigError(f"token_lifetime_s={settings.token_lifetime_s} is above LINE's limit for a v2.1 "
                          f"token, {MAX_TOKEN_LIFETIME_S} (30 days)")
