"""frontdesk: a LINE bot server that survives floods of messages.

A handler (your bot) is written with the SDK re-exported here:

    from frontdesk import Bot, Nack

The rest of the package is the `frontdesk` command and its processes: `frontdesk.receiver`,
`frontdesk.store`, `frontdesk.dispatcher`, `frontdesk.ratelimiter`, `frontdesk.sandbox`,
`frontdesk.handlers`, `frontdesk.protocol` and `frontdesk.bench` (README, "Layout").
"""
from frontdesk.handlers.sdk import Api, ApiError, Bot, Event, Nack
from frontdesk.protocol import version

__all__ = ["Api", "ApiError", "Bot", "Event", "Nack", "__version__"]


def __getattr__(name: str):
    if name == "__version__":   # read when asked for (protocol.version)
        return version()
    raise AttributeError(f"module 'frontdesk' has no attribute {name!r}")
