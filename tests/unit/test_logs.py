"""`frontdesk logs`: which role each line of the shared log file comes from, and reading a file
that grows, is rotated or is being written."""
from __future__ import annotations

import os

from frontdesk.logs import LogFilter, Reader

LINES = [
    "2026-12-07 10:00:00,001 INFO frontdesk.store.sqlite[20] store_opened path=/x.db\n",   # pid 20 not known yet
    "2026-12-07 10:00:00,002 INFO frontdesk.run[10] service_started name=dispatcher pid=20\n",
    "2026-12-07 10:00:00,003 INFO frontdesk.dispatcher[20] handler_started name=handler-1 pid=30\n",
    "2026-12-07 10:00:00,004 INFO frontdesk.dispatcher[20] event=child_stderr name=handler-1 pid=30 text=hello\n",
    "2026-12-07 10:00:00,005 INFO frontdesk.receiver[40] event=webhook_answered status=200 events=1 new=1 dup=0 ms=1.2\n",
    "2026-12-07 10:00:00,006 ERROR frontdesk.store.sqlite[20] store_call_failed op=ack\n",
    "Traceback (most recent call last):\n",
    "  File \"x.py\", line 1, in <module>\n",
    "2026-12-07 10:00:00,007 INFO frontdesk.http[40] event=listening address=127.0.0.1:8000\n",
    "2026-12-07 10:00:00,008 INFO frontdesk.ratelimiter[50] started api_base=http://127.0.0.1:8100\n",
]


def shown(role):
    keep = LogFilter(role)
    return [line for raw in LINES for line in keep.feed(raw)]


def test_every_line_without_a_role():
    assert shown(None) == LINES


def test_a_role_has_its_process_lines_its_earlier_lines_and_its_tracebacks():
    assert shown("dispatcher") == [LINES[0], LINES[2], LINES[3], LINES[5], LINES[6], LINES[7]]
    assert shown("handlers") == [LINES[3]]
    assert shown("receiver") == [LINES[4], LINES[8]]
    assert shown("run") == [LINES[1]]
    assert shown("ratelimiter") == [LINES[9]]
    assert shown("sandbox") == []


def test_the_reader_takes_whole_lines_and_starts_again_in_a_rotated_file(tmp_path):
    path = tmp_path / "fd.log"
    path.write_text(LINES[1] + LINES[4][:20])
    got: list[str] = []
    reader = Reader(str(path), LogFilter(None))
    reader.read(got.extend)
    assert got == [LINES[1]]
    with open(path, "a") as f:
        f.write(LINES[4][20:])
    reader.read(got.extend)
    assert got == [LINES[1], LINES[4]]
    os.rename(path, tmp_path / "fd.log.1")            # logrotate moves it; processes start a new one
    reader.read(got.extend)
    assert got == [LINES[1], LINES[4]]
    path.write_text(LINES[8])
    reader.read(got.extend)
    assert got == [LINES[1], LINES[4], LINES[8]]
    path.write_text("")                                # truncated in place (copytruncate)
    reader.read(got.extend)
    with open(path, "a") as f:
        f.write(LINES[9])
    reader.read(got.extend)
    assert got == [LINES[1], LINES[4], LINES[8], LINES[9]]
