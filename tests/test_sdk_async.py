"""The Python SDK with `async def` handler functions (handlers/loopsession.py): the same protocol
behaviour as the threaded session, on one asyncio loop, in real handler processes."""
import subprocess
import sys

import pytest

from frontdesk.handlers.conformance import Broken, EventMaker
from frontdesk.protocol import rpc
from tests.helpers import wait_until
from tests.test_sdk import TIMEOUT, answer_of, start  # noqa: F401 - start is the fixture


def test_calls_are_awaited_and_their_errors_raised_and_a_failure_nacks(start):
    handler = start("""
        @bot.on_message("text")
        async def on_text(event, api):
            try:
                await api.profile(event.user_id)
            except ApiError as exc:
                print(f"caught status={exc.status}")
            name = (await api.user_get(event.user_id)) or "nobody"
            await api.reply(event.reply_token, f"{name}|{event.message.text}")
    """)
    outcome = handler.exchange([EventMaker().document("text")], TIMEOUT, fail_calls=1)
    assert answer_of(outcome).error is None
    assert [call.method for call in outcome.calls] == ["profile", "user_get", "reply"]
    wait_until(lambda: "caught status=400" in "\n".join(handler.stderr_tail), timeout=TIMEOUT,
               message="the handler's line on stderr")
    outcome = handler.exchange([EventMaker().document("text")], TIMEOUT, fail_calls=3)
    assert answer_of(outcome).error == {"message": "conformance: simulated LINE API failure (status 400)",
                                        "retry": False}


def test_events_run_concurrently_on_one_loop(start):
    handler = start("""
        import asyncio
        together = asyncio.Barrier(4)

        @bot.on_message("text")
        async def on_text(event, api):
            await asyncio.wait_for(together.wait(), 5)
            if threading.active_count() != 1:
                raise RuntimeError(f"{threading.active_count()} threads")
    """, max_in_flight=4)
    events = EventMaker()
    outcome = handler.exchange([events.document("text", user=f"U{i:032x}") for i in range(4)], TIMEOUT)
    assert [r.error for r in outcome.answers.values()] == [None] * 4


def test_a_batch_runs_in_order_and_the_rest_is_skipped_after_a_nack(start):
    handler = start("""
        @bot.on_message("text")
        async def on_text(event, api):
            await api.profile(event.user_id)
            if event.message.text == "bad":
                raise Nack("bad text", retry=False)
    """, max_in_flight=2)
    events = EventMaker()
    documents = []
    for text in ("one", "bad", "two"):
        documents.append(events.document("text"))
        documents[-1]["o"]["event"]["message"]["text"] = text
    outcome = handler.exchange(documents, TIMEOUT, batch=True)
    assert outcome.violations == []
    assert [outcome.answers[m].error for m in outcome.sent] == [
        None, {"message": "bad text", "retry": False}, {"message": "skipped: an earlier event of its batch was nacked"}]


def test_eof_fails_the_waiting_call_finishes_the_event_and_exits_0(start):
    handler = start("""
        @bot.on_message("text")
        async def on_text(event, api):
            await api.profile(event.user_id)  # never answered: stdin closes meanwhile
    """)
    handler.send(rpc.Request(1, "event", [EventMaker().document("text")]))
    call = handler.receive(TIMEOUT)
    assert isinstance(call, rpc.Request) and call.method == "profile"
    handler.close_stdin()
    nack = handler.receive(TIMEOUT)
    assert nack == rpc.Response(1, {"message": "dispatcher gone: stdin closed", "retry": True}, None)
    assert handler.wait_exit(TIMEOUT) == 0
    with pytest.raises(Broken, match="stdout closed"):
        handler.receive(TIMEOUT)


def test_garbage_on_stdin_exits_2_with_a_clear_line(start):
    handler = start("""
        @bot.on("follow")
        async def on_follow(event, api):
            pass
    """)
    handler.send_bytes(b"\x00\x00\x00\x02\xc1\xc1")
    assert handler.wait_exit(TIMEOUT) == 2
    assert "test: protocol error on stdin: frame body is not valid msgpack" in handler.stderr_tail[-1]


def test_a_bot_mixing_async_and_plain_functions_is_refused_with_the_reason(tmp_path):
    script = tmp_path / "mixed.py"
    script.write_text("from frontdesk import Bot\nbot = Bot('mixed')\n"
                      "@bot.on('follow')\nasync def a(event, api): pass\n"
                      "@bot.on('unfollow')\ndef b(event, api): pass\n"
                      "bot.run()\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 1 and done.stdout == ""
    assert "bot 'mixed' mixes `async def` and plain handler functions: use one kind" in done.stderr
