"""What a handler gets back for a call LINE accepted (SPEC.md section 8, the result column).

By default LINE's JSON body as a map. The endpoint table adds `sent_as` where a call may go
another way than asked (a reply as a push, a push in a multicast) and `request_id` where the
handler follows the request's progress (narrowcast); a 409 to a retry key (a repeat LINE dropped)
carries the accepted request's id. `call` answers the status and body as they came, `content` the
bytes and their type; a fetched `profile` says it was not cached.
"""
from __future__ import annotations

from frontdesk.protocol.line_endpoints import GENERIC_CALL, TABLE, EndpointTable

from .line_api import HttpResponse

CONTENT, PROFILE = "content", "profile"


def result_of(send, response: HttpResponse, table: EndpointTable = TABLE):
    """The result for the calls of `send` (calls.Send) from LINE's 2xx (or 409) `response`."""
    request, body = send.request, response.body
    if request.data_api and request.endpoint == CONTENT:
        return {"content_type": response.content_type, "data": body}
    if isinstance(body, dict) and "message" in body and response.status == 409:
        body = {k: v for k, v in body.items() if k != "message"}
    result = dict(body) if isinstance(body, dict) else {"body": body}
    if send.calls and send.calls[0].method == GENERIC_CALL:
        return {"status": response.status, "body": body}
    if request.endpoint == PROFILE:
        return dict(result, cached=False)
    method = table.method(send.sent_as)
    request_id = response.headers.get("x-line-accepted-request-id") or response.headers.get("x-line-request-id")
    if request_id and (response.status == 409 or (method is not None and method.request_id)):
        result["request_id"] = request_id
    if method is not None and method.tells_sent_as:
        result["sent_as"] = send.sent_as
    return result


def fetched_profile(send, response: HttpResponse) -> tuple[str, dict] | None:
    """(user id, profile) when `send` fetched a profile LINE gave (for the profile cache)."""
    if send.request.endpoint != PROFILE or (send.calls and send.calls[0].method == GENERIC_CALL):
        return None
    body = response.body
    profile = dict(body) if isinstance(body, dict) else {"body": body}
    return profile.get("userId", send.request.path.rsplit("/", 1)[-1]), profile
