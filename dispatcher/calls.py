"""What a handler's API call becomes on its way to the rate limiter (SPEC.md sections 8 and 15).

A request `[0, msgid, method, [event_id, args]]` is numbered per event delivery (1, 2, 3 …) and
given the event's `received_at`, `source` and `replyToken`, which the rate limiter's journal and
reply rules need; with `api_trace` (the sandbox's inspector) also who had the event and since when.
A call that cannot be relayed is refused with the reason, answered to the handler at once.
"""
from __future__ import annotations

from typing import Callable

from frontdesk.protocol import rpc

from .deliveries import Delivery


class CallRefused(Exception):
    """The call is not relayed; the text is the error answered to the handler."""


def call_params(request: rpc.Request, delivery_for: Callable[[object], Delivery | None], max_calls: int,
                trace: Callable[[Delivery], dict] | None = None) -> tuple[list, Delivery | None]:
    """The `call` request's params for the rate limiter, and the delivery the call is made for.

    Args:
        request: the handler's API request (its method already known to be an API method).
        delivery_for: the handler's lookup of an event id among the events it holds.
        max_calls: max_calls_per_event; a delivery's call past it is refused.
        trace: with api_trace, the fields a delivery's calls carry (`handler`, `handed_at`).

    Returns:
        ([call map, args], delivery or None for a call made for no event); the delivery's call
        count is advanced.

    Raises:
        CallRefused: params not `[event id or nil, args map]`, an event this handler does not
            hold, or its call number past max_calls.
    """
    params = request.params
    if len(params) != 2 or not isinstance(params[1], dict):
        raise CallRefused(f"{request.method}: params must be [event id or nil, args map]")
    event_id, call_no, context, delivery = params[0], None, {}, None
    if event_id is not None:
        delivery = delivery_for(event_id)
        if delivery is None:
            raise CallRefused(f"{request.method}: event {str(event_id)[:130]!r} is not in flight on this handler")
        if delivery.calls >= max_calls:
            raise CallRefused(f"{request.method}: event {event_id} already made max_calls_per_event="
                              f"{max_calls} API calls; this one was not made")
        delivery.calls += 1
        call_no = delivery.calls
        o = delivery.doc["o"]
        context = {"received_at": o["received_at"], "source": o["event"].get("source"),
                   "reply_token": o["event"].get("replyToken")}
        if trace is not None:   # for the sandbox's inspector: who had the event, since when
            context.update(trace(delivery))
    return [{"event_id": event_id, "call_no": call_no, "method": request.method, "context": context},
            params[1]], delivery
