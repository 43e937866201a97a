"""Serving a WSGI app with waitress, for the compare suite's SDK baseline (bench/baseline.py),
deployed as such a bot would be. frontdesk's own processes run on its own server
(protocol/http_server.py)."""
from __future__ import annotations

import logging
import signal

from waitress.channel import HTTPChannel


def stop_waitress_on_signals(logger: logging.Logger) -> dict:
    """SIGTERM/SIGINT end waitress's run(), which catches SystemExit and lets its workers finish
    their current requests; a second signal ends the process at once. Returns the old handlers."""
    def stop(signum, frame):
        signal.signal(signum, signal.SIG_DFL)
        logger.info("event=stopping signal=%s", signal.Signals(signum).name)
        raise SystemExit(0)

    return {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}


class QuietChannel(HTTPChannel):
    """Waitress's connection, without a busy loop in its I/O thread.

    A worker thread sends its own (small) response while it holds the connection's output
    lock. Waitress's I/O thread meanwhile finds the connection writable, fails to take the
    lock, and polls again at once — spinning with the GIL the worker needs to finish. With
    group commit many workers finish together, and the spin cost the receiver two thirds of
    its throughput (measured: ~500 -> ~1,450 req/s). While a request is being served its
    worker flushes, and wakes the I/O thread when done, so nothing is lost by not polling;
    above the high watermark (a worker waiting for the I/O thread to drain) it polls as before.
    """

    def writable(self):
        if (self.requests and not (self.will_close or self.close_when_flushed)
                and self.total_outbufs_len < self.adj.outbuf_high_watermark):
            return False
        return super().writable()
