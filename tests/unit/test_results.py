"""What a handler gets for a call LINE accepted (ratelimiter/results.py), method by method."""
from __future__ import annotations

from frontdesk.ratelimiter.calls import Call, Send
from frontdesk.ratelimiter.line_api import HttpResponse, build_request
from frontdesk.ratelimiter.results import fetched_profile, result_of
from tests.unit.limiter_parts import TEXT, json_answer


def send(method: str, args: dict, sent_as: str | None = None, key: str | None = "k") -> Send:
    return Send(build_request(method, args, key), [Call("ev", 1, method, args, {}, None)], sent_as or method)


def test_a_message_method_gets_lines_body_and_how_it_went():
    body = {"sentMessages": [{"id": "1", "quoteToken": "q"}]}
    assert result_of(send("push", {"to": "U1", "messages": TEXT}), json_answer(200, body)) == dict(body, sent_as="push")
    multicast = send("push", {"to": "U1", "messages": TEXT}, sent_as="multicast")
    assert result_of(multicast, json_answer(200))["sent_as"] == "multicast"
    assert result_of(send("broadcast", {"messages": TEXT}), json_answer(200)) == {}


def test_a_repeat_line_dropped_gets_the_accepted_requests_id_and_not_lines_message():
    answer = json_answer(409, {"message": "The retry key is already accepted", "sentMessages": [{"id": "1"}]},
                         {"x-line-accepted-request-id": "accepted"})
    result = result_of(send("push", {"to": "U1", "messages": TEXT}), answer)
    assert result == {"sentMessages": [{"id": "1"}], "request_id": "accepted", "sent_as": "push"}


def test_a_narrowcast_gets_its_request_id_to_follow_its_progress():
    answer = json_answer(202, {}, {"x-line-request-id": "req-9"})
    assert result_of(send("narrowcast", {"messages": TEXT}), answer) == {"request_id": "req-9"}
    assert "request_id" not in result_of(send("broadcast", {"messages": TEXT}), answer)


def test_a_generic_call_gets_the_status_and_the_body_as_they_came():
    made = send("call", {"method": "GET", "path": "/v2/bot/info"})
    assert result_of(made, json_answer(200, {"displayName": "bot"})) == {"status": 200, "body": {"displayName": "bot"}}
    assert fetched_profile(send("call", {"method": "GET", "path": "/v2/bot/profile/U1"}),
                           json_answer(200, {"userId": "U1"})) is None      # not the profile method: not cached


def test_content_gets_its_bytes_and_type():
    answer = HttpResponse(200, b"\x89PNG", "image/png", {})
    assert result_of(send("content", {"messageId": "1"}), answer) == {"content_type": "image/png", "data": b"\x89PNG"}


def test_a_fetched_profile_says_it_was_not_cached_and_is_kept():
    made = send("profile", {"userId": "U1"})
    answer = json_answer(200, {"userId": "U1", "displayName": "One"})
    assert result_of(made, answer) == {"userId": "U1", "displayName": "One", "cached": False}
    assert fetched_profile(made, answer) == ("U1", {"userId": "U1", "displayName": "One"})
    assert fetched_profile(made, json_answer(200, {"displayName": "One"}))[0] == "U1"   # the id from the path
    assert fetched_profile(send("push", {"to": "U1", "messages": TEXT}), answer) is None
