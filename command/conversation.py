"""Playing users against a running system: post an event as LINE would (signed, with a reply token
the sandbox honours), then collect what the bot sent to that chat until it has finished with it.

`frontdesk say` plays one event, `frontdesk test` (command/testing.py) every user turn of a
transcript. The sandbox's recorder (/sandbox/deliveries, long-polled) says what the bot sent. The
store, when it can be read, says when the bot is done (no event waiting or in flight) and whether
the event became a dead letter; without it, a turn is over once the answers it expects came and
no more followed for QUIET_S, or at its timeout. (The store is read only when it holds the event
just sent: a frontdesk.db of another folder says nothing about this system.) Once the store says
done, only QUIET_DONE_S more is waited: a handler acks an event after the answers to its calls, and
the sandbox records a call before it answers it, so what came for the event is already recorded;
the short wait only catches a push the bot makes after its ack.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import requests

from frontdesk.protocol.events import conversation_key
from frontdesk.sandbox.webhooks import EventFactory, post_webhook, report_sent
from frontdesk.store import StoreError, open_store, sqlite_file_missing

QUIET_S = 0.3          # without the store: a turn is over when this long passed after its last expected answer
QUIET_DONE_S = 0.1     # with it: when this long passed after the store said done (and the last answer)
STORE_CHECK_S = 0.1    # while nothing arrives, how often the store is asked whether the bot is done
CHAT_WIDE = frozenset({"broadcast", "narrowcast"})   # reach every chat: recorded with an empty `to`


class PlayerError(Exception):
    """The system cannot be played against (the sandbox does not answer); says where and why."""


@dataclass
class Outcome:
    """What one event got."""
    deliveries: list[dict]         # what the bot sent to the chat, as the sandbox recorded it
    dead_letter: dict | None       # {"attempts", "error"} when the event became a dead letter
    finished: bool                 # the bot was seen done with it (by the store, or the answers expected)


class Player:
    """One connection to a running system: its receiver, its sandbox and (if given) its store."""

    def __init__(self, url: str, sandbox_url: str, secret: str, store_url: str | None = None, by: str = "say"):
        self.url = url
        self.by = by               # who the chat page says sent the events (say, test)
        self.sandbox_url = sandbox_url.rstrip("/")
        self.secret = secret
        self.factory = EventFactory(secret)
        self.session = requests.Session()
        self.session.trust_env = False   # loopback: no proxies from the environment
        self.since = self._last_delivery_id()
        self.store = _open(store_url) if store_url is not None else None
        self._dead_before = 0
        self._watched = False      # the store holds the event last sent

    def close(self) -> None:
        self.session.close()
        if self.store is not None:
            self.store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _last_delivery_id(self) -> int:
        try:
            answer = self.session.get(f"{self.sandbox_url}/sandbox/stats", timeout=5)
            return answer.json()["last_delivery_id"]
        except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
            raise PlayerError(f"cannot reach the sandbox at {self.sandbox_url}: {exc}") from None

    def send(self, event: dict) -> int:
        """Post `event` as LINE would; its HTTP status (0: no answer)."""
        before = self._stats()
        started = time.monotonic()
        status = post_webhook(self.url, self.secret, self.factory.body([event]))
        ack_ms = (time.monotonic() - started) * 1000
        report_sent(self.sandbox_url, [{"event": event, "status": status, "ack_ms": ack_ms}], self.by)   # the chat page
        # A 200 means the event is stored: if the count did not grow, the store we read is not
        # the system's (another folder's frontdesk.db), and says nothing about this event.
        self._watched = status == 200 and _total(self._stats()) > _total(before)
        self._dead_before = before.get("dead", 0)
        return status

    def collect(self, event: dict, chat_id: str, expected: int = 1, timeout: float = 10.0) -> Outcome:
        """After send(event): what the bot sent to `chat_id` (the reply to the event, pushes and
        multicasts to the chat, broadcasts), until the bot is done with it (the store shows nothing
        of its conversation waiting or in flight; without the store, `expected` answers came) and
        the quiet time passed with nothing more, or until `timeout`."""
        key = conversation_key(event)
        quiet = QUIET_DONE_S if self._watched else QUIET_S
        found: list[dict] = []
        last_at = time.monotonic()
        deadline = last_at + timeout
        done_at = None
        while (now := time.monotonic()) < deadline:
            if done_at is None and (self._conversation_done(key) if self._watched
                                  else len(found) >= expected):
                done_at = now
            if done_at is not None and now - max(last_at, done_at) >= quiet:
                break
            if done_at is not None:
                wait = quiet - (now - max(last_at, done_at))
            else:
                wait = STORE_CHECK_S if self._watched else deadline - now
            mine = [d for d in self._deliveries(min(wait, deadline - now))
                    if d.get("source_event") == event["webhookEventId"] or chat_id in d["to"]
                    or d["endpoint"] in CHAT_WIDE]
            if mine:
                found += mine
                last_at = time.monotonic()
        return Outcome(found, self._dead_letter(event["webhookEventId"]), done_at is not None)

    def _deliveries(self, wait: float) -> list[dict]:
        """The next page of the recorder, waiting up to `wait` seconds for one."""
        wait = max(0.0, wait)
        page = self.session.get(f"{self.sandbox_url}/sandbox/deliveries",
                                params={"since": self.since, "wait": round(wait, 3)}, timeout=wait + 10).json()
        if page:
            self.since = page[-1]["id"]
        return page

    def _stats(self) -> dict:
        if self.store is None:
            return {}
        try:
            return self.store.stats()
        except StoreError:
            return {}

    def _conversation_done(self, key: str) -> bool:
        """No event of this conversation waits or is in flight. Its events are handled in order
        and the one just sent is its newest, so the bot is done with that one."""
        stats = self._stats()
        waiting = stats.get("pending", 0) + stats.get("in_flight", 0)
        if not stats or waiting == 0:
            return bool(stats)
        try:
            return key not in dict(self.store.busiest_keys(waiting))
        except StoreError:
            return False

    def _dead_letter(self, event_id: str) -> dict | None:
        """The event's dead letter, looked for only when dead letters grew since it was sent."""
        dead_now = self._stats().get("dead", 0)
        if not self._watched or dead_now <= self._dead_before:
            return None
        try:
            letters = self.store.dead_letters(dead_now)
        except StoreError:
            return None
        return next(({"attempts": d["attempts"], "error": d["error"]} for d in letters if d["id"] == event_id), None)


def _total(stats: dict) -> int:
    return sum(stats.get(state, 0) for state in ("pending", "in_flight", "done", "dead"))


def _open(store_url: str):
    """The store, or None where there is none to read: a player without one still works."""
    if sqlite_file_missing(store_url):
        return None
    try:
        return open_store(store_url)
    except StoreError:
        return None
