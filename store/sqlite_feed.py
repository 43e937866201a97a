"""SQLite change-feed wake-ups: one datagram to every follower of a database after each commit.

A follower (one per dispatcher) binds a unix datagram socket in Linux's abstract namespace and
announces it with an empty marker file named after it in `<db>.feed/`. A writer lists that
folder (re-listing only while it changed recently) and sends one byte to each follower after a
commit that made events claimable. A follower that is gone refuses the datagram and its marker
is removed. So an idle dispatcher costs no CPU, and a wake-up takes tens of microseconds: no
polling loop, and the documents stay the source of truth (the caller re-scans on a slow timer).
"""
from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time

from .base import ChangeFeed, StoreError

log = logging.getLogger("frontdesk.store.feed")

_ADDRESS_PREFIX = "\0frontdesk-feed/"
# A folder changed within this many seconds is re-listed on every notify: directory mtimes are
# coarse (a few ms), so a follower registering in the same tick as the last listing is not missed.
_RELIST_WINDOW_NS = 2_000_000_000


def feed_folder(db_path: str) -> str:
    return os.path.abspath(db_path) + ".feed"


def _address(token: str) -> str:
    return _ADDRESS_PREFIX + token


class SocketFeed(ChangeFeed):
    """The follower side: a datagram socket that becomes readable on a wake-up. Built idle;
    `open()` binds it and registers it in the feed folder."""

    def __init__(self, folder: str):
        self._folder = folder
        self._token = f"{os.getpid()}-{secrets.token_hex(8)}"
        self._marker = os.path.join(folder, self._token)
        self._sock: socket.socket | None = None

    def open(self) -> "SocketFeed":
        """Bind the socket and announce it; raises StoreError when either cannot be done."""
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            os.makedirs(self._folder, mode=0o700, exist_ok=True)   # the store's owner only, like the database
            self._sock.bind(_address(self._token))
            self._sock.setblocking(False)
            # The socket exists before the marker that announces it, and outlives it on close.
            os.close(os.open(self._marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        except OSError as exc:
            self._sock.close()
            raise StoreError(f"change feed folder {self._folder}: cannot register a follower: "
                             f"{exc.strerror or exc}") from None
        return self

    def fileno(self) -> int:
        return self._sock.fileno()

    def drain(self) -> None:
        try:
            while self._sock.recv(64):
                pass
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        if self._sock is None or self._sock.fileno() < 0:
            return
        try:
            os.unlink(self._marker)
        except FileNotFoundError:
            pass
        self._sock.close()


class FeedNotifier:
    """The writer side: wakes every registered follower of one database file. Built idle;
    `open()` makes its socket."""

    def __init__(self, folder: str):
        self._folder = folder
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._listed_mtime: int | None = None
        self._tokens: list[str] = []

    def open(self) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)

    def notify(self) -> None:
        with self._lock:
            for token in self._followers():
                try:
                    self._sock.sendto(b"!", _address(token))
                except BlockingIOError:
                    pass  # its buffer is full of unread wake-ups already
                except (ConnectionRefusedError, FileNotFoundError):
                    self._forget(token)
                except OSError as exc:
                    log.debug("event=feed_send_failed follower=%s error=%s", token, exc)

    def _followers(self) -> list[str]:
        try:
            mtime = os.stat(self._folder).st_mtime_ns
        except FileNotFoundError:
            return []
        if mtime != self._listed_mtime or time.time_ns() - mtime < _RELIST_WINDOW_NS:
            try:
                self._tokens = os.listdir(self._folder)
            except FileNotFoundError:
                self._tokens = []
            self._listed_mtime = mtime
        return self._tokens

    def _forget(self, token: str) -> None:
        """A follower whose socket is gone (its process died): remove its marker."""
        try:
            os.unlink(os.path.join(self._folder, token))
            log.info("event=feed_follower_removed follower=%s reason=gone", token)
        except FileNotFoundError:
            pass
        self._listed_mtime = None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
