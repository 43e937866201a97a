"""ratelimiter/http.py's TLS context: one per process. Building one loads the system's CA
certificates (~25 ms of CPU, ~1.7 MB); a rate limiter opens two connections per sender."""
from __future__ import annotations

from frontdesk.ratelimiter.http import HttpConnection, tls_context


def test_every_https_connection_of_the_process_shares_one_tls_context():
    api = HttpConnection("https://api.line.me", {}, 1.0, 1.0)
    data = HttpConnection("https://api-data.line.me", {}, 1.0, 1.0)
    assert api._ssl is data._ssl is tls_context()
    assert HttpConnection("http://127.0.0.1:9", {}, 1.0, 1.0)._ssl is None
