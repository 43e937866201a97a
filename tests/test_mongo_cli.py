"""Operator commands given a replica set's URL with a password and several hosts: one clear line,
the password masked, no traceback (urlsplit's port used to crash them). No server is needed: the
hosts are closed ports on 127.0.0.1."""
from __future__ import annotations

import subprocess
import sys

URL = "mongodb://u:s3cr3tpw@127.0.0.1:1,127.0.0.1:2/db?replicaSet=rs0&serverSelectionTimeoutMS=200"


def frontdesk(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "frontdesk", *args], capture_output=True, text=True, timeout=60)


def test_status_on_an_unreachable_replica_set_is_one_line_with_the_password_masked():
    done = frontdesk("status", "--store", URL)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "s3cr3tpw" not in done.stderr + done.stdout
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("frontdesk status: store mongodb://u:***@127.0.0.1:1,127.0.0.1:2/db")
    assert "cannot reach MongoDB" in line


def test_config_shows_the_url_with_the_password_masked():
    done = frontdesk("config", "--store", URL)
    assert done.returncode == 0, done.stderr
    assert "mongodb://u:***@127.0.0.1:1,127.0.0.1:2/db" in done.stdout and "s3cr3tpw" not in done.stdout
