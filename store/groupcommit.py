"""Group commit: one writer thread commits every queued write in one transaction.

Used for appends: a caller either blocks until its write is durable (`write`), or hands it over
and is called back from the writer thread (`submit`: the receiver's event loop). Many share one
fsync / one majority write. While writes come often, the writer lingers up to `linger_s` after
the first request of a group for more to join it (at 500 webhooks/s, one event each, a 5 ms
linger cut the receiver's CPU per event from 0.95 to 0.70 ms; docs/benchmarks.md). A request
that the writer has not *taken* by its deadline (taken: the writer holds the database's write
lock and is writing it) is abandoned, answered StoreUnavailable and never written, so a webhook
that would be answered too late gets a fast 503 and stores nothing, even while another process
holds the database locked. Once taken, its outcome comes. A group that fails because the store
cannot write (StoreUnavailable: disk full, I/O error, lost connection) fails as a whole; one that
fails on anything else failed on what some request holds, and is written again in halves until
the request at fault stands alone and alone gets the error. Used by both backends.

Three layers, each with one job: `Linger` (whether to wait for more), `BatchWriter` (one group:
take, commit, write apart, answer) and `GroupCommitter` (the queue and the thread).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable

from .base import AppendResult, StoreUnavailable

log = logging.getLogger("frontdesk.store.groupcommit")

MAX_BATCH_REQUESTS = 1000   # requests committed in one transaction at most
INTERVAL_WEIGHT = 0.1       # smoothing of the time between writes (an exponential moving average)
LINGER_BELOW_INTERVAL = 0.25  # linger while writes come more often than every quarter of linger_s
PROBE_INTERVAL_S = 1.0      # at most one health probe a second, however often /healthz is asked
_STOP = object()
_PROBE = object()

Clock = Callable[[], float]   # time.monotonic, or a test's own


class WriteRequest:
    """One caller's share of a group commit; the commit function sets `result`."""
    __slots__ = ("deadline", "result", "error", "answered", "finished", "taken", "abandoned", "queued_at", "on_done")

    def __init__(self, deadline: float | None = None):
        self.deadline = deadline
        self.queued_at = 0.0
        self.on_done: Callable[["WriteRequest"], None] | None = None   # see GroupCommitter.submit
        self.result = None
        self.error: Exception | None = None
        self.answered = False    # its outcome is set and its caller told
        self.finished: threading.Event | None = None   # only a blocking caller (`write`) waits on one
        self.taken = False       # the writer is writing it (or has answered it): wait for the outcome
        self.abandoned = False   # its caller gave up at the deadline: never write it


class AppendRequest(WriteRequest):
    """One webhook body's events, to be appended (Store.append, Store.append_nowait)."""
    __slots__ = ("destination", "events", "received_at_ms")

    def __init__(self, destination: str, events: list[dict], received_at_ms: int, deadline: float | None):
        super().__init__(deadline)
        self.destination = destination
        self.events = events
        self.received_at_ms = received_at_ms


Take = Callable[[], list[WriteRequest]]
# commit(take): open a write transaction, call take() for the requests still wanted (at most once
# per attempt, same answer each time), write them all, set each one's result, and return whether
# anything new was stored.
Commit = Callable[[Take], bool]


class Linger:
    """Whether a group waits for more writes to join it: only while writes come faster than one
    per LINGER_BELOW_INTERVAL of `linger_s` (then a group gathers several); at a trickle it would
    only add latency (at 300 webhooks/s the CPU is no concern, and 5 ms on every ack and reply is).
    Fed the times requests were queued, so it is tested without a clock."""

    def __init__(self, linger_s: float):
        self.linger_s = linger_s
        self._interval = float("inf")   # smoothed time between writes
        self._last_queued_at: float | None = None

    def arrived(self, queued_at: float) -> None:
        if self._last_queued_at is not None:
            gap = max(0.0, queued_at - self._last_queued_at)
            self._interval = gap if self._interval == float("inf") else \
                self._interval + (gap - self._interval) * INTERVAL_WEIGHT
        self._last_queued_at = queued_at

    def wait_s(self) -> float:
        """How long the group that starts now waits for more."""
        return self.linger_s if self._interval < self.linger_s * LINGER_BELOW_INTERVAL else 0.0


class BatchWriter:
    """Writes one group and answers every request of it, whatever happens.

    Owns the rule that a request is either taken (written, its outcome comes) or abandoned (never
    written), decided under one lock, and the store's last write error (`last_error`, which
    health() reports until a write or a probe succeeds)."""

    def __init__(self, name: str, commit: Commit, clock: Clock = time.monotonic):
        self.name = name
        self._commit = commit
        self._clock = clock
        self._taking = threading.Lock()   # a request is either taken or abandoned, never both
        self.last_error: str | None = None

    def abandon(self, request: WriteRequest) -> bool:
        """True when the request will never be written (not taken yet), False when it is being
        written (its outcome is coming)."""
        with self._taking:
            if request.taken:
                return False
            request.abandoned = True
            return True

    def write(self, batch: list[WriteRequest]) -> bool:
        """Commit the requests still wanted, answer each request of the batch (finished, then
        on_done); True when anything new was stored."""
        taken: list[WriteRequest] | None = None

        def take() -> list[WriteRequest]:
            nonlocal taken
            if taken is None:
                now = self._clock()
                with self._taking:
                    taken = [r for r in batch if not r.abandoned
                             and (r.deadline is None or now <= r.deadline)]
                    for request in taken:
                        request.taken = True
            return taken

        stored = False
        try:
            stored = self._commit(take)
            self.note_success()
        except Exception as exc:  # every caller must be answered, whatever went wrong
            if taken and not isinstance(exc, StoreUnavailable):
                stored = self._write_apart(taken, exc)   # what one request holds, not the store
            else:
                self._failed(batch, exc)
        late = StoreUnavailable(f"store {self.name}: the deadline passed before the write started")
        for request in batch:
            if not request.taken:
                request.error = late   # its deadline had passed (or its caller left)
            _answer(request)
        return stored

    def probe(self, probe: Callable[[], None]) -> None:
        """Run a probe write (it raises when the store cannot write) and note its outcome."""
        try:
            probe()
        except Exception as exc:
            self.note_failure(exc)
            return
        self.note_success()

    def note_success(self) -> None:
        if self.last_error is not None:
            log.info("event=store_writable_again store=%s", self.name)
        self.last_error = None

    def note_failure(self, exc: Exception) -> str:
        """Remember why the store cannot write (logged once per distinct reason); the reason."""
        reason = f"store {self.name}: write failed: {exc}"
        if self.last_error != reason:
            log.error("event=store_write_failed store=%s error=%s", self.name, exc)
        self.last_error = reason
        return reason

    def _failed(self, requests: list[WriteRequest], exc: Exception) -> None:
        """The store could not write: every one of these requests gets the reason."""
        reason = self.note_failure(exc)
        kind = type(exc) if isinstance(exc, StoreUnavailable) else StoreUnavailable   # StoreGone stays itself
        with self._taking:
            for request in requests:
                request.taken = True
                request.result, request.error = None, kind(reason)

    def _write_apart(self, requests: list[WriteRequest], exc: Exception) -> bool:
        """A group failed on something other than the store being unavailable (StoreUnavailable):
        something one request holds (a string SQLite cannot encode, say). Write each half of the
        group on its own, down to the request at fault, which alone gets the error; the others
        are stored (one bad webhook among 1,000 costs ~20 commits, not 999 refusals)."""
        if len(requests) == 1:
            request = requests[0]
            log.error("event=store_write_refused store=%s error=%s", self.name, exc)
            request.result, request.error = None, StoreUnavailable(
                f"store {self.name}: this write cannot be stored: {exc}")
            return False
        stored = False
        middle = len(requests) // 2
        for half in (requests[:middle], requests[middle:]):
            try:
                stored = self._commit(lambda: half) or stored
            except StoreUnavailable as outage:
                self._failed(half, outage)
            except Exception as at_fault:
                stored = self._write_apart(half, at_fault) or stored
        return stored


class GroupCommitter:
    """The writer thread of one store: queues requests, gathers them into groups (`Linger`),
    has `BatchWriter` write each group, and runs `notify()` after a group stored anything new.

    Built idle; `start()` starts the thread, `stop()` ends it. `probe` is a tiny write that
    raises when the store cannot write now (see ask_probe)."""

    def __init__(self, name: str, commit: Commit, notify: Callable[[], None], linger_s: float = 0.0,
                 probe: Callable[[], None] | None = None, clock: Clock = time.monotonic):
        self.name = name
        self._batches = BatchWriter(name, commit, clock)
        self._linger = Linger(linger_s)
        self._notify = notify
        self._probe = probe
        self._clock = clock
        self._probe_asked_at: float | None = None
        self._requests: queue.SimpleQueue = queue.SimpleQueue()   # C: a tenth of queue.Queue's cost per webhook
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)

    @property
    def last_error(self) -> str | None:
        """Why the last write failed, until a write or a probe succeeds."""
        return self._batches.last_error

    def start(self) -> "GroupCommitter":
        self._thread.start()
        return self

    def alive(self) -> bool:
        return self._thread.is_alive()

    def ask_probe(self) -> None:
        """While the last write failed, have the writer thread try a probe write soon (at most
        once per PROBE_INTERVAL_S), so that `last_error` clears within a second or two of the
        fault clearing (a full disk emptied), with no webhook needed. Never blocks."""
        now = self._clock()
        if (self.last_error is None or self._probe is None or self._stopped
                or (self._probe_asked_at is not None and now - self._probe_asked_at < PROBE_INTERVAL_S)):
            return
        self._probe_asked_at = now
        self._requests.put(_PROBE)

    def append(self, destination: str, events: list[dict], received_at_ms: int,
               deadline: float | None) -> AppendResult:
        return self.write(AppendRequest(destination, events, received_at_ms, deadline))

    def submit(self, request: WriteRequest, on_done: Callable[[WriteRequest], None]) -> None:
        """Queue the request without waiting: on_done(request) runs on the writer thread once it has
        its result or error. A caller whose deadline passes calls abandon()."""
        if self._stopped:
            raise StoreUnavailable(f"store {self.name} is closed")
        request.on_done = on_done
        request.queued_at = self._clock()
        self._requests.put(request)

    def abandon(self, request: WriteRequest) -> bool:
        """Give up on a submitted request: True when it will never be written (not taken yet),
        False when the writer is already writing it (its outcome is coming)."""
        return self._batches.abandon(request)

    def write(self, request: WriteRequest):
        """Queue the request, wait until it is durable (or abandoned at its deadline); its result."""
        if self._stopped:
            raise StoreUnavailable(f"store {self.name} is closed")
        deadline = request.deadline
        request.finished = threading.Event()
        request.queued_at = self._clock()
        self._requests.put(request)
        if deadline is not None and not request.finished.wait(max(0.0, deadline - self._clock())):
            if self._batches.abandon(request):
                raise StoreUnavailable(f"store {self.name}: the write could not start before "
                                       f"its deadline")
        request.finished.wait()
        if request.error is not None:
            raise request.error
        return request.result

    def next_group(self) -> tuple[list[WriteRequest], bool]:
        """Wait for the next group: the first request queued and what joins it while the writer
        lingers, MAX_BATCH_REQUESTS at most. Returns (group, stopping); a probe asked meanwhile is
        answered by the group's own outcome, one asked alone is run here (an empty group)."""
        first = self._requests.get()
        if first is _STOP:
            return [], True
        if first is _PROBE:
            self._batches.probe(self._probe)
            return [], False
        group = [first]
        self._linger.arrived(first.queued_at)
        linger_until = self._clock() + self._linger.wait_s()
        while len(group) < MAX_BATCH_REQUESTS:
            try:
                wait = linger_until - self._clock()
                item = self._requests.get(timeout=wait) if wait > 0 else self._requests.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return group, True
            if item is _PROBE:
                continue
            self._linger.arrived(item.queued_at)
            group.append(item)
        return group, False

    def _run(self) -> None:
        stopping = False
        while not stopping:
            group, stopping = self.next_group()
            if group and self._batches.write(group):
                self._notify()

    def stop(self) -> None:
        """Finish what is queued, stop the thread, fail appends that raced with stopping."""
        if self._stopped:
            return
        self._stopped = True
        self._requests.put(_STOP)
        if self._thread.ident is not None:   # started
            self._thread.join()
        while not self._requests.empty():
            request = self._requests.get_nowait()
            if request is not _STOP and request is not _PROBE:
                request.error = StoreUnavailable(f"store {self.name} is closed")
                _answer(request)


def _answer(request: WriteRequest) -> None:
    """Its outcome is set: wake its blocking caller, or call its callback."""
    request.answered = True
    if request.finished is not None:
        request.finished.set()
    if request.on_done is not None:
        request.on_done(request)
