"""The plumbing both supervisors share, in-process: the message stream under every frame client
(protocol/children/stream.py), signal handlers by name (protocol/children/loop.py), and the
status publisher (store/status.py) against a real SQLite store."""
from __future__ import annotations

import logging

import pytest

from frontdesk.protocol import rpc
from frontdesk.protocol.children.loop import HANDLED_SIGNALS, SignalQueue, handler_name
from frontdesk.protocol.children.stream import MessageStream
from frontdesk.protocol.frames import HEADER, ProtocolError, encode_frame
from frontdesk.store import open_store
from frontdesk.store.status import STATUS_INTERVAL_S, StatusPublisher
from tests.unit.clock import Clock


def test_the_stream_gives_each_message_as_its_frame_completes():
    stream = MessageStream()
    data = encode_frame([0, 1, "event", []]) + encode_frame([2, "progress", ["e1"]])
    assert list(stream.feed(data[:7])) == []
    assert list(stream.feed(data[7:])) == [rpc.Request(1, "event", []), rpc.Notification("progress", ["e1"])]
    stream.end()


def test_the_stream_names_a_frame_that_is_no_message_and_stops_there():
    stream = MessageStream()
    messages = stream.feed(encode_frame([1, 5, None, "ok"]) + encode_frame({"not": "a message"}))
    assert next(messages) == rpc.Response(5, None, "ok")
    with pytest.raises(ProtocolError, match="a message must be a non-empty array"):
        next(messages)


def test_the_stream_says_when_it_ended_inside_a_frame():
    stream = MessageStream()
    list(stream.feed(HEADER.pack(10) + b"abc"))
    with pytest.raises(ProtocolError, match=r"stdout ended inside a frame \(7 bytes\)"):
        stream.end()


def test_each_handled_signal_has_a_handler_name():
    assert [handler_name(signum) for signum in HANDLED_SIGNALS] == [
        "handle_term", "handle_int", "handle_quit", "handle_hup", "handle_ttin", "handle_ttou", "handle_chld"]


def test_the_signal_queue_hands_each_signal_to_its_method_and_logs_it(caplog):
    import signal

    calls = []

    class Owner:
        state = type("S", (), {"value": "running"})()

        def __getattr__(self, name):
            return lambda: calls.append(name)
    queue = SignalQueue(loop=None)
    queue._pending = [signal.SIGTTIN, signal.SIGCHLD, signal.SIGTERM]
    with caplog.at_level(logging.INFO, logger="test.signals"):
        queue.dispatch(Owner(), logging.getLogger("test.signals"))
    assert calls == ["handle_ttin", "handle_chld", "handle_term"]
    assert [r.getMessage() for r in caplog.records] == ["event=signal_received signal=SIGTTIN state=running",
                                                        "event=signal_received signal=SIGTERM state=running"]


@pytest.fixture
def store(tmp_path):
    s = open_store(f"sqlite:///{tmp_path / 'fd.db'}")
    yield s
    s.close()


def test_the_publisher_writes_at_once_then_every_interval_and_withdraws_at_a_clean_stop(store):
    clock = Clock()
    gone = []
    count = iter(range(100))
    publisher = StatusPublisher(store, "run:h:1", lambda: {"n": next(count)}, gone.append,
                                logging.getLogger("test.status"), clock=clock)
    assert publisher.due(clock.now)
    publisher.publish()
    assert store.get_statuses()["run:h:1"]["n"] == 0 and not publisher.due(clock.now)
    assert publisher.due(clock.advance(STATUS_INTERVAL_S))
    publisher.skip()
    assert publisher.next_at == clock.now + STATUS_INTERVAL_S
    publisher.withdraw()
    assert store.get_statuses() == {} and gone == []
