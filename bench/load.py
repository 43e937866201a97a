"""The open-loop load generator of `frontdesk bench`: signed webhook bodies at a constant rate."""
from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass
from typing import Callable

from frontdesk.sandbox.webhooks import WebhookConnection, signature


@dataclass
class Posted:
    """One webhook request: when it was due, sent and answered (monotonic seconds), and how."""
    index: int
    due: float
    sent: float
    answered: float
    status: int          # HTTP status; 0 = no answer (connection refused, reset or timeout)


class WebhookSender:
    """Posts signed bodies at a constant rate over keep-alive connections, open loop.

    Request k is due at start + k / rate whatever happened to earlier ones: a slow receiver
    shows up as latency (measured from the due time), not as a lower offered rate. Each
    connection has its own thread; a thread takes the next request number, waits until it is
    due, builds the body (so event timestamps and reply tokens are fresh) and posts it.
    """

    def __init__(self, url: str, secret: str, connections: int = 8, timeout: float = 10.0):
        if connections < 1:
            raise ValueError("connections must be at least 1")
        self.url, self.secret, self.timeout = url, secret, timeout
        self.connections = connections
        self.stop = threading.Event()
        self.started_mono = self.started_epoch = 0.0
        self._done = [0] * connections

    @property
    def done(self) -> int:
        """Requests answered (or failed) so far."""
        return sum(self._done)

    def epoch_ms(self, mono: float) -> float:
        """A monotonic time of this run as epoch milliseconds (the sandbox records epoch ms)."""
        return (self.started_epoch + (mono - self.started_mono)) * 1000.0

    def run(self, requests: int, rate: float, build: Callable[[int], bytes]) -> list[Posted]:
        """Post `requests` bodies, `build(k)` being the k-th, at `rate` requests per second."""
        if rate <= 0:
            raise ValueError("rate must be positive")
        results: list[Posted | None] = [None] * requests
        numbers = itertools.count()
        self.started_epoch, self.started_mono = time.time(), time.monotonic()

        def work(slot: int) -> None:
            connection = WebhookConnection(self.url, self.timeout)
            try:
                for k in numbers:
                    if k >= requests or self.stop.is_set():
                        return
                    due = self.started_mono + k / rate
                    delay = due - time.monotonic()
                    if delay > 0 and self.stop.wait(delay):
                        return
                    body = build(k)
                    sent = time.monotonic()
                    status = connection.post(body, signature(body, self.secret))
                    results[k] = Posted(k, due, sent, time.monotonic(), status)
                    self._done[slot] += 1
            finally:
                connection.close()

        threads = [threading.Thread(target=work, args=(slot,), name=f"webhook-sender-{slot}", daemon=True)
                   for slot in range(min(self.connections, requests))]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                thread.join()
        finally:
            self.stop.set()
        return [r for r in results if r is not None]
