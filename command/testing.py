"""Conversations as tests: `frontdesk test TRANSCRIPT...`, and the same from pytest.

A transcript (command/transcript.py; the sandbox's chat export writes them) holds what users sent
and what the bot answered. A replay sends the users' side again, as LINE would, to a running
system with the sandbox as its LINE API, and compares what the bot sends now with what it sent
then, turn by turn: ids, reply tokens and times aside, `"<any>"` matching anything. The system is
one that runs (`--url`, `--sandbox-url`, as `frontdesk say` takes them), or one this starts on
free ports and stops after (`--handler`, as `frontdesk run --sandbox` would start it).

From Python (docs/handlers.md, "Conversations as tests")::

    from frontdesk.testing import replay, start_system

    with start_system(handler="python3 mybot.py") as system:
        result = replay("chats/greeting.json", system)
        assert result.ok, result.report()
"""
from __future__ import annotations

import contextlib
import copy
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from frontdesk.protocol.config import (SANDBOX_ACCESS_TOKEN, SANDBOX_CHANNEL_SECRET, ConfigError,
                                       sandbox_credentials)
from frontdesk.protocol.credentials import without_secrets
from frontdesk.sandbox.webhooks import NO_REPLY_KINDS, EventFactory, mint_reply_token, new_webhook_event_id, source_key
from frontdesk.store import StoreError, open_store, sqlite_file_missing

from .conversation import Player, PlayerError
from .demo import accepting
from .transcript import BotTurn, Difference, Transcript, TranscriptError, compare_step, load, parse

__all__ = ["replay", "start_system", "System", "Result", "SystemUnavailable", "Transcript", "TranscriptError", "load"]

TURN_TIMEOUT_S = 10.0      # how long one user turn may wait for the bot's answers
READY_TIMEOUT_S = 60.0     # how long a started system may take until its handlers are ready
STOP_TIMEOUT_S = 60.0      # how long a started system may take to stop (it drains first)
LOG_LINES_SHOWN = 20       # a started system that fails: this many of its last log lines


@dataclass(frozen=True)
class System:
    """A running system to replay against."""
    url: str                                   # its webhook URL
    sandbox_url: str                           # its sandbox (the LINE API it uses)
    secret: str = SANDBOX_CHANNEL_SECRET       # its channel secret: webhooks are signed with it
    access_token: str = SANDBOX_ACCESS_TOKEN   # for the sandbox's profile API
    store: str | None = None                   # its store URL: tells when the bot is done with a turn


class SystemUnavailable(Exception):
    """A system could not be started or reached; the message says why (with its last log lines)."""


@dataclass
class Result:
    """One transcript's replay."""
    transcript: Transcript
    differences: list[Difference] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None      # the replay stopped: why

    @property
    def ok(self) -> bool:
        return not self.differences and self.error is None

    def report(self) -> str:
        """What `frontdesk test` prints for this transcript: PASS, or FAIL and each difference."""
        bot_turns = sum(len(step.bot_turns) for step in self.transcript.steps)
        if self.ok:
            lines = [f"PASS {self.transcript.name} ({len(self.transcript.steps)} user turns, {bot_turns} bot turns)"]
        else:
            lines = [f"FAIL {self.transcript.name}"]
            lines += [f"  {difference}" for difference in self.differences]
            if self.error:
                lines.append(f"  stopped: {self.error}")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def replay(transcript, system: System | None = None, *, handler: str | None = None,
           timeout: float = TURN_TIMEOUT_S) -> Result:
    """Replay a transcript (a path, a parsed document or a Transcript) against `system`, or
    against one started for this call with `handler` (a command line; None: the bundled echo bot).

    Raises TranscriptError for a transcript that cannot be replayed, SystemUnavailable when the system
    cannot be reached or started. Differences are in the result, not raised."""
    if not isinstance(transcript, Transcript):
        transcript = parse(transcript) if isinstance(transcript, dict) else load(transcript)
    if system is not None and handler is not None:
        raise ValueError("replay: give a running system or a handler to start one, not both")
    if system is None:
        with start_system(handler=handler) as started:
            return replay(transcript, started, timeout=timeout)
    try:
        player = Player(system.url, system.sandbox_url, system.secret, system.store, by="test")
    except PlayerError as exc:
        raise SystemUnavailable(str(exc)) from None
    with player:
        return _replay(transcript, player, system, timeout)


def _replay(transcript: Transcript, player: Player, system: System, timeout: float) -> Result:
    result = Result(transcript)
    result.notes += _name_notes(transcript, player, system.access_token)
    result.notes += [f"turns[{turn.index}]: a {turn.kind} before any user turn: not compared (no turn of "
                     "the transcript causes it)" for turn in transcript.unprompted]
    message_ids: dict[str, str] = {}
    for step in transcript.steps:
        turn = step.user_turn
        event = fresh_event(turn.event, player.factory, message_ids)
        status = player.send(event)
        if status != 200:
            result.error = (f"turns[{turn.index}]: the receiver at {system.url} answered "
                            f"{status or 'nothing'} to the event; later turns were not replayed")
            break
        outcome = player.collect(event, transcript.chat_id, expected=len(step.bot_turns), timeout=timeout)
        got = [BotTurn(None, d["endpoint"], d["messages"]) for d in outcome.deliveries]
        result.differences += compare_step(step, got)
        if outcome.dead_letter:
            attempts = outcome.dead_letter["attempts"]
            result.notes.append(f"turns[{turn.index}]: the event became a dead letter after {attempts} "
                                f"attempt{'s' if attempts != 1 else ''}: {outcome.dead_letter['error']}")
        elif not outcome.finished:
            result.notes.append(f"turns[{turn.index}]: the bot was not done with the event within {timeout:g} s")
    return result


def _name_notes(transcript: Transcript, player: Player, access_token: str) -> list[str]:
    """Where the sandbox's profile names differ from the transcript's: answers that use the name
    differ then, and this says why."""
    notes = []
    for user_id, name in transcript.users.items():
        try:
            answer = player.session.get(f"{player.sandbox_url}/v2/bot/profile/{user_id}", timeout=5,
                                        headers={"Authorization": f"Bearer {access_token}"})
            known = answer.json().get("displayName") if answer.status_code == 200 else None
        except (OSError, ValueError):
            continue
        if known is not None and known != name:
            notes.append(f"the sandbox's profile of {user_id} is named {known!r}, the transcript's {name!r}: "
                         "answers that use the name will differ")
    return notes


def fresh_event(recorded: dict, factory: EventFactory, message_ids: dict[str, str]) -> dict:
    """The recorded event as LINE would send it now: new webhook event id, time, reply token,
    message id (keeping its content kind) and quote token. `message_ids` maps recorded message
    ids to new ones, so that an unsend later in the transcript names the right message."""
    event = copy.deepcopy(recorded)
    now_ms = int(time.time() * 1000)
    event_id = new_webhook_event_id(now_ms)
    event.update(webhookEventId=event_id, timestamp=now_ms, deliveryContext={"isRedelivery": False})
    event.setdefault("mode", "active")
    message = event.get("message")
    kind = message["type"] if event["type"] == "message" else event["type"]
    if kind in NO_REPLY_KINDS:
        event.pop("replyToken", None)
    else:
        event["replyToken"] = mint_reply_token(factory.secret, source_key(event["source"]), event_id, now_ms)
    if isinstance(message, dict):
        new_id = factory.message_id(message["type"])
        if isinstance(message.get("id"), str):
            message_ids[message["id"]] = new_id
        message["id"] = new_id
        if "quoteToken" in message:
            message["quoteToken"] = secrets.token_urlsafe(12)
    unsend = event.get("unsend")
    if isinstance(unsend, dict) and unsend.get("messageId") in message_ids:
        unsend["messageId"] = message_ids[unsend["messageId"]]
    return event


# --- a system of its own ----------------------------------------------------------------------------

@contextlib.contextmanager
def start_system(handler: str | None = None, handlers: int = 1, environ: dict[str, str] | None = None):
    """`frontdesk run --sandbox` on free loopback ports, its store in a temporary folder, no status
    page; yields a System once its handlers are ready, stops it (and removes the folder) after.

    `handler`: the handler's command line (None: the bundled echo bot). `environ`: the settings
    of the system (default: this process's environment); credentials are never passed on, so it
    uses the sandbox's. Raises SystemUnavailable, with the system's last log lines, when it does not
    start."""
    environ = os.environ if environ is None else environ
    env = without_secrets(environ)
    with tempfile.TemporaryDirectory(prefix="frontdesk-test-") as folder:
        listen, sandbox_listen = _free_address(), _free_address()
        store = f"sqlite:///{Path(folder) / 'frontdesk.db'}"
        argv = [sys.executable, "-m", "frontdesk", "run", "--sandbox", "--listen", listen, "--admin-listen", "",
                "--store", store, "--handlers", str(handlers), "--set", f"sandbox_listen={sandbox_listen}"]
        if handler is not None:
            argv += ["--handler", handler]
        log_path = Path(folder) / "run.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_ready(process, store, [listen, sandbox_listen], log_path)
            yield System(f"http://{listen}/callback", f"http://{sandbox_listen}", store=store)
        finally:
            _stop(process)


def _free_address() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def _wait_ready(process: subprocess.Popen, store_url: str, addresses: list[str], log_path: Path) -> None:
    """Until the receiver and the sandbox accept connections and the dispatcher's handlers are
    all ready (it publishes them in the store every second); nothing announces that, so look."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    store = None
    try:
        while True:
            if process.poll() is not None:
                raise SystemUnavailable(f"frontdesk run exited with status {process.returncode} while starting"
                                  + _log_tail(log_path))
            if store is None and not sqlite_file_missing(store_url):
                store = open_store(store_url)
            problem = _not_ready(store, addresses)
            if problem is None:
                return
            if problem.startswith("degraded"):
                raise SystemUnavailable(f"the handler does not start ({problem})" + _log_tail(log_path))
            if time.monotonic() > deadline:
                raise SystemUnavailable(f"not ready within {READY_TIMEOUT_S:g} s: {problem}" + _log_tail(log_path))
            time.sleep(0.1)
    except StoreError as exc:
        raise SystemUnavailable(f"cannot read the started system's store: {exc}" + _log_tail(log_path)) from None
    finally:
        if store is not None:
            store.close()


def _not_ready(store, addresses: list[str]) -> str | None:
    """What the started system still lacks, or None when it is ready."""
    for address in addresses:
        if not accepting(address):
            return f"nothing listens on {address} yet"
    if store is None:
        return "no store yet"
    for name, doc in store.get_statuses().items():
        if name.startswith("dispatcher:"):
            if doc.get("degraded"):
                return f"degraded: {doc['degraded']}"
            ready = sum(1 for h in doc.get("handlers", []) if h.get("state") == "ready")
            if ready and ready >= (doc.get("handlers_target") or 1):
                return None
            return f"{ready} of {doc.get('handlers_target')} handlers ready"
    return "no dispatcher has published its status yet"


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)   # drains: what is in flight finishes
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _log_tail(log_path: Path) -> str:
    try:
        lines = log_path.read_text(errors="replace").splitlines()[-LOG_LINES_SHOWN:]
    except OSError:
        return ""
    return "; its last log lines:\n" + "\n".join("    " + line for line in lines) if lines else ""


# --- the command ------------------------------------------------------------------------------------

def main(settings, args) -> int:
    """`frontdesk test TRANSCRIPT...`: 0 when every transcript replays as recorded, 1 when one
    differs, 2 when one cannot be read or replayed (or the system cannot be reached or started)."""
    if args.timeout <= 0:
        raise ConfigError("test: --timeout must be positive")
    starting = args.handler is not None
    if starting and (args.url or args.sandbox_url):
        raise ConfigError("test: give --handler (start a system) or --url/--sandbox-url (use a running one), not both")
    transcripts, bad = [], 0
    for path in args.transcripts:
        try:
            transcripts.append(load(path))
        except TranscriptError as exc:
            print(f"frontdesk test: {exc}", file=sys.stderr)
            bad += 1
    if bad:
        return 2
    try:
        if starting:
            env = {**os.environ, **settings.to_environ()}
            with start_system(handler=args.handler, handlers=_count(args.handlers), environ=env) as system:
                results = [_run(t, system, args.timeout) for t in transcripts]
        else:
            secret, token = sandbox_credentials(settings)
            system = System(args.url or f"http://{settings.listen}{settings.callback_path}",
                            args.sandbox_url or f"http://{settings.sandbox_listen}", secret, token, settings.store)
            results = [_run(t, system, args.timeout) for t in transcripts]
    except SystemUnavailable as exc:
        print(f"frontdesk test: {exc}", file=sys.stderr)
        return 2
    failed = sum(1 for result in results if not result.ok)
    print(f"{len(results)} transcript{'s' if len(results) != 1 else ''}: {len(results) - failed} passed, "
          f"{failed} failed", flush=True)
    if any(result.error for result in results):
        return 2
    return 1 if failed else 0


def _run(transcript: Transcript, system: System, timeout: float) -> Result:
    result = replay(transcript, system, timeout=timeout)
    print(result.report(), flush=True)
    return result


def _count(handlers) -> int:
    """--handlers for a started system: one unless given (`auto` is for production pools)."""
    if handlers is None:
        return 1
    if isinstance(handlers, str) and handlers.isdigit() and int(handlers) >= 1:
        return int(handlers)
    raise ConfigError(f"test: --handlers must be a number of at least 1, got {handlers!r}")
