"""A WSGI app (PEP 3333) answering requests of frontdesk's HTTP server (protocol/http_server.py),
called inline on the server's event loop: the sandbox's falcon app is served this way.

One call builds the environ from the parsed request (the body already read and de-chunked),
runs the app, and collects what it passed to start_response and the body it returned. The app
runs on the loop's thread, so it must not block; whoever serves it sends the calls that may
block to threads (run_in_executor) and calls this there.

A WSGI app has no way to close its connection without answering; setting
`environ[CLOSE_WITHOUT_ANSWER]` to true asks for exactly that.
"""
from __future__ import annotations

import io
import logging
import sys
from urllib.parse import unquote_to_bytes

from .http_server import Request, Response, error_body

# The environ key an app sets to have the connection closed with no answer at all.
CLOSE_WITHOUT_ANSWER = "frontdesk.close_without_answer"

# Request headers that are not passed on as HTTP_*: the body is whole and de-chunked.
_FRAMING = frozenset({"content-length", "content-type", "transfer-encoding"})


class WsgiBridge:
    """`bridge(request) -> Response` for one WSGI app."""

    def __init__(self, app, address: str, log: logging.Logger):
        self.app = app
        self.log = log
        host, _, port = address.rpartition(":")
        self.base = {"SCRIPT_NAME": "", "SERVER_NAME": host or "0.0.0.0", "SERVER_PORT": port,
                     "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
                     "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False}

    def environ(self, request: Request) -> dict:
        path = request.path
        environ = {f"HTTP_{name.upper().replace('-', '_')}": value
                   for name, value in request.headers.items() if name not in _FRAMING}
        environ.update(self.base)
        environ.update({
            "REQUEST_METHOD": request.method,
            # PEP 3333: the path percent-decoded, its bytes as a latin-1 str
            "PATH_INFO": unquote_to_bytes(path).decode("latin-1") if "%" in path else path,
            "QUERY_STRING": request.query,
            "SERVER_PROTOCOL": request.version,
            "CONTENT_TYPE": request.headers.get("content-type", ""),
            "CONTENT_LENGTH": str(len(request.body)) if request.body else "",
            "wsgi.input": io.BytesIO(request.body),
        })
        return environ

    def __call__(self, request: Request) -> Response:
        environ = self.environ(request)
        started: list = []

        def start_response(status: str, headers: list, exc_info=None):
            if started and exc_info is None:
                raise AssertionError("start_response called twice without exc_info")
            started[:] = [status, headers]
            return _no_write

        try:
            result = self.app(environ, start_response)
            try:
                body = b"".join(result)
            finally:
                if hasattr(result, "close"):
                    result.close()
        except Exception:   # a bug in the app costs one request, not the process
            self.log.exception("event=request_failed path=%s", request.path)
            return Response(500, error_body(500, "internal error"))
        if environ.get(CLOSE_WITHOUT_ANSWER):
            return Response(0, close_without_answer=True)
        status, headers = started
        content_type = None
        others: dict[str, str] = {}
        for name, value in headers:
            lower = name.lower()
            if lower == "content-type":
                content_type = value
            elif lower != "content-length":   # the server writes the body's own length
                others[name] = f"{others[name]}, {value}" if name in others else value
        return Response(int(status[:3]), body, content_type, others)


def _no_write(data: bytes) -> None:
    raise NotImplementedError("the write() callable of start_response is not supported; return the body")
