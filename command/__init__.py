"""frontdesk: a LINE bot server that survives floods of messages.

A handler (your bot) is written with the SDK re-exported here:

    from frontdesk import Bot, Nack

The rest of the package is the `frontdesk` command and its processes: `frontdesk.receiver`,
`frontdesk.store`, `frontdesk.dispatcher`, `frontdesk.ratelimiter`, `frontdesk.sandbox`,
`frontdesk.handlers`, `frontdesk.protocol` and `frontdesk.bench` (README, "Layout").
"""
from frontdesk.handlers.sdk import Api, ApiError, Bot, Event, Nack
from frontdesk.protocol import VERSION as __version__

__all__ = ["Api", "ApiError", "Bot", "Event", "Nack", "__version__"]
