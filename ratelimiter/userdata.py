"""`user_get` and `user_set_data`: the bot's small per-user record in the store, not LINE's
(SPEC.md section 8). Reads are made on the event loop (one indexed read); writes go through the
store writer, and the call is answered once the write is done."""
from __future__ import annotations

import asyncio
from typing import Callable

from frontdesk.protocol.rpc import api_error
from frontdesk.store import Store

from .storewriter import StoreWriter

USER_FIELDS = ("profile", "followed", "followed_at", "unfollowed_at", "data")


class UserData:
    """The store's users table as the handlers' two store methods see it (args already checked
    against the endpoint table)."""

    def __init__(self, store: Store, writer: StoreWriter):
        self._store = store
        self._writer = writer

    def get(self, args: dict) -> tuple:
        """(error, result): the user's record, or None for an unknown user. Raises StoreError."""
        user = self._store.user_get(args["userId"])
        if user is None:
            return None, None
        return None, {k: user[k] for k in USER_FIELDS}

    def set_data(self, args: dict, answer: Callable[[object, object], None]) -> None:
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
        self._writer.call(lambda store: store.user_set_data(user_id, data)).add_done_callback(written)
