"""The MongoDB change feed's loop, driven through a stand-in with pymongo's documented ChangeStream
behaviour (try_next(), alive, resume_token, closed on leaving `with`): no server needed."""
from __future__ import annotations

import threading

from pymongo.errors import AutoReconnect, OperationFailure

from frontdesk.store.mongo_feed import StreamFollower

INSERT = {"operationType": "insert"}
INVALIDATE = {"operationType": "invalidate"}


class Stream:
    """A ChangeStream stand-in: `script` is what try_next() answers, in turn (a change, None, or an
    exception to raise); INVALIDATE closes it, as the server does, and from then on try_next()
    returns None at once and `alive` is False (pymongo). Once the script is done it answers None."""

    def __init__(self, script, token):
        self.script = list(script)
        self.alive = True
        self.resume_token = token
        self.closed = False
        self.polls = 0

    def try_next(self):
        self.polls += 1
        if not self.alive or not self.script:
            return None
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        if item is INVALIDATE:
            self.alive = False
        return item

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.closed = True
        self.alive = False


class Server:
    """Hands out scripted streams, records each watch(resume_after), and stops the follower once
    `polls` try_next() calls have been made in all (a follower that spins reaches it at once)."""

    def __init__(self, *streams, polls: int = 50):
        self.streams = list(streams)
        self.opened: list = []
        self.made: list[Stream] = []
        self.stopped = threading.Event()
        self.polls = polls
        self.wakes = 0

    def watch(self, resume_after):
        self.opened.append(resume_after)
        answer = self.streams.pop(0) if self.streams else []
        if isinstance(answer, Exception):
            raise answer
        stream = Stream(answer, token=f"token-{len(self.opened)}")
        real_try_next = stream.try_next

        def counted():
            if sum(s.polls for s in self.made) >= self.polls:
                self.stopped.set()
            return real_try_next()

        stream.try_next = counted
        self.made.append(stream)
        return stream

    def wake(self):
        self.wakes += 1

    def follow(self) -> StreamFollower:
        follower = StreamFollower(self.watch, self.wake, self.stopped, retry_s=0.0)
        follower.open()
        runner = threading.Thread(target=follower.run)
        runner.start()
        runner.join(timeout=30)
        assert not runner.is_alive(), "the follower did not stop"
        return follower


def test_no_wake_up_at_start_and_one_per_change():
    server = Server([None, INSERT, None, INSERT])
    server.follow()
    assert server.opened == [None] and server.wakes == 2


def test_after_an_invalidate_a_new_stream_starts_from_now_and_wakes_once():
    """Dropping or renaming `events` closes the stream: try_next() returns None at once forever.
    The follower must not spin on it, nor resume after its token (the server refuses it)."""
    server = Server([None, INVALIDATE], [None, INSERT], polls=20)
    server.follow()
    assert server.opened == [None, None]          # started afresh, not resumed after the old token
    assert server.made[0].polls == 2 and server.made[0].closed   # left at once, closed
    assert server.wakes == 2                      # one for the restart (nothing of the invalidate), one insert


def test_a_refused_resume_token_starts_afresh_and_wakes_once_per_start():
    """A network error ends the stream; resuming after its token is refused (260, then 286 after
    a second failure): each time the next stream starts from now, with one wake-up."""
    lost = AutoReconnect("connection lost")
    server = Server([None, lost], OperationFailure("invalid resume token", code=260), [None, lost],
                    OperationFailure("history lost", code=286), [None], polls=10)
    server.follow()
    assert server.opened == [None, "token-1", None, "token-3", None]
    assert server.wakes == 2   # one per fresh start after the first open


def test_a_stream_that_fails_and_resumes_is_not_a_fresh_start():
    server = Server([None, AutoReconnect("primary stepped down")], [INSERT], polls=10)
    server.follow()
    assert server.opened == [None, "token-1"]   # resumed after where it got to
    assert server.wakes == 1                     # the insert only


def test_other_server_errors_retry_with_the_same_token():
    server = Server([None, OperationFailure("not authorized", code=13)], [None], polls=10)
    server.follow()
    assert server.opened == [None, "token-1"] and server.wakes == 0
