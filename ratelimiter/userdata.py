"""`user_get` and `user_set_data`: the bot's small per-user record in the store, not LINE's
(SPEC.md section 8).

Both go through a store thread of their own (a `StoreWriter` that only this class uses), in the
order called, so a `user_get` made after a `user_set_data` was answered reads it. Neither runs on
the event loop nor in the call journal's writer: a record can be large (a 5 MB one is 20-60 ms
of store read and JSON decode, or of JSON encode and write), and every reply waits for its
journal entry to be written before it goes (docs/dispatcher.md, "A handler that stops reading").

Data past `user_data_max_bytes` is refused: every `user_get` answers the whole record, and three
handlers reading 5 MB records delayed everyone's replies by half a second on two cores."""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Callable

from frontdesk.protocol.rpc import api_error
from frontdesk.store import Store

from .storewriter import StoreWriter

log = logging.getLogger("frontdesk.ratelimiter")

USER_FIELDS = ("profile", "followed", "followed_at", "unfollowed_at", "data")

Answer = Callable[[object, object], None]


class UserData:
    """The store's users table as the handlers' two store methods see it (args already checked
    against the endpoint table). `thread`: the store thread that reads and writes the records,
    started and closed by its owner; `max_bytes`: user_data_max_bytes."""

    def __init__(self, thread: StoreWriter, max_bytes: int):
        self._thread = thread
        self._max_bytes = max_bytes

    def get(self, args: dict, answer: Answer) -> None:
        """`answer(error, result)` with the user's record, or None for an unknown user."""
        user_id = args["userId"]

        def read(store: Store):
            user = store.user_get(user_id)
            return None if user is None else {k: user[k] for k in USER_FIELDS}

        def done(future: asyncio.Future) -> None:
            error = future.exception()
            if error is not None:
                log.error("event=store_error method=user_get reason=%r", str(error))
                answer(api_error(f"store unavailable: {error}", retryable=True), None)
            else:
                answer(None, future.result())
        self._thread.call(read).add_done_callback(done)

    def set_data(self, args: dict, answer: Answer) -> None:
        """Replace the user's data; `answer(error, result)` once it is written or refused."""
        user_id, data = args["userId"], args["data"]

        def written(future: asyncio.Future) -> None:
            error = future.exception()
            if isinstance(error, (TypeError, ValueError, RecursionError)):   # not JSON, or too deep
                answer(api_error(f"user_set_data: `data` cannot be stored: {error}"), None)
            elif error is not None:
                answer(api_error(f"store unavailable: {error}", retryable=True), None)
            else:
                answer(None, None)

        def write(store: Store) -> None:
            size = len(json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode())
            if size > self._max_bytes:
                raise ValueError(f"it is {size} bytes as JSON, over user_data_max_bytes={self._max_bytes};"
                                 " nothing was stored")
            store.user_set_data(user_id, data)
        self._thread.call(write).add_done_callback(written)
