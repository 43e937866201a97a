"""The tables `frontdesk status` and `frontdesk top` print, in-process: the handler table drawn
once (command/handler_table.py) and the status table's words for a silent process."""
from __future__ import annotations

import time

from frontdesk.admin import print_status_table
from frontdesk.handler_table import figure, handler_table, percent

READY = {"name": "handler-1", "pid": 4001, "state": "ready", "in_flight": 3, "handled": 250, "restarts": 0}
WAITING = {"name": "handler-2", "pid": None, "state": "waiting_restart", "in_flight": 0, "handled": 7, "restarts": 6}


def test_the_status_table_has_one_row_per_handler_under_its_header():
    lines = handler_table([READY, WAITING], indent="    ")
    assert [line.split() for line in lines] == [["handler", "pid", "state", "in_flight", "handled", "restarts"],
                                                ["handler-1", "4001", "ready", "3", "250", "0"],
                                                ["handler-2", "-", "waiting_restart", "0", "7", "6"]]
    assert all(line.startswith("    ") for line in lines)


def test_the_columns_line_up_whatever_the_values():
    lines = handler_table([READY, WAITING, {**READY, "name": "handler-12", "handled": 12345678}])
    ends = {len(line) for line in lines}
    assert len(ends) == 1, lines


def test_with_rates_the_measured_columns_stand_between_in_flight_and_handled():
    row = {**READY, "events_per_s": 12.345, "busy_share": 0.5, "p50_ms": 1.0, "p99_ms": None}
    header, line = handler_table([row], rates=True)
    assert header.split() == ["handler", "pid", "state", "in_flight", "ev/s", "busy", "p50ms", "p99ms", "handled",
                              "restarts"]
    assert line.split() == ["handler-1", "4001", "ready", "3", "12.3", "50%", "1", "-", "250", "0"]


def test_nothing_to_draw_draws_nothing_and_malformed_rows_are_skipped():
    assert handler_table([]) == [] and handler_table(None) == [] and handler_table("x") == []
    assert len(handler_table(["not a dict", READY])) == 2


def test_figures_and_percentages_say_unknown_as_a_dash():
    assert (figure(None), figure(3), figure(2.25, 1), figure(2.0)) == ("-", "3", "2.2", "2")
    assert (percent(None), percent(0.256)) == ("-", "26%")


def test_status_marks_a_silent_process_stale_and_a_stopped_one_not(capsys):
    now = time.time()
    print_status_table({"store": "sqlite:///x.db", "events": {"pending": 0, "in_flight": 0, "done": 0, "dead": 0,
                                                            "oldest_pending_s": 0.0},
                        "processes": {"run:h:1": {"state": "running", "updated_at": now - 42},
                                      "run:h:2": {"state": "stopped", "updated_at": now - 42},
                                      "run:h:3": {"state": "running", "updated_at": now}}})
    lines = capsys.readouterr().out.splitlines()
    stale = [n for n, line in enumerate(lines) if "STALE: no status for 42 s" in line]
    assert len(stale) == 1 and "run:h:1" in lines[stale[0] - 1]
