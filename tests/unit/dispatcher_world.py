"""One Arbiter in-process for the unit tests: a real SQLite store in a temporary folder, fake
children (tests/unit/fake_children.py) for its handlers and its rate limiter, a clock the test
moves. Nothing is spawned and no socket is opened (the change feed is not followed: the tests
turn the loop themselves)."""
from __future__ import annotations

import time

from frontdesk.dispatcher.arbiter import Arbiter
from frontdesk.protocol import rpc
from frontdesk.protocol.config import load
from frontdesk.store import open_store
from tests.unit.clock import Clock
from tests.unit.fake_children import FakePipes, PipesFactory

TURN_S = 0.01   # how far the clock moves between turns: more than store_turn_ms


class World:
    def __init__(self, tmp_path, **settings):
        self.clock = Clock()
        url = f"sqlite:///{tmp_path / 'fd.db'}"
        self.settings = load({"store": url, "handlers": 2, "event_deadline_s": 10, "kill_grace_s": 2,
                              "handler_start_timeout_s": 5, "restart_backoff_max_s": 1, "drain_grace_s": 5,
                              "retry_backoff_s": 0.05, "retry_backoff_max_s": 0.05, "claim_run": 1,
                              **settings}, environ={})
        self.store = open_store(url)
        self.pipes = PipesFactory()
        self.arbiter = Arbiter(self.settings, self.store, environ={}, clock=self.clock, pipes=self.pipes)
        self._seq = 0
        self._greeted: list[FakePipes] = []

    def open(self) -> "World":
        """What Arbiter.open does, but the change feed and the purger thread."""
        self.arbiter.controls.open()
        self.arbiter.apilink.start()
        return self

    def close(self) -> None:
        self.store.close()

    # --- the loop ---------------------------------------------------------------------------------
    def turn(self, times: int = 1) -> None:
        for _ in range(times):
            self.clock.advance(TURN_S)
            self.arbiter.turn()

    def feed(self) -> None:
        """What the store's change feed says after a change (events given back, appended): wake up."""
        self.arbiter.router.wake()

    def ready(self, window: int = 4, features: list[str] | None = None) -> None:
        """Every process still waiting for its handshake answers it, and a turn follows."""
        for pipes in self.pipes.made:
            if pipes.name.startswith("handler-") and pipes.returncode is None and pipes not in self._greeted:
                self._greeted.append(pipes)
                pipes.hello(window, features=features)
        self.turn()

    def exit(self, name: str, code: int = 0) -> None:
        """The current process of `name` exits, and SIGCHLD is handled."""
        self.pipes.last(name).exit(code)
        self.arbiter.handle_chld()

    # --- events -------------------------------------------------------------------------------------
    def append(self, texts_by_key: dict[str, list[str]], age_s: float = 0.0) -> list[str]:
        """Events appended to the store, interleaved across keys; their ids in store order."""
        rows = []
        for index in range(max(len(texts) for texts in texts_by_key.values())):
            for key, texts in texts_by_key.items():
                if index < len(texts):
                    self._seq += 1
                    rows.append((f"ev{self._seq:04d}", key, texts[index]))
        now = int((time.time() - age_s) * 1000)
        self.store.append("Udest", [{"type": "message", "timestamp": now, "webhookEventId": event_id,
                                     "replyToken": "r" + event_id, "source": {"type": "user", "userId": key},
                                     "message": {"type": "text", "id": event_id, "text": text}}
                                    for event_id, key, text in rows], now)
        self.feed()
        return [event_id for event_id, _, _ in rows]

    def holder(self, event_id: str) -> tuple[FakePipes, rpc.Request]:
        """The live process an event was last sent to, and the request."""
        for pipes in reversed(self.pipes.made):
            for request in pipes.events():
                if request.params[0]["o"]["_id"] == event_id and pipes.returncode is None:
                    return pipes, request
        raise AssertionError(f"{event_id} was sent to no live handler")

    def answer(self, event_id: str, error=None) -> None:
        pipes, request = self.holder(event_id)
        pipes.say(rpc.Response(request.msgid, error, None))

    def sent_ids(self, name: str | None = None) -> list[str]:
        """Event ids sent, in order, to every process (of `name`)."""
        return [r.params[0]["o"]["_id"] for pipes in self.pipes.made if name in (None, pipes.name)
                for r in pipes.events()]

    @property
    def ratelimiter(self) -> FakePipes:
        return self.pipes.last("ratelimiter")

    def stats(self) -> dict:
        self.arbiter.router.flush()
        stats = self.store.stats()
        stats.pop("oldest_pending_s", None)
        return stats
