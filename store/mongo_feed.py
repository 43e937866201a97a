"""The MongoDB change feed: a change stream on the events collection, followed on a thread that
writes one byte to a socketpair per change that may make an event claimable, so that a
dispatcher's selector can wait on it (docs/store.md, "The change feed").

The first stream is opened in `change_feed()` on the caller's thread, so every change committed
after it returns wakes the feed and nothing wakes it for what came before (the caller's first
claim sees that): no wake-up at start, as with SQLite. Changes the feed could have missed (a
stream started afresh after a failure) are answered with one wake-up: a claim reads the documents.

Per MongoDB's manual and pymongo's documented ChangeStream: an `invalidate` (the collection
dropped or renamed, the database dropped) closes the stream, after which `try_next()` returns
None at once and `alive` is False; such a stream, and a token the server refuses (260
InvalidResumeToken, 280 ChangeStreamFatalError, 286 ChangeStreamHistoryLost: the oplog rolled
past it), cannot be resumed: the follower starts a new stream from now and wakes the caller once.
"""
from __future__ import annotations

import logging
import socket
import threading
from typing import Callable

from .base import PENDING, ChangeFeed

log = logging.getLogger("frontdesk.store.mongo")

FEED_AWAIT_MS = 1000   # how long one getMore of the stream waits on the server
RETRY_S = 1.0          # pause before opening a stream again after an error that may pass
INVALID_RESUME_TOKEN, CHANGE_STREAM_FATAL, CHANGE_STREAM_HISTORY_LOST = 260, 280, 286
UNRESUMABLE = frozenset({INVALID_RESUME_TOKEN, CHANGE_STREAM_FATAL, CHANGE_STREAM_HISTORY_LOST})

# Changes that may make an event claimable: an insert, a new head, a return to pending, a lease
# ended by expire_leases (it removes the owner), and a pipeline update that the server may log
# as a replacement (release). Acks, claims and lease extensions wake no one.
PIPELINE = [{"$match": {"$or": [
    {"operationType": {"$in": ["insert", "replace"]}},
    {"updateDescription.updatedFields.head": True},
    {"updateDescription.updatedFields.state": PENDING},
    {"updateDescription.removedFields": "owner"},
]}}]


class StreamFollower:
    """Follows a change stream until stopped: wake() per change, and once after every start afresh.

    `watch(resume_after)` opens a stream: a pymongo ChangeStream, or anything with its documented
    behaviour (`try_next()`, `alive`, `resume_token`, a context manager that closes it).
    """

    def __init__(self, watch: Callable, wake: Callable[[], None], stopped: threading.Event,
                 retry_s: float = RETRY_S):
        self._watch = watch
        self._wake = wake
        self._stopped = stopped
        self._retry_s = retry_s
        self._stream = None
        self._token = None   # where the last stream got to: a new one resumes after it

    def open(self) -> None:
        """Open the first stream (raises what pymongo raises): changes committed from now on wake."""
        self._stream = self._watch(None)

    def run(self) -> None:
        from pymongo.errors import OperationFailure, PyMongoError

        while not self._stopped.is_set():
            stream, self._stream = self._stream, None
            try:
                if stream is None:
                    stream = self._watch(self._token)
                    if self._token is None:   # started afresh: what came meanwhile is found by a claim
                        self._wake()
                with stream:
                    self._follow(stream)
            except OperationFailure as exc:
                if exc.code in UNRESUMABLE:
                    log.warning("event=feed_restarted reason=unresumable code=%s action=rescan error=%s",
                                exc.code, exc)
                    self._token = None
                    continue
                log.error("event=feed_failed code=%s error=%s", exc.code, exc)
                self._stopped.wait(self._retry_s)
            except PyMongoError as exc:
                log.error("event=feed_failed error=%s", exc)
                self._stopped.wait(self._retry_s)   # the dispatcher's re-scan timer covers the gap

    def _follow(self, stream) -> None:
        while not self._stopped.is_set():
            change = stream.try_next()
            if not stream.alive:   # invalidated: its token can only start a stream after it
                log.warning("event=feed_restarted reason=invalidated action=rescan")
                self._token = None
                return
            if change is not None:
                self._wake()
            self._token = stream.resume_token or self._token


class MongoFeed(ChangeFeed):
    """The ChangeFeed of a MongoStore: a socketpair whose reading end a selector waits on. Built
    idle; `open()` opens the first stream (raises what pymongo raises) and starts the thread."""

    def __init__(self, events_collection):
        def watch(resume_after):
            return events_collection.watch(PIPELINE, resume_after=resume_after, max_await_time_ms=FEED_AWAIT_MS)

        self._stopped = threading.Event()
        self._follower = StreamFollower(watch, self._wake, self._stopped)
        self._thread = threading.Thread(target=self._follower.run, name="store-feed", daemon=True)

    def open(self) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        try:
            self._follower.open()
        except BaseException:
            self._reader.close()
            self._writer.close()
            self._stopped.set()   # (close() has nothing left to do)
            raise
        self._thread.start()

    def fileno(self) -> int:
        return self._reader.fileno()

    def drain(self) -> None:
        try:
            while self._reader.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _wake(self) -> None:
        try:
            self._writer.send(b"!")
        except (BlockingIOError, OSError):
            pass   # full of unread wake-ups already, or closing

    def close(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._thread.ident is not None:   # started
            self._thread.join(timeout=FEED_AWAIT_MS / 1000.0 + 5)
        self._reader.close()
        self._writer.close()
