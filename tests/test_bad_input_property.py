"""Generated JSON through the whole intake: a real receiver, a real dispatcher and a
handler on one SQLite store, reused across examples. Whatever a signed webhook holds, it is
either refused with 400 and a reason, or accepted and then delivered to the handler (or dead-
lettered with a reason); no process crashes."""
from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

from tests.dispatcher_harness import Harness
from tests.helpers import wait_until
from tests.test_receiver import Receiver

SURROGATES = st.sampled_from(["\ud800", "a\udfffb", "\udc00\ud800"])
SCALARS = (st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12) | SURROGATES)


def _nested(levels: int):
    value: object = "bottom"
    for _ in range(levels):
        value = [value]
    return value


JSON_VALUES = (st.recursive(SCALARS, lambda children: st.lists(children, max_size=3)
                            | st.dictionaries(st.text(max_size=6), children, max_size=3), max_leaves=12)
               | st.integers(min_value=55, max_value=70).map(_nested))   # around the 64-level bound


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    """One receiver and one dispatcher (one handler) on one store, for every example."""
    harness = Harness(tmp_path_factory.mktemp("property"))
    receiver = Receiver(harness.tmp, extra_env={"FRONTDESK_STORE": harness.url,
                                                "FRONTDESK_MAX_BODY_BYTES": str(1 << 20)})
    dispatcher = harness.start(handlers=1)
    try:
        receiver.wait_ready()
        harness.wait_status(dispatcher, lambda doc: any(h["state"] == "ready" for h in doc["handlers"]),
                            timeout=20, message="a handler is ready")
        yield harness, receiver, dispatcher
    finally:
        receiver.stop()
        harness.close()


def _outcome(harness: Harness, dispatcher, event_id: str):
    """"delivered", ("dead", reason) or None while the event is still on its way."""
    assert dispatcher.poll() is None, f"the dispatcher died: {harness.log_text(0)[-2000:]}"
    if any(what == "end" and ended == event_id for what, ended, *_ in harness.records()):
        return "delivered"
    for dead in harness.store.dead_letters(10_000):
        if dead["id"] == event_id:
            return ("dead", dead["error"])
    return None


@settings(max_examples=40, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(value=JSON_VALUES, timestamp=st.one_of(st.just(1_700_000_000_000), st.integers(-2**70, 2**70)),
       encoding=st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-16", "utf-32"]))
def test_a_signed_webhook_is_refused_with_a_reason_or_reaches_the_handler(system, value, timestamp, encoding):
    harness, receiver, dispatcher = system
    event_id = uuid.uuid4().hex
    event = {"type": "message", "timestamp": timestamp, "webhookEventId": event_id,
             "replyToken": uuid.uuid4().hex, "source": {"type": "user", "userId": "U" + event_id},
             "message": {"type": "text", "id": "1", "text": "hi"}, "extra": value}
    body = json.dumps({"destination": "Ubot", "events": [event]}).encode(encoding, "surrogatepass")
    response = receiver.post(body)
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        assert response.json()["description"], "a refusal names its reason"
    else:
        outcome = wait_until(lambda: _outcome(harness, dispatcher, event_id), timeout=15,
                             message=f"accepted event {event_id} delivered or dead-lettered")
        assert outcome == "delivered" or outcome[1], f"dead-lettered without a reason: {outcome}"
    assert receiver.proc.poll() is None and dispatcher.poll() is None, "no process crashed"


def test_after_the_examples_no_process_logged_a_traceback(system):
    harness, receiver, dispatcher = system
    assert receiver.proc.poll() is None and dispatcher.poll() is None
    assert "Traceback" not in receiver.log()
    assert "Traceback" not in harness.log_text(0)
