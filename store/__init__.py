"""The queue and the per-user DB behind one contract (`store.base.Store`); a URL picks the backend."""
from __future__ import annotations

import logging
import os
from typing import Callable

from .base import AppendResult, ChangeFeed, JournalEntry, Store, StoreError, StoreGone, StoreUnavailable

__all__ = ["AppendResult", "ChangeFeed", "JournalEntry", "Store", "StoreError", "StoreGone", "StoreUnavailable",
           "open_store", "run_with_store", "sqlite_file_missing"]


def open_store(url: str, append_linger_s: float = 0.0, check_integrity: bool = False) -> Store:
    """sqlite:///relative/or//absolute/path.db or mongodb://…/db?replicaSet=…

    `append_linger_s`: how long a group commit of appends waits for more appends to share it
    (the receiver's append_linger_ms); 0 for every other user of the store.
    `check_integrity`: SQLite checks its files at open (store/sqlite_integrity.py); the
    long-lived processes ask for it, operator commands do not.
    """
    if url.startswith("sqlite:///"):
        from .sqlite import SQLiteStore

        return SQLiteStore(url, append_linger_s, check_integrity).open()
    if url.startswith(("mongodb://", "mongodb+srv://")):
        from .mongo import MongoStore

        return MongoStore(url, append_linger_s).open()
    scheme = url.split(":", 1)[0] if ":" in url else url
    raise StoreError(f"store URL scheme {scheme!r} is not supported (use sqlite:///path.db or mongodb://…)")


def sqlite_file_missing(url: str) -> bool:
    """A SQLite store not created yet (in a folder that exists): a reader should not create it."""
    if not url.startswith("sqlite:///"):
        return False
    from .sqlite import path_from_url

    try:
        path = path_from_url(url)
    except StoreError:
        return False
    return not os.path.exists(path) and os.path.isdir(os.path.dirname(os.path.abspath(path)))


def run_with_store(url: str, log: logging.Logger, work: Callable[[Store], int], failed: int = 1,
                   append_linger_s: float = 0.0) -> int:
    """A process's life on the store: open it (checking its integrity), return work(store), close
    it. A store that cannot be opened is logged and gives the exit status `failed`."""
    try:
        store = open_store(url, append_linger_s, check_integrity=True)
    except StoreError as exc:
        log.error("event=store_open_failed reason=%s", exc)
        return failed
    try:
        return work(store)
    finally:
        store.close()
