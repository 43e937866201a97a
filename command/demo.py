"""`frontdesk run --sandbox --demo`: send a few signed example webhooks, show what users got.

Runs beside the arbiter in a thread: waits until the receiver and the sandbox accept
connections, sends the webhooks with `frontdesk bench` (the same command the banner prints),
whose `--show` prints, event by event, what the sandbox recorded as delivered to the "users",
then says that the system keeps running and how to play a user yourself.
"""
from __future__ import annotations

import shlex
import socket
import subprocess
import sys
import threading
import time

from frontdesk.protocol.config import KNOBS_BY_NAME
from frontdesk.protocol.credentials import ChildSecrets

DEMO_EVENTS = 5
READY_TIMEOUT_S = 20.0


def demo_command(settings) -> list[str]:
    return [sys.executable, "-m", "frontdesk", "bench", "--count", str(DEMO_EVENTS), "--rate", "5",
            "--users", "3", "--url", f"http://{settings.listen}{settings.callback_path}",
            "--sandbox-url", f"http://{settings.sandbox_listen}", "--settle", "10", "--show"]


def accepting(address: str) -> bool:
    """Does something accept TCP connections at HOST:PORT?"""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def wait_listening(addresses: list[str]) -> bool:
    """The services announce nothing when they listen, so try to connect, briefly, a few times."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not all(accepting(a) for a in addresses):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def say_command(settings) -> str:
    """`frontdesk say`, with the addresses only where they are not the defaults it assumes."""
    words = ["frontdesk", "say", "hello"]
    if settings.listen != KNOBS_BY_NAME["listen"].default or \
            settings.callback_path != KNOBS_BY_NAME["callback_path"].default:
        words += ["--url", f"http://{settings.listen}{settings.callback_path}"]
    if settings.sandbox_listen != KNOBS_BY_NAME["sandbox_listen"].default:
        words += ["--sandbox-url", f"http://{settings.sandbox_listen}"]
    return shlex.join(words)


def run_demo(settings, env: dict[str, str], secret: ChildSecrets) -> None:
    """`env` has no secret: the bench signs with the channel secret's descriptor, as the receiver checks."""
    if not wait_listening([settings.listen, settings.sandbox_listen]):
        print("demo: the receiver or the sandbox did not start listening; see the log above", flush=True)
        return
    print(f"demo: sending {DEMO_EVENTS} signed example webhooks", flush=True)
    subprocess.run(demo_command(settings), env={**env, **secret.environ}, pass_fds=secret.pass_fds, check=False)
    # Without this the demo looks finished, and nothing says the system behind it still runs.
    print(f"demo: done; frontdesk keeps running: play a user with `{say_command(settings)}`, "
          "Ctrl-C stops everything", flush=True)


def start_demo(settings, env: dict[str, str], secret: ChildSecrets) -> threading.Thread:
    thread = threading.Thread(target=run_demo, args=(settings, env, secret), name="demo", daemon=True)
    thread.start()
    return thread
