"""The Python handler SDK (`handlers.sdk`), the conformance kit and example handlers."""
