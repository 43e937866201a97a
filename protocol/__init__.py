"""Everything that crosses a process boundary: frames, rpc messages, the webhook and its event
documents, settings, and how every frontdesk process starts, logs and serves HTTP."""

VERSION = "0.1.0"
"""The version of the frontdesk distribution (setup.cfg reads it from here)."""

PROTOCOL_VERSION = 1
"""The handler wire protocol version this frontdesk speaks (protocol/SPEC.md)."""
