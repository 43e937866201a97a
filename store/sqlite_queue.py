"""The SQLite store's queue, handing out: claims and runs, leases, acks, nacks and releases.

Claiming does not scan: each conversation key's oldest pending-or-leased event carries `head = 1`
(store/sqlite_schema.py), so "deliverable" is `head = 1 AND due <= now` on a partial index. The
decisions both backends share (backoff, dead letters, runs) are store/rules.py's.
"""
from __future__ import annotations

import json
import logging
import sqlite3
import time
from typing import Callable

from frontdesk.protocol.events import make_document

from .base import DEAD, DONE, LEASED, PENDING, Queue
from .rules import after_nack, is_spent, run_length, spent_error
from .sqlite_connections import SQLiteConnections, id_chunks

log = logging.getLogger("frontdesk.store.sqlite")

# The next event of each key heads it. One that the acking owner leased with its run (a
# follower, Store.claim) is delivered by that owner next: its attempt is charged now.
_PROMOTE_HEAD = f"""UPDATE events SET head = 1, attempt = attempt + (state = {LEASED} AND owner = ?)
    WHERE seq = (SELECT min(seq) FROM events WHERE key = ? AND state < {DONE})"""
_CLAIMED = "seq, id, key, destination, event, received_at"   # then the attempt: a claimed row


class SQLiteQueue(Queue):
    """Moves events between states for one SQLite store, each move one write transaction on the
    bookkeeping connection. `notify()` wakes the change feed's followers after a commit that made
    events claimable by others; `clock()` is epoch seconds (leases, backoffs, finish times)."""

    def __init__(self, db: SQLiteConnections, db_name: str, notify: Callable[[], None],
                 clock: Callable[[], float] = time.time):
        self._db = db
        self._db_name = db_name
        self._notify = notify
        self._clock = clock

    def claim(self, owner: str, limit: int, lease_s: float, max_attempts: int | None = None,
              run: int = 1) -> list[dict]:
        return self.ack_and_claim(owner, [], limit, lease_s, max_attempts, run)

    def ack_and_claim(self, owner: str, event_ids: list[str], limit: int, lease_s: float,
                      max_attempts: int | None = None, run: int = 1) -> list[dict]:
        now = self._clock()
        # a wake-up often finds nothing new (another dispatcher took it): read before locking
        if not event_ids and (limit <= 0 or not self._db.read(
                "SELECT 1 FROM events WHERE head = 1 AND due <= ? LIMIT 1", (now,))):
            return []

        def work(conn):
            acked = self._finish(conn, owner, event_ids, DONE, None) if event_ids else 0
            rows = conn.execute(
                f"UPDATE events SET state = {LEASED}, owner = ?, due = ?, attempt = attempt + 1 WHERE seq IN"
                f" (SELECT seq FROM events WHERE head = 1 AND due <= ? ORDER BY seq LIMIT ?) RETURNING {_CLAIMED},"
                " attempt", (owner, now + lease_s, now, max(limit, 0))).fetchall()
            # the acked keys' next events are claimable by others only if this claim, full,
            # may have left some (else it took them: no wake-up, least of all our own)
            freed = acked if len(rows) == limit else 0
            spent = [row[1] for row in rows if is_spent(row[6] - 1, max_attempts)]
            if spent:
                rows = [row for row in rows if not is_spent(row[6] - 1, max_attempts)]
                freed += self._bury_spent(conn, owner, spent, max_attempts)
            if run > 1 and 0 < len(rows) < limit:
                rows += self._lease_runs(conn, owner, sorted(rows), limit - len(rows), run - 1,
                                         now, now + lease_s)
            return freed, rows

        freed, rows = self._db.transaction(work)
        if freed:
            self._notify()   # later events of these keys are claimable (by us too)
        rows.sort()   # RETURNING gives no order; store order is seq
        return [make_document(seq, self._db_name, event_id, destination, json.loads(text), key,
                              received_at, attempt)
                for seq, event_id, key, destination, text, received_at, attempt in rows]

    @staticmethod
    def _lease_runs(conn: sqlite3.Connection, owner: str, heads: list[tuple], room: int, followers: int,
                    now: float, until: float) -> list[tuple]:
        """Lease up to `followers` events behind each claimed head, `room` in all: the unbroken
        run (rules.run_length). Their attempt is charged when each becomes head under this
        lease (_PROMOTE_HEAD), not now: a follower given back undelivered was never attempted."""
        rows = []
        for seq, _, key, *_ in heads:
            if room <= 0:
                break
            behind = conn.execute(f"SELECT seq, state, due FROM events WHERE key = ? AND state < {DONE}"
                                  " AND seq > ? ORDER BY seq LIMIT ?", (key, seq, min(followers, room))).fetchall()
            seqs = [next_seq for next_seq, _, _ in behind[:run_length(((s, d) for _, s, d in behind), now)]]
            if seqs:
                room -= len(seqs)
                rows += conn.execute(
                    f"UPDATE events SET state = {LEASED}, owner = ?, due = ? WHERE seq IN"
                    f" ({','.join('?' * len(seqs))}) RETURNING {_CLAIMED}, attempt + 1",
                    (owner, until, *seqs)).fetchall()
        return rows

    def _finish(self, conn: sqlite3.Connection, owner: str, event_ids: list[str], state: int,
                error: str | None) -> int:
        """Move events leased to owner to done/dead and promote the next event of each key;
        returns how many keys moved on."""
        keys: set[str] = set()
        for marks, chunk in id_chunks(event_ids):
            keys.update(row[0] for row in conn.execute(
                "UPDATE events SET state = ?, head = 0, owner = NULL, finished_at = ?,"
                f" error = coalesce(?, error) WHERE owner = ? AND state = {LEASED} AND id IN ({marks})"
                " RETURNING key", (state, self._clock(), error, owner, *chunk)))
        # one statement per key: min() over a key is one index probe, but a GROUP BY over many
        # keys reads every active event of each (1,000x slower with 10 busy keys)
        conn.executemany(_PROMOTE_HEAD, [(owner, key) for key in keys])
        return len(keys)

    def _bury_spent(self, conn: sqlite3.Connection, owner: str, event_ids: list[str], max_attempts: int) -> int:
        """Dead-letter events just claimed past max_attempts (this claim's delivery not counted)."""
        for event_id in event_ids:
            (error,) = conn.execute("SELECT error FROM events WHERE id = ?", (event_id,)).fetchone()
            conn.execute("UPDATE events SET attempt = attempt - 1, error = ? WHERE id = ?",
                         (spent_error(max_attempts, error), event_id))
            log.warning("event=event_dead_lettered id=%s attempts=%d reason=attempts_spent", event_id,
                        max_attempts)
        return self._finish(conn, owner, event_ids, DEAD, None)

    def ack(self, owner: str, event_ids: list[str]) -> None:
        if not event_ids:
            return
        if self._db.transaction(lambda conn: self._finish(conn, owner, event_ids, DONE, None)):
            self._notify()   # later events of these keys are claimable now

    def nack(self, owner: str, event_id: str, error: str, retry: bool, max_attempts: int,
             backoff_s: float, backoff_max_s: float) -> str:
        def work(conn):
            row = conn.execute(f"SELECT attempt FROM events WHERE id = ? AND owner = ? AND state = {LEASED}",
                               (event_id, owner)).fetchone()
            if row is None:
                return "lost"
            attempt = row[0]
            outcome = after_nack(attempt, retry, max_attempts, backoff_s, backoff_max_s)
            if outcome.dead:
                self._finish(conn, owner, [event_id], DEAD, error)
                log.warning("event=event_dead_lettered id=%s attempts=%d retry=%s", event_id, attempt, retry)
                return "dead"
            conn.execute(f"UPDATE events SET state = {PENDING}, owner = NULL, due = ?, error = ? WHERE id = ?",
                         (self._clock() + outcome.delay_s, error, event_id))
            return "pending"

        state = self._db.transaction(work)
        if state == "dead":
            self._notify()   # the next event of its key is claimable now
        return state

    def release(self, owner: str, event_ids: list[str]) -> None:
        """Back to pending, claimable at once; the delivery is not counted (attempt - 1 for a head,
        whose attempt was charged; a follower's never was)."""
        if not event_ids:
            return
        now = self._clock()
        released = self._db.transaction(lambda conn: sum(conn.execute(
            f"UPDATE events SET state = {PENDING}, owner = NULL, due = ?, attempt = max(attempt - head, 0)"
            f" WHERE id = ? AND owner = ? AND state = {LEASED}", (now, event_id, owner)).rowcount
            for event_id in event_ids))
        if released:
            self._notify()

    def expire_leases(self, owner: str) -> int:
        expired = self._db.transaction(lambda conn: conn.execute(
            f"UPDATE events SET due = ? WHERE owner = ? AND state = {LEASED}", (self._clock(), owner)).rowcount)
        if expired:
            self._notify()
        return expired

    def extend_leases(self, owner: str, event_ids: list[str], lease_s: float) -> None:
        if not event_ids:
            return
        until = self._clock() + lease_s
        self._db.transaction(lambda conn: conn.executemany(
            f"UPDATE events SET due = ? WHERE id = ? AND owner = ? AND state = {LEASED}",
            [(until, event_id, owner) for event_id in event_ids]))

    def next_wakeup(self) -> float | None:
        return self._db.read("SELECT min(due) FROM events WHERE head = 1 AND due > ?", (self._clock(),))[0][0]
