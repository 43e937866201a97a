"""The `batch` frame (SPEC.md section 7, "Batches"): a conversation's run of events in one frame
to a handler that took the feature, `[2, "batch", [[msgid, document], …]]`, each entry packed once."""
from __future__ import annotations

from collections import deque
from typing import Callable

from frontdesk.protocol import rpc
from frontdesk.protocol.frames import HEADER, EncodeError, pack, pack_array_header

BATCH = "batch"   # the protocol feature's name in the handshake, and the frame's method
BATCH_PREFIX = pack_array_header(3) + pack(rpc.NOTIFICATION) + pack(BATCH)   # then [[msgid, doc], …]
Entry = tuple[int, dict, bytes]   # msgid, document, the packed [msgid, document]


def pack_run(first: dict, run: deque, next_msgid: Callable[[], int], max_frame_bytes: int) -> list[Entry]:
    """`first` and as much of `run` as fits in max_frame_bytes. A msgid is spent on an entry that
    does not fit (msgids may skip); a follower that cannot be packed ends the batch (it goes
    alone later, and fails there). Raises EncodeError when `first` cannot be packed."""
    entries, size = [], len(BATCH_PREFIX) + 5   # 5: the largest array header
    for item in (first, *run):
        msgid = next_msgid()
        try:
            entry = pack([msgid, item])
        except EncodeError:
            if entries:
                break
            raise
        if entries and size + len(entry) > max_frame_bytes:
            break
        entries.append((msgid, item, entry))
        size += len(entry)
    return entries


def batch_frame(entries: list[Entry]) -> bytes:
    body = BATCH_PREFIX + pack_array_header(len(entries)) + b"".join(entry for _, _, entry in entries)
    return HEADER.pack(len(body)) + body
