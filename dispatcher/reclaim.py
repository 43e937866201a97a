"""Leases a dead predecessor left: ended at start, not after lease_s.

A dispatcher of this host whose process is gone (kill -9, a crash of the whole tree, a reboot) left
leases nobody will answer. Ending them at once means a reply interrupted by the crash is retried
within seconds, inside its token's life. Every dispatcher publishes its lease owner in its status
document before its first claim, which is how its successor finds them.
"""
from __future__ import annotations

import logging
import os

from frontdesk.protocol.process import status_role
from frontdesk.store import StoreError

log = logging.getLogger("frontdesk.dispatcher")


def reclaim_from_dead_predecessors(store, host: str, pid: int) -> None:
    """Expire the leases of every dispatcher of `host` whose process is gone (ours aside)."""
    try:
        for name, doc in store.get_statuses().items():
            other, owner = doc.get("pid"), doc.get("owner")
            if (status_role(name) == "dispatcher" and doc.get("host") == host and owner
                    and isinstance(other, int) and other != pid and not process_alive(other)):
                count = store.expire_leases(owner)
                if count:
                    log.warning("event=predecessor_leases_expired pid=%d owner=%s events=%d", other, owner, count)
    except StoreError as exc:
        log.error("event=store_call_failed op=expire_leases error=%r", str(exc))


def process_alive(pid: int) -> bool:
    """Whether a process of this pid exists (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        return False
    except OSError:   # no /proc: ask the kernel (a zombie then counts as alive)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
