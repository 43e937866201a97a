"""CPU time per role of the system a bench drives, read from /proc: the figure that stays
meaningful on a noisy shared machine, where wall-clock rates swing with the neighbours. Beside it
each role's resident memory (RSS) at the start and the end of the run: growth under load.

The processes are found where they say what they are: `frontdesk run`'s and every dispatcher's
status document in the store (dispatcher, handlers, rate limiter, and the run's receiver and
sandbox), and, for a receiver or sandbox started on its own, the process listening on the port
the bench talks to. A sampler thread reads utime + stime of each once a second, so a process
that starts during the run counts from zero and one that dies keeps what was last read of it
(it loses at most one interval). A role's RSS is the sum over its processes: when each was first
seen, and when last seen. Processes on another host cannot be read: their roles show None and
`note` says so.
"""
from __future__ import annotations

import os
import socket
import threading
import time

from frontdesk.protocol.process import status_role
from frontdesk.store import Store, StoreError

ROLES = ("receiver", "dispatcher", "handlers", "ratelimiter", "sandbox", "bench")
INTERVAL_S = 1.0
_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE_MB = os.sysconf("SC_PAGE_SIZE") / (1 << 20)


def process_cpu_s(pid: int) -> float | None:
    """utime + stime of a process in seconds, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS   # fields 14 and 15 of proc(5)


def process_rss_mb(pid: int) -> float | None:
    """Resident memory of a process in MB, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * _PAGE_MB   # resident pages (proc(5))
    except (OSError, IndexError, ValueError):
        return None


def listening_pids(port: int) -> set[int]:
    """Processes of this host with a TCP socket listening on `port` (several with SO_REUSEPORT)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            parts = row.split()
            if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:   # 0A: LISTEN
                inodes.add(parts[9])
    if not inodes:
        return set()
    wanted = {f"socket:[{inode}]" for inode in inodes}
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            for fd in os.listdir(f"/proc/{entry}/fd"):
                if os.readlink(f"/proc/{entry}/fd/{fd}") in wanted:
                    found.add(int(entry))
                    break
        except OSError:
            continue
    return found


class RoleCpu:
    """Samples the CPU seconds of every process of the driven system, by role, while running."""

    def __init__(self, store: Store | None, receiver_port: int | None, sandbox_port: int | None):
        self._store = store
        self._ports = {"receiver": receiver_port, "sandbox": sandbox_port}
        self._host = socket.gethostname()
        self._first: dict[int, float] = {}                 # pid -> CPU s when first seen
        self._last: dict[int, tuple[str, float]] = {}      # pid -> (role, CPU s when last seen)
        self._rss: dict[int, list[float]] = {}             # pid -> [RSS MB when first seen, when last seen]
        self._own_start = 0.0
        self._own = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-cpu", daemon=True)
        self.remote = False     # some process of the system publishes from another host

    def start(self) -> None:
        self._own_start = _own_cpu_s()
        self._sample(first=True)
        self._thread.start()

    def stop(self) -> dict:
        """{"cpu_s": {role: seconds or None}, "processes": {role: count}, "rss_mb": {role: {"start":
        MB, "end": MB} or None}, "note": str}."""
        self._stop.set()
        self._thread.join()
        self._sample()
        self._own = _own_cpu_s() - self._own_start
        used: dict[str, float] = {}
        counts: dict[str, int] = {}
        rss: dict[str, dict[str, float]] = {}
        for pid, (role, last) in self._last.items():
            used[role] = used.get(role, 0.0) + last - self._first.get(pid, 0.0)
            counts[role] = counts.get(role, 0) + 1
            if pid in self._rss:
                sums = rss.setdefault(role, {"start": 0.0, "end": 0.0})
                sums["start"] += self._rss[pid][0]
                sums["end"] += self._rss[pid][1]
        used["bench"], counts["bench"] = self._own, 1
        note = "read from /proc of this host"
        if self.remote:
            note += "; some processes run on another host and are not counted"
        missing = [role for role in ROLES if role not in used]
        if missing:
            note += f"; not found on this host: {', '.join(missing)}"
        return {"cpu_s": {role: round(used[role], 3) if role in used else None for role in ROLES},
                "processes": counts, "note": note,
                "rss_mb": {role: {k: round(v, 1) for k, v in rss[role].items()} if role in rss else None
                           for role in ROLES if role != "bench"}}

    def _run(self) -> None:
        while not self._stop.wait(INTERVAL_S):
            self._sample()

    def _sample(self, first: bool = False) -> None:
        for pid, role in self._processes().items():
            cpu = process_cpu_s(pid)
            if cpu is None:
                continue
            if pid not in self._last:
                # seen at the start: count from now; born during the run: count all of it
                self._first[pid] = cpu if first else 0.0
            self._last[pid] = (role, cpu)
            memory = process_rss_mb(pid)
            if memory is not None:
                self._rss.setdefault(pid, [memory, memory])[1] = memory

    def _processes(self) -> dict[int, str]:
        found: dict[int, str] = {}
        try:
            statuses = self._store.get_statuses() if self._store is not None else {}
        except StoreError:   # a store hiccup costs one sample, not the bench
            statuses = {}
        fresh_after = time.time() - 10
        for name, doc in statuses.items():
            if doc.get("updated_at", 0) < fresh_after or doc.get("state") == "stopped":
                continue
            if doc.get("host") != self._host:
                self.remote = True
                continue
            role = status_role(name)
            if role == "dispatcher":
                found[doc["pid"]] = "dispatcher"
                found.update({h["pid"]: "handlers" for h in doc.get("handlers", []) if h.get("pid")})
                if (doc.get("ratelimiter") or {}).get("pid"):
                    found[doc["ratelimiter"]["pid"]] = "ratelimiter"
            elif role == "run":
                for service, state in (doc.get("services") or {}).items():
                    if state.get("pid") and service in ("receiver", "sandbox"):
                        found[state["pid"]] = service
        for role, port in self._ports.items():   # also a receiver or sandbox started on its own
            if port:
                found.update({pid: role for pid in listening_pids(port)})
        return found


def _own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system
