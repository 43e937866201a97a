"""The Python handler SDK (`frontdesk.handlers.sdk`, re-exported as `from frontdesk import Bot,
Nack`), the conformance kit and the example handlers."""
