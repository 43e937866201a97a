"""Small shared test tools: waiting on conditions (never sleeping blindly), ports, signing."""
from __future__ import annotations

import base64
import hashlib
import hmac
import socket
import time


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.01, message: str = ""):
    """Return predicate()'s first truthy value; fail the test if none comes within timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout}s: {message or predicate}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sign(body: bytes, secret: str) -> str:
    """x-line-signature for a body."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
