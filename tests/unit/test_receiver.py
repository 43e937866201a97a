"""The receiver's routes in-process: Requests built here, answered by `Receiver` over a real SQLite
store in a temporary folder (no HTTP, no process). Each refusal is checked against a request that
fails every later check too, so the order (path, method, size, signature, JSON, events, store
within the ack budget) is what is tested, not only the statuses. Times are time.monotonic's: a
request's arrival and the ack budget's deadline are the clock the store's writer reads too."""
from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest

from frontdesk.protocol.coalesce import WorkRate
from frontdesk.protocol.config import load
from frontdesk.protocol.events import webhook_signature
from frontdesk.protocol.http_server import Request, Response
from frontdesk.receiver.app import Receiver
from frontdesk.receiver.intake import Rejected, check_webhook
from frontdesk.store import open_store

SECRET = "unit-channel-secret"
MAX_BODY = 4096


def make_event(**changes) -> dict:
    return {"type": "message", "mode": "active", "timestamp": 1_700_000_000_000,
            "webhookEventId": uuid.uuid4().hex, "deliveryContext": {"isRedelivery": False},
            "source": {"type": "user", "userId": "U" + uuid.uuid4().hex}, "replyToken": uuid.uuid4().hex,
            "message": {"type": "text", "id": "1", "text": "hello"}, **changes}


def make_body(*events: dict) -> bytes:
    return json.dumps({"destination": "Ubot", "events": list(events)}).encode()


def signed(body: bytes, secret: str = SECRET) -> str:
    return webhook_signature(secret.encode(), body).decode()


def request(body: bytes = b"", method: str = "POST", path: str = "/callback", signature: str | None = "sign",
            arrived: float | None = None) -> Request:
    headers = {}
    if signature == "sign":
        signature = signed(body)
    if signature is not None:
        headers["x-line-signature"] = signature
    return Request(method, path, headers, body, time.monotonic() if arrived is None else arrived)


@pytest.fixture
def store(tmp_path):
    opened = open_store(f"sqlite:///{tmp_path / 'fd.db'}")
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def receiver(store):
    settings = load(environ={"LINE_CHANNEL_SECRET": SECRET, "FRONTDESK_MAX_BODY_BYTES": str(MAX_BODY)})
    return Receiver(settings, store)


def stored(store) -> int:
    return sum(store.stats()[state] for state in ("pending", "in_flight", "done", "dead"))


_loops: dict[int, asyncio.AbstractEventLoop] = {}


def answer(receiver: Receiver, req: Request) -> Response:
    """The route's answer; one that waits for the store is awaited on the receiver's event loop
    (one per receiver, as in the process; closed with the test)."""
    async def awaited():
        answered = receiver(req)
        return answered if isinstance(answered, Response) else await answered
    loop = _loops.setdefault(id(receiver), asyncio.new_event_loop())
    return loop.run_until_complete(awaited())


@pytest.fixture(autouse=True)
def _close_loops():
    yield
    while _loops:
        _loops.popitem()[1].close()


def description(response: Response) -> str:
    return json.loads(response.body)["description"]


OVERSIZE_UNSIGNED_GARBAGE = b"{" * (MAX_BODY + 1)


# --- the order of the checks ---------------------------------------------------------------------

def test_an_unknown_path_is_404_whatever_else_is_wrong(receiver, store):
    response = answer(receiver, request(OVERSIZE_UNSIGNED_GARBAGE, method="PUT", path="/webhook", signature=None))
    assert response.status == 404 and "/webhook" in description(response)
    assert stored(store) == 0


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "HEAD"])
def test_another_method_on_the_callback_is_405_before_its_body_is_looked_at(receiver, method):
    response = answer(receiver, request(OVERSIZE_UNSIGNED_GARBAGE, method=method, signature=None))
    assert response.status == 405 and method in description(response)


def test_a_body_over_the_limit_is_413_before_its_signature_is_checked(receiver, store):
    response = answer(receiver, request(OVERSIZE_UNSIGNED_GARBAGE, signature=None))
    assert response.status == 413 and description(response) == f"body of {MAX_BODY + 1} bytes exceeds the limit of {MAX_BODY}"
    assert stored(store) == 0


def test_a_body_at_the_limit_goes_on_to_the_signature(receiver):
    response = answer(receiver, request(b"{" * MAX_BODY, signature=None))
    assert response.status == 401


@pytest.mark.parametrize("signature, reason", [
    (None, "the x-line-signature header is missing"),
    ("", "the x-line-signature header is missing"),
    ("not-base64!", "x-line-signature does not match the body"),
    (signed(b"other bytes"), "x-line-signature does not match the body"),
])
def test_a_missing_or_wrong_signature_is_401_before_the_body_is_parsed(receiver, store, signature, reason):
    response = answer(receiver, request(b"not json at all", signature=signature))
    assert response.status == 401 and description(response) == reason
    assert stored(store) == 0


def test_a_signature_made_with_another_secret_is_401(receiver):
    body = make_body(make_event())
    assert answer(receiver, request(body, signature=signed(body, "another-secret"))).status == 401


def test_a_signed_body_that_is_not_json_is_400_before_its_events_are_looked_at(receiver, store):
    response = answer(receiver, request(b'{"destination": "U", "events": [{"no": "type"}'))
    assert response.status == 400 and "not valid JSON" in description(response)
    assert stored(store) == 0


def test_a_signed_json_body_with_a_bad_event_is_400_naming_it(receiver, store):
    body = make_body(make_event(), {k: v for k, v in make_event().items() if k != "type"})
    response = answer(receiver, request(body))
    assert response.status == 400 and description(response) == "events[1].type must be a non-empty string"
    assert stored(store) == 0      # one bad event refuses the whole body


def test_a_valid_body_is_stored_then_answered_200(receiver, store):
    events = [make_event(), make_event()]
    response = answer(receiver, request(make_body(*events)))
    assert (response.status, response.body) == (200, b'{"status":"ok"}')
    assert stored(store) == 2
    ids = {doc["o"]["_id"] for doc in store.claim("unit", 10, 60.0)}
    assert ids == {event["webhookEventId"] for event in events}


def test_empty_events_are_a_connectivity_check_answered_at_once_without_storing(receiver, store):
    response = receiver(request(make_body()))          # a Response, not a future: nothing to wait for
    assert isinstance(response, Response) and response.status == 200
    assert stored(store) == 0


def test_a_webhook_read_after_its_ack_budget_is_503_and_nothing_is_stored(receiver, store):
    late = request(make_body(make_event()), arrived=time.monotonic() - 1.0)     # ack_budget_s is 1.0
    response = answer(receiver, late)
    assert response.status == 503 and description(response) == (
        "queued past the ack budget before it could be stored")
    assert stored(store) == 0


def test_a_store_that_cannot_take_the_append_is_503_without_server_details(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'closed.db'}")
    store.close()
    settings = load(environ={"LINE_CHANNEL_SECRET": SECRET})
    response = answer(Receiver(settings, store), request(make_body(make_event())))
    assert response.status == 503 and str(tmp_path) not in description(response)


def test_a_redelivery_is_acknowledged_and_stored_once(receiver, store):
    event = make_event()
    assert answer(receiver, request(make_body(event))).status == 200
    again = make_event(**{**event, "deliveryContext": {"isRedelivery": True}})
    assert answer(receiver, request(make_body(again))).status == 200
    assert stored(store) == 1
    assert receiver.metrics.duplicates.value() == 1 and receiver.metrics.events_stored.value() == 1


# --- what a signed body may hold (what a handler can be given: docs/receiver.md) -------------------

def _nested(levels: int):
    value: object = 1
    for _ in range(levels):
        value = [value]
    return value


def _with(**extra) -> bytes:
    return make_body(make_event(**extra))


REFUSED_BODIES = {
    "JSON not an object": (b"[1]", "must be a JSON object"),
    "events not a list": (json.dumps({"destination": "U", "events": {"a": 1}}).encode(), "`events` must be a list"),
    "destination not a string": (json.dumps({"destination": 1, "events": []}).encode(), "`destination`"),
    "event without webhookEventId": (make_body({k: v for k, v in make_event().items() if k != "webhookEventId"}),
                                     "webhookEventId"),
    "timestamp not an integer": (_with(timestamp="soon"), "timestamp must be an integer"),
    "integer beyond 64 bits": (_with(timestamp=10**30), "integer outside"),
    "integer below int64": (_with(x=-2**63 - 1), "integer outside"),
    "nested 65 deep": (_with(x=_nested(65 - 3)), "nested deeper than 64"),
    "nested 1,500 deep": (_with(x="X").replace(b'"X"', b"[" * 1500 + b"]" * 1500), "nested deeper than 64"),
    "NaN": (_with(x=float("nan")), "NaN"),
    "NaN beside a number of 19 digits": (_with(x=float("nan"), low=-2**63), "NaN"),
    "-Infinity": (_with(x=float("-inf")), "-Infinity"),
    "lone surrogate": (make_body(make_event(message={"type": "text", "id": "1", "text": "\ud800 alone"})),
                       "lone surrogate"),
    "UTF-16 body": (make_body(make_event()).decode().encode("utf-16"), "not UTF-8"),
    "UTF-32 body without BOM": (make_body(make_event()).decode().encode("utf-32-le"), "JSON"),
}


@pytest.mark.parametrize("case", sorted(REFUSED_BODIES))
def test_a_signed_body_a_handler_could_not_be_given_is_400_naming_why(case):
    body, words = REFUSED_BODIES[case]
    with pytest.raises(Rejected) as refused:
        check_webhook(request(body), SECRET.encode(), 1 << 20)
    assert refused.value.status == 400 and words in refused.value.reason


def test_the_deepest_and_widest_carriable_values_are_accepted():
    """The bounds are exact: 64 levels, -2**63 and 2**64 - 1, surrogate pairs are fine."""
    event = make_event(x=_nested(64 - 3), low=-2**63, high=2**64 - 1,
                       message={"type": "text", "id": "1", "text": "\U0001F600 is a pair"})
    destination, events = check_webhook(request(make_body(event)), SECRET.encode(), 1 << 20)
    assert destination == "Ubot" and events == [event]


def test_numbers_keep_their_exact_value_whichever_parser_reads_them():
    """Integers of 19 and 20 digits stay integers, exact (orjson would read a number beyond 64
    bits as a float, so such bodies go to the standard library), and floats are the same floats."""
    event = make_event(low=-2**63 + 1, high=2**64 - 1, big=10**18, small=-17, ratio=0.1, tiny=5e-324)
    _, (parsed,) = check_webhook(request(make_body(event)), SECRET.encode(), 1 << 20)
    assert parsed == event and all(type(parsed[k]) is type(event[k]) for k in event)


# --- the other routes and the metrics ------------------------------------------------------------

def test_healthz_is_200_while_the_store_takes_writes_and_405_for_other_methods(receiver):
    assert answer(receiver, request(method="GET", path="/healthz")).body == b'{"status": "ok"}'
    assert answer(receiver, request(method="POST", path="/healthz")).status == 405


def test_metrics_count_every_answer_by_route_and_status(receiver):
    answer(receiver, request(make_body(make_event())))
    answer(receiver, request(b"x", signature=None))
    answer(receiver, request(method="GET", path="/nowhere"))
    scraped = answer(receiver, request(method="GET", path="/metrics"))
    assert scraped.status == 200 and scraped.content_type.startswith("text/plain; version=0.0.4")
    requests = receiver.metrics.requests
    assert requests.value("/callback", "200") == requests.value("/callback", "401") == 1
    assert requests.value("unmatched", "404") == 1
    assert 'frontdesk_receiver_requests_total{route="/callback",status="401"} 1' in scraped.body.decode()


def test_the_webhooks_with_events_are_counted_for_the_loops_pauses(store):
    """Not the connectivity check (no events), not a refused one: the rate the coalescing pause
    looks at is the webhooks the receiver takes on."""
    clock = [100.0]
    webhooks = WorkRate(clock=lambda: clock[0])
    settings = load(environ={"LINE_CHANNEL_SECRET": SECRET})
    receiver = Receiver(settings, store, webhooks=webhooks)
    assert answer(receiver, request(make_body(make_event()))).status == 200
    assert answer(receiver, request(make_body(make_event()))).status == 200
    assert answer(receiver, request(make_body())).status == 200                       # no events
    assert answer(receiver, request(make_body(make_event()), signature="bad")).status == 401
    clock[0] += 1.0
    webhooks.gathers(0.003)
    assert webhooks.per_s == 2.0
