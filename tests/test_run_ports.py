"""`frontdesk run` with one of its addresses taken says which and exits 2 at once, before it
prints its banner or starts anything."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from tests.helpers import free_port, wait_until


@pytest.mark.parametrize("key", ["listen", "admin_listen", "sandbox_listen"])
def test_run_fails_fast_naming_the_taken_address(tmp_path, key):
    addresses = {name: f"127.0.0.1:{free_port()}" for name in ("listen", "admin_listen", "sandbox_listen")}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRONTDESK_", "LINE_"))}
    env.update({f"FRONTDESK_{name.upper()}": address for name, address in addresses.items()})
    env["FRONTDESK_STORE"] = f"sqlite:///{tmp_path}/fd.db"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", int(addresses[key].rpartition(":")[2])))
        taken.listen()
        run = subprocess.run([sys.executable, "-m", "frontdesk", "run", "--sandbox"], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=30)
    assert run.returncode == 2
    assert run.stderr.strip() == f"frontdesk run: cannot listen on {addresses[key]} ({key}): Address already in use"
    assert "starting" not in run.stdout and not (tmp_path / "fd.db").exists()


def test_a_cleanly_stopped_run_leaves_no_status_behind(tmp_path):
    from frontdesk.store import open_store
    from tests.test_webhooks import running_system

    with running_system(tmp_path) as (_, _, env):
        store = open_store(env["FRONTDESK_STORE"])
        try:
            wait_until(lambda: {name.split(":")[0] for name in store.get_statuses()} == {"run", "dispatcher"},
                       timeout=30, message="run and dispatcher publishing")
        finally:
            store.close()
    store = open_store(env["FRONTDESK_STORE"])      # running_system stopped it with SIGINT
    try:
        assert store.get_statuses() == {}
    finally:
        store.close()
