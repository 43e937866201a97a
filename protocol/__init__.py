"""Everything that crosses a process boundary: frames, rpc messages, event documents, settings."""

PROTOCOL_VERSION = 1
