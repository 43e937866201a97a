"""A real `frontdesk sandbox` process for tests: start it with chosen knobs, always stop it."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys

import requests

from tests.helpers import free_port, wait_until

SECRET = "sandbox-test-secret"
TOKEN = "sandbox-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _accepting(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Sandbox:
    def __init__(self, process: subprocess.Popen, port: int, log_path):
        self.process, self.port, self.log_path = process, port, log_path
        self.url = f"http://127.0.0.1:{port}"

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def deliveries(self, since: int = 0) -> list[dict]:
        answer = requests.get(f"{self.url}/sandbox/deliveries", params={"since": since}, timeout=5)
        answer.raise_for_status()
        return answer.json()

    def stats(self) -> dict:
        return requests.get(f"{self.url}/sandbox/stats", timeout=5).json()


@contextlib.contextmanager
def running_sandbox(tmp_path, secret: str | None = SECRET, token: str | None = TOKEN, **knobs):
    """Yield a Sandbox listening on a free port; `knobs` are settings (e.g. sandbox_fault_rate=1)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRONTDESK_", "LINE_"))}
    env.update({"FRONTDESK_SANDBOX_LISTEN": f"127.0.0.1:{port}", "FRONTDESK_LOG_LEVEL": "INFO"})
    if secret is not None:
        env["LINE_CHANNEL_SECRET"] = secret
    if token is not None:
        env["LINE_CHANNEL_ACCESS_TOKEN"] = token
    env.update({f"FRONTDESK_{name.upper()}": str(value) for name, value in knobs.items()})
    log_path = tmp_path / f"sandbox-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "frontdesk", "sandbox"], env=env,
                                   cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    sandbox = Sandbox(process, port, log_path)
    try:
        wait_until(lambda: process.poll() is not None or _accepting(port), timeout=15,
                   message="sandbox listening")
        assert process.poll() is None, f"sandbox exited early:\n{sandbox.log()}"
        yield sandbox
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.contextmanager
def api_session(base_url: str, timeout: float):
    """`call(method, path, **kwargs)` to a sandbox with the channel's token, on one keep-alive session."""
    session = requests.Session()
    session.headers.update(AUTH)
    try:
        yield lambda method, path, **kwargs: session.request(method, base_url + path, timeout=timeout, **kwargs)
    finally:
        session.close()
