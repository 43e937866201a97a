"""Everything that crosses a process boundary: frames, rpc messages, the webhook and its event
documents, settings, and how every frontdesk process starts, logs and serves HTTP."""

import functools


@functools.cache
def version() -> str:
    """The installed frontdesk's version (setup.cfg's `version`), read when first asked for:
    importing importlib.metadata costs ~25 ms of CPU, and every frontdesk process imports this."""
    from importlib import metadata
    try:
        return metadata.version("frontdesk")
    except metadata.PackageNotFoundError:   # imported from a source tree that was never installed
        return "unknown"


PROTOCOL_VERSION = 1
"""The handler wire protocol version this frontdesk speaks (protocol/SPEC.md)."""
