"""The Python SDK in real handler processes, driven over real pipes by the conformance kit's driver."""
import sys
import textwrap
from pathlib import Path

import pytest

from frontdesk.handlers.conformance import Broken, EventMaker, Handler
from frontdesk.protocol import rpc
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 30.0   # a bound on waiting for the handler, not a speed goal: generous for a busy machine


@pytest.fixture
def start(tmp_path):
    """start(body, max_in_flight=1) -> a handshaken Handler running a script made of body."""
    started = []

    def start(body: str, max_in_flight: int = 1) -> Handler:
        script = tmp_path / f"bot{len(started)}.py"
        script.write_text(
            f"import logging, os, sys, threading\n"
            f"from frontdesk import Bot, Nack, ApiError\n"
            f"bot = Bot('test', max_in_flight={max_in_flight})\n"
            + textwrap.dedent(body) + "\nbot.run()\n")
        handler = Handler([sys.executable, str(script)], max_frame_bytes=1 << 20).start()
        started.append(handler)
        hello = handler.handshake(TIMEOUT)
        assert hello.result == {"protocol": 1, "name": "test", "max_in_flight": max_in_flight, "features": ["batch"]}
        return handler

    yield start
    for handler in started:
        handler.kill()


def answer_of(outcome):
    (response,) = outcome.answers.values()
    return response


def test_print_and_stray_writes_go_to_stderr_not_into_frames(start):
    handler = start("""
        @bot.on_message("text")
        def on_text(event, api):
            print("printed by user code")
            os.write(1, b"written to fd 1\\n")
            os.system("echo from a subprocess")
            logging.getLogger("user").warning("logged by user code")
    """)
    outcome = handler.exchange([EventMaker().document("text")], TIMEOUT)
    assert answer_of(outcome).error is None
    handler.close_stdin()
    assert handler.wait_exit(TIMEOUT) == 0
    assert handler.noise is None  # every byte on stdout was a frame
    stderr = "\n".join(handler.stderr_tail)
    for text in ("printed by user code", "written to fd 1", "from a subprocess", "logged by user code"):
        assert text in stderr


def test_exception_becomes_a_nack_with_its_text_and_retry_flag(start):
    handler = start("""
        class Permanent(Exception):
            retry = False

        @bot.on_message("text")
        def on_text(event, api):
            kind = event.message.text
            if kind == "value":
                raise ValueError("boom 42")
            if kind == "nack":
                raise Nack("not for me", retry=False)
            raise Permanent("permanent trouble")
    """)
    events = EventMaker()
    answers = []
    for text in ("value", "nack", "permanent"):
        document = events.document("text")
        document["o"]["event"]["message"]["text"] = text
        answers.append(answer_of(handler.exchange([document], TIMEOUT)).error)
    assert answers[0] == {"message": "ValueError: boom 42", "retry": True}
    assert answers[1] == {"message": "not for me", "retry": False}
    assert answers[2] == {"message": "Permanent: permanent trouble", "retry": False}
    # the traceback is logged (stderr is read by a thread of its own: wait for the line)
    wait_until(lambda: "ValueError: boom 42" in "\n".join(handler.stderr_tail), timeout=TIMEOUT,
               message="the traceback on stderr")
    handler.close_stdin()
    assert handler.wait_exit(TIMEOUT) == 0


def test_a_huge_exception_text_is_cut_so_the_nack_always_fits_a_frame(start):
    handler = start("""
        @bot.on_message("text")
        def on_text(event, api):
            raise Nack("x" * 5_000_000)
    """)
    error = answer_of(handler.exchange([EventMaker().document("text")], TIMEOUT)).error
    assert error == {"message": "x" * 1000, "retry": True}


def test_a_malformed_event_document_is_nacked_for_good(start):
    handler = start("""
        @bot.on_message("text")
        def on_text(event, api):
            pass
    """)
    handler.send(rpc.Request(1, "event", [{"ts": 1, "o": {"_id": "E1"}}]))   # no o.event
    response = handler.receive(TIMEOUT)
    assert response.msgid == 1 and response.error["retry"] is False
    assert response.error["message"].startswith("malformed event document")


def test_unhandled_event_types_are_acked(start):
    handler = start("""
        @bot.on("follow")
        def on_follow(event, api):
            raise RuntimeError("must not run for other types")
    """)
    events = EventMaker()
    outcome = handler.exchange([events.document(s) for s in ("text", "postback", "future-type")], TIMEOUT)
    assert [r.error for r in outcome.answers.values()] == [None, None, None]


def test_events_are_handled_concurrently_up_to_max_in_flight(start):
    # Each handler waits until all four are inside it at once: only concurrency can ack them.
    handler = start("""
        together = threading.Barrier(4, timeout=5)

        @bot.on_message("text")
        def on_text(event, api):
            together.wait()
    """, max_in_flight=4)
    events = EventMaker()
    outcome = handler.exchange([events.document("text", user=f"U{i:032x}") for i in range(4)], TIMEOUT)
    assert [r.error for r in outcome.answers.values()] == [None] * 4


def test_a_batch_is_handled_in_order_one_event_at_a_time_and_the_rest_skipped_after_a_nack(start):
    handler = start("""
        seen, busy = [], threading.Lock()

        @bot.on_message("text")
        def on_text(event, api):
            if not busy.acquire(blocking=False):
                raise RuntimeError("two events of one batch at once")
            try:
                seen.append(event.message.text)
                api.profile(event.user_id)                 # an answer must come before the next event
                if event.message.text == "bad":
                    raise ValueError("bad text")
                print("handled", event.message.text, "after", seen[:-1])
            finally:
                busy.release()
    """, max_in_flight=4)
    events = EventMaker()
    documents = []
    for text in ("one", "two", "bad", "three", "four"):
        documents.append(events.document("text"))
        documents[-1]["o"]["event"]["message"]["text"] = text
    outcome = handler.exchange(documents, TIMEOUT, batch=True)
    assert outcome.violations == []            # in order, each call after the previous answer, none after the nack
    answers = [outcome.answers[msgid].error for msgid in outcome.sent]
    assert answers[:2] == [None, None] and answers[2] == {"message": "ValueError: bad text", "retry": True}
    assert answers[3:] == [{"message": "skipped: an earlier event of its batch was nacked"}] * 2
    assert [call.method for call in outcome.calls] == ["profile"] * 3
    wait_until(lambda: "handled two after ['one']" in "\n".join(handler.stderr_tail), timeout=TIMEOUT,
               message="the second event handled after the first")


def test_api_call_round_trip_and_event_fields(start):
    handler = start("""
        @bot.on_message("text")
        def on_text(event, api):
            name = api.profile(event.user_id)["displayName"]
            api.reply(event.reply_token, f"{name}|{event.message.text}|{event.id}|{event.key}|"
                                         f"{event.attempt}|{event['type']}|{event.ts > 0}")
    """)
    document = EventMaker().document("text", attempt=2)
    outcome = handler.exchange([document], TIMEOUT)
    assert answer_of(outcome).error is None
    profile, reply = outcome.calls
    o = document["o"]
    assert (profile.method, profile.params) == ("profile", [o["_id"], {"userId": o["event"]["source"]["userId"]}])
    assert reply.method == "reply"
    assert reply.params == [o["_id"], {"replyToken": o["event"]["replyToken"], "messages": [
        {"type": "text", "text": f"Kit User|こんにちは、世界|{o['_id']}|{o['key']}|2|message|True"}]}]


def test_api_error_is_raised_with_status_and_nacks_unless_caught(start):
    handler = start("""
        @bot.on_message("text")
        def on_text(event, api):
            try:
                api.profile(event.user_id)
            except ApiError as exc:
                print(f"caught status={exc.status} retryable={exc.retryable}")
            api.reply(event.reply_token, "second call fails too, uncaught")
    """)
    outcome = handler.exchange([EventMaker().document("text")], TIMEOUT, fail_calls=2)
    assert answer_of(outcome).error == {
        "message": "conformance: simulated LINE API failure (status 400)", "retry": False}
    wait_until(lambda: "caught status=400 retryable=False" in "\n".join(handler.stderr_tail),
               timeout=TIMEOUT, message="the handler's line on stderr")


def test_eof_finishes_in_flight_events_and_exits_0(start):
    handler = start("""
        @bot.on_message("text")
        def on_text(event, api):
            api.profile(event.user_id)  # never answered: stdin closes meanwhile
    """)
    handler.send(rpc.Request(1, "event", [EventMaker().document("text")]))
    call = handler.receive(TIMEOUT)
    assert isinstance(call, rpc.Request) and call.method == "profile"
    handler.close_stdin()
    nack = handler.receive(TIMEOUT)
    assert isinstance(nack, rpc.Response) and nack.msgid == 1
    assert nack.error == {"message": "dispatcher gone: stdin closed", "retry": True}
    assert handler.wait_exit(TIMEOUT) == 0
    with pytest.raises(Broken, match="stdout closed"):
        handler.receive(TIMEOUT)  # nothing more was written


def test_garbage_on_stdin_exits_2_with_a_clear_line(start):
    handler = start("")
    handler.send_bytes(b"\x00\x00\x00\x02\xc1\xc1")
    assert handler.wait_exit(TIMEOUT) == 2
    assert "test: protocol error on stdin: frame body is not valid msgpack" in handler.stderr_tail[-1]


def test_unknown_request_method_gets_an_error(start):
    handler = start("")
    handler.send(rpc.Request(9, "no_such_method", []))
    response = handler.receive(TIMEOUT)
    assert response == rpc.Response(9, {"message": "unknown method no_such_method"}, None)
