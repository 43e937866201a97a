"""Everything that crosses a process boundary: frames, rpc messages, the webhook and its event
documents, settings, and how every frontdesk process starts, logs and serves HTTP."""

from importlib import metadata

try:
    VERSION = metadata.version("frontdesk")
    """The installed frontdesk's version (setup.cfg's `version`)."""
except metadata.PackageNotFoundError:   # imported from a source tree that was never installed
    VERSION = "unknown"

PROTOCOL_VERSION = 1
"""The handler wire protocol version this frontdesk speaks (protocol/SPEC.md)."""
