"""The rate limiter's requests in-process: a `call` with a body of bytes (a rich menu image), its
journal round trip, and the trace header of api_trace."""
from __future__ import annotations

import json

import pytest

from frontdesk.ratelimiter.calls import Call
from frontdesk.ratelimiter.line_api import ArgsError, HttpRequest, build_request, trace_header

IMAGE = b"\x89PNG\r\n\x1a\n\x00binary\xff"


def test_a_call_with_a_body_of_bytes_keeps_its_bytes_and_type_through_the_journal():
    request = build_request("call", {"method": "POST", "path": "/v2/bot/richmenu/rm-1/content", "body": IMAGE,
                                     "content_type": "image/png", "data_api": True}, None)
    assert request.body == IMAGE and request.content_type == "image/png" and request.data_api
    journaled = json.loads(json.dumps(request.to_journal()))     # the store keeps JSON
    assert HttpRequest.from_journal(journaled) == request


@pytest.mark.parametrize("content_type", [None, "png", "image/png\r\nX-Injected: 1", "image/pñg", 5])
def test_a_body_of_bytes_without_a_plain_media_type_is_refused_naming_it(content_type):
    """The type goes into a header line: nothing but type/subtype may reach it."""
    with pytest.raises(ArgsError, match="content_type"):
        build_request("call", {"method": "POST", "path": "/v2/bot/richmenu/rm-1/content", "body": IMAGE,
                               "content_type": content_type}, None)


def test_a_json_body_is_journaled_as_before():
    request = build_request("call", {"method": "POST", "path": "/v2/bot/richmenu", "body": {"name": "m"}}, None)
    assert request.content_type is None
    assert request.to_journal()["body"] == {"name": "m"} and "body_base64" not in request.to_journal()


def test_the_trace_header_names_each_event_its_handler_and_times():
    context = {"handler": "handler-2", "received_at": 1000, "handed_at": 1004}
    calls = [Call("event-1", 2, "reply", {}, context, None), Call(None, None, "profile", {}, {}, None)]
    assert json.loads(trace_header(calls)) == [
        {"event": "event-1", "call": 2, "handler": "handler-2", "received_at": 1000, "handed_at": 1004}]
    assert trace_header([Call(None, None, "profile", {}, {}, None)]) is None
    many = [Call(f"e{n}", 1, "push", {}, context, None) for n in range(50)]
    assert len(json.loads(trace_header(many))) == 10    # a batch names its first ten members
    named = [Call("event-é", 1, "reply", {}, dict(context, handler="bot-ü"), None)]
    header = trace_header(named)   # an HTTP header: ASCII, whatever the names hold
    assert header.isascii() and json.loads(header)[0]["handler"] == "bot-ü"
