"""A real rate limiter subprocess (`python -m frontdesk.ratelimiter`) for tests and the bench.

It talks frames over the child's stdin/stdout exactly as the dispatcher does (through the shared
blocking client, protocol/children/client.py): `call()` sends a request and returns its msgid,
`result()` waits for the answer, `stats` collects the stats notifications. Always use it as a
context manager (or call `kill()` in a finally).
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

from frontdesk.protocol.children.client import FramedClient
from frontdesk.protocol.frames import encode_frame
from frontdesk.protocol.rpc import MsgIds, Notification, Request, Response


class RateLimiterProcess:
    def __init__(self, env: dict, log_path, cwd=None):
        self.log_path = log_path
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("FRONTDESK_", "LINE_"))}
        clean.update(env)
        self._log = open(log_path, "ab")
        self._ids = MsgIds(1)
        self._cond = threading.Condition()
        self.answers: dict[int, tuple] = {}
        self.stats: list[dict] = []
        self.stdout_error: str | None = None
        self.client = FramedClient([sys.executable, "-m", "frontdesk.ratelimiter"], self._on_message, self._ended,
                                   env=clean, cwd=cwd, stderr=self._log).start()
        self.proc = self.client.proc

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()

    def _on_message(self, message) -> None:
        with self._cond:
            if isinstance(message, Response):
                self.answers[message.msgid] = (message.error, message.result)
            elif isinstance(message, Notification) and message.method == "stats":
                self.stats.append(message.params[0])
            self._cond.notify_all()

    def _ended(self, problem: str | None) -> None:
        with self._cond:
            self.stdout_error = problem
            self._cond.notify_all()

    def send_raw(self, data: bytes) -> None:
        self.client.send_bytes(data)

    def request(self, method: str, params: list) -> int:
        msgid = self._ids.next()
        self.send_raw(encode_frame(Request(msgid, method, params).to_wire()))
        return msgid

    def call(self, method: str, args: dict, event_id: str | None = None, call_no: int | None = None,
             context: dict | None = None) -> int:
        context = context or {"received_at": int(time.time() * 1000), "source": {}}
        return self.request("call", [{"event_id": event_id, "call_no": call_no, "method": method,
                                      "context": context}, args])

    def calls(self, items: list[dict]) -> list[int]:
        """Many calls written at once (one write): items are call() keyword maps."""
        frames, ids = [], []
        for item in items:
            msgid = self._ids.next()
            ids.append(msgid)
            context = item.get("context") or {"received_at": int(time.time() * 1000), "source": {}}
            frames.append(encode_frame(Request(msgid, "call", [{
                "event_id": item.get("event_id"), "call_no": item.get("call_no"), "method": item["method"],
                "context": context}, item["args"]]).to_wire()))
        self.send_raw(b"".join(frames))
        return ids

    def result(self, msgid: int, timeout: float = 10.0) -> tuple:
        """(error, result) of one call; fails the test if it does not come in time."""
        return self.results([msgid], timeout)[0]

    def results(self, msgids: list[int], timeout: float = 10.0) -> list[tuple]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not all(m in self.answers for m in msgids):
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self.client.reading):
                    missing = sum(1 for m in msgids if m not in self.answers)
                    raise AssertionError(f"{missing} of {len(msgids)} answers missing "
                                         f"(exit={self.proc.poll()}):\n{self.log()[-3000:]}")
                self._cond.wait(left)
            return [self.answers[m] for m in msgids]

    def answered(self, msgids) -> int:
        with self._cond:
            return sum(1 for m in msgids if m in self.answers)

    def wait_stats(self, predicate, timeout: float = 5.0) -> dict:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for stats in reversed(self.stats):
                    if predicate(stats):
                        return stats
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no stats notification matched within {timeout}s: "
                                         f"{self.stats[-1:] if self.stats else 'none received'}")
                self._cond.wait(left)

    def close_stdin(self) -> None:
        self.client.close_stdin()

    def wait_exit(self, timeout: float = 10.0) -> int:
        code = self.client.wait_exit(timeout)
        if code is None:
            raise subprocess.TimeoutExpired(self.proc.args, timeout)
        return code

    def log(self) -> str:
        self._log.flush()
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def kill(self) -> None:
        self.client.kill()
        self._log.close()


def limiter_env(sandbox_url: str, token: str, store_url: str, **knobs) -> dict:
    """Environment for a rate limiter pointed at a sandbox; `knobs` are settings by name."""
    env = {"FRONTDESK_STORE": store_url, "LINE_CHANNEL_ACCESS_TOKEN": token,
           "FRONTDESK_API_BASE": sandbox_url, "FRONTDESK_API_DATA_BASE": sandbox_url}
    env.update({f"FRONTDESK_{name.upper()}": str(value) for name, value in knobs.items()})
    return env
