"""Real-process harness for dispatcher tests: a store in tmp_path, dispatchers as subprocesses,
events appended through the store contract, and the scripted handler's record file read back."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from frontdesk.store import open_store
from tests.helpers import wait_until

SCRIPTED = [sys.executable, "-m", "tests.handlers.scripted"]
# The API base unless a test gives one (a sandbox): a closed port on loopback refuses at once. With
# api.line.me out of reach, a new rate limiter's start-up reads held its first status report ~3 s.
NO_LINE = "http://127.0.0.1:9"
FAST = {  # short deadlines and backoffs so failures play out in a test's time
    "event_deadline_s": "1.5", "kill_grace_s": "0.5", "handler_start_timeout_s": "10",   # (a slow start is no failure)
    "restart_backoff_max_s": "0.3", "retry_backoff_s": "0.05", "retry_backoff_max_s": "0.2",
    "lease_s": "2", "feed_rescan_s": "1", "drain_grace_s": "5",
}


class Harness:
    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.url = f"sqlite:///{tmp_path / 'fd.db'}"
        self.record = tmp_path / "record.txt"
        self.store = open_store(self.url)
        self.processes: list[subprocess.Popen] = []
        self._seq = 0

    # --- processes -------------------------------------------------------------------------
    def start(self, handlers: int = 2, mode: str = "ok", command: str = "dispatcher", args=(),
              env: dict | None = None, handler: str | None = None, **settings) -> subprocess.Popen:
        """A dispatcher (or `command`) with the scripted handler in `mode`, or the `handler` command line."""
        overrides = {**FAST, **{k: str(v) for k, v in settings.items()}}
        handler = handler or " ".join([*SCRIPTED, mode])
        argv = [sys.executable, "-m", "frontdesk", command, "--store", self.url,
                "--handler", handler, "--handlers", str(handlers), *args]
        for key, value in overrides.items():
            argv += ["--set", f"{key}={value}"]
        full_env = {**os.environ, "FD_TEST_RECORD": str(self.record),
                    "LINE_CHANNEL_ACCESS_TOKEN": "test-token", "PYTHONUNBUFFERED": "1",
                    "FRONTDESK_API_BASE": NO_LINE, "FRONTDESK_API_DATA_BASE": NO_LINE, **(env or {})}
        log = open(self.tmp / f"dispatcher-{len(self.processes)}.log", "wb")
        process = subprocess.Popen(argv, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                                   cwd=Path(__file__).resolve().parent.parent)
        self.processes.append(process)
        return process

    def log_text(self, index: int = 0) -> str:
        return (self.tmp / f"dispatcher-{index}.log").read_text(errors="replace")

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)
        self.store.close()

    # --- events ------------------------------------------------------------------------------
    def append(self, texts_by_key: dict[str, list[str]] | None = None, *, keys: int = 0, per_key: int = 0,
               text: str = "hi", age_s: float = 0.0) -> list[str]:
        """Append events (interleaved across keys, as they would arrive), received `age_s` ago;
        returns ids in store order."""
        if texts_by_key is None:
            texts_by_key = {f"U{k}": [text] * per_key for k in range(keys)}
        rows = []
        longest = max(len(texts) for texts in texts_by_key.values())
        for index in range(longest):
            for key, texts in texts_by_key.items():
                if index < len(texts):
                    self._seq += 1
                    rows.append((f"ev{self._seq:06d}", key, texts[index]))
        now = int((time.time() - age_s) * 1000)
        events = [{"type": "message", "timestamp": now, "webhookEventId": event_id, "replyToken": "r" + event_id,
                   "source": {"type": "user", "userId": key},
                   "message": {"type": "text", "id": event_id, "text": text}}
                  for event_id, key, text in rows]
        for start in range(0, len(events), 200):
            self.store.append("Udest", events[start:start + 200], now)
        return [event_id for event_id, _, _ in rows]

    def wait_done(self, count: int, timeout: float = 20.0) -> None:
        wait_until(lambda: self.store.stats()["done"] >= count, timeout,
                   message=f"{count} events done (stats now {self.store.stats()})")

    # --- what the handlers saw --------------------------------------------------------------------
    def records(self) -> list[tuple[str, str, str, int, int]]:
        if not self.record.exists():
            return []
        lines = self.record.read_text().splitlines()
        return [(what, event_id, key, int(pid), int(attempt))
                for what, event_id, key, pid, attempt in (line.split() for line in lines)]

    def check_history(self, appended: list[str], exactly_once: bool = True) -> dict:
        """Assert per-key order, no two events of a key at once, each event acked exactly once
        (or at least once: acks a handler wrote after garbage on its stdout cannot be trusted).

        Returns {"max_parallel", "pids"} for further assertions.
        """
        records = self.records()
        position = {event_id: index for index, event_id in enumerate(appended)}
        open_by_key: dict[str, str] = {}
        ended: dict[str, int] = defaultdict(int)
        order_by_key: dict[str, list[str]] = defaultdict(list)
        open_count, max_parallel, pids = 0, 0, set()
        for what, event_id, key, pid, _ in records:
            pids.add(pid)
            current = open_by_key.get(key)
            if what == "start":
                # another event of this key may be "open" only if it was abandoned (crash/hang)
                # and is being retried now, i.e. it is this very event again.
                assert current in (None, event_id), f"{event_id} started while {current} of key {key} was open"
                if current is None:
                    open_count += 1
                open_by_key[key] = event_id
                max_parallel = max(max_parallel, open_count)
            else:
                assert current == event_id, f"{event_id} acked but {current} was the open event of {key}"
                del open_by_key[key]
                open_count -= 1
                ended[event_id] += 1
                order_by_key[key].append(event_id)
        for key, ids in order_by_key.items():
            assert ids == sorted(ids, key=position.__getitem__), f"key {key} handled out of order"
        missing = [event_id for event_id in appended
                   if ended[event_id] == 0 or (exactly_once and ended[event_id] > 1)]
        assert not missing, f"events not acked exactly once: {missing[:10]} ({[ended[m] for m in missing[:10]]})"
        return {"max_parallel": max_parallel, "pids": pids}

    def status(self, process: subprocess.Popen) -> dict | None:
        for name, doc in self.store.get_statuses().items():
            if name.endswith(f":{process.pid}"):
                return doc
        return None

    def wait_status(self, process, predicate, timeout: float = 10.0, message: str = "") -> dict:
        def check():
            doc = self.status(process)
            return doc if doc is not None and predicate(doc) else None
        return wait_until(check, timeout, message=message or "status condition")


def ready_pids(doc: dict) -> set[int]:
    return {h["pid"] for h in doc["handlers"] if h["state"] == "ready"}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of someone else still answers kill(0); look at its state
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False

