"""`frontdesk run`: everything on one machine (with --sandbox the LINE API emulator too). A
`Supervisor` (command/supervisor.py) starts the sandbox, the dispatcher and the receiver as
`python -m frontdesk.<role>` children, restarts whichever dies, and takes them all down with it.
The receiver gets the channel secret, the dispatcher the access token for its rate limiter, the
sandbox both, the status page neither: as inherited descriptors (protocol/credentials.py).
"""
from __future__ import annotations

import os
import shlex
import socket
import sys

from frontdesk.protocol.config import SANDBOX_ACCESS_TOKEN, SANDBOX_CHANNEL_ID, SANDBOX_CHANNEL_SECRET, ConfigError
from frontdesk.protocol.credentials import SealedSecrets, protect_held_secrets, without_secrets
from frontdesk.protocol.token_source import ratelimiter_secrets, require_token_source
from frontdesk.ratelimiter.token_api import TokenSource, TokenSourceError
from frontdesk.store import StoreError, open_store

from .demo import demo_command, start_demo
from .supervisor import Service, Supervisor


def role_command(name: str) -> list[str]:
    """The command line of one role's process: `ps` shows `python -m frontdesk.<role>`."""
    return [sys.executable, "-m", f"frontdesk.{name}"]


def _open_store(settings):
    try:
        return open_store(settings.store, check_integrity=True)   # first to open: sees a damaged WAL
    except StoreError as exc:
        print(f"frontdesk: cannot open the store: {exc}", file=sys.stderr)
        return None


def sandbox_settings(settings):
    """Point the system at the local emulator; fill in dev credentials where none are set, and
    the receiver's callback URL as the public URL (the sandbox's webhook URL) unless one is."""
    base = f"http://{settings.sandbox_listen}"
    changes = {"api_base": base, "api_data_base": base, "api_trace": True}   # trace: for the chat page
    if not settings.public_url:
        changes["public_url"] = f"http://{settings.listen}{settings.callback_path}"
    if not settings.channel_secret:
        changes["channel_secret"] = SANDBOX_CHANNEL_SECRET
    if not settings.channel_access_token:
        changes["channel_access_token"] = SANDBOX_ACCESS_TOKEN
    if not settings.channel_id:   # the channel the sandbox issues tokens for
        changes["channel_id"] = SANDBOX_CHANNEL_ID
    return settings.replace(**changes)


def main(settings, args) -> int:
    """`frontdesk run [--sandbox [--demo]]`."""
    if getattr(args, "demo", False) and not args.sandbox:
        raise ConfigError("--demo needs --sandbox (it sends webhooks to the local emulator)")
    if args.sandbox:
        settings = sandbox_settings(settings)
    else:
        settings.require_secrets("channel_secret")
    require_token_source(settings)
    try:
        TokenSource(settings)   # a key that cannot sign is said now, not by a rate limiter restarted forever
    except TokenSourceError as exc:
        raise ConfigError(str(exc)) from None
    # Each secret is sealed once and its descriptor handed to the children that need it, at every
    # (re)start: we keep them for our whole life, so we are non-dumpable (protocol/credentials.py).
    protect_held_secrets(settings)
    secrets = SealedSecrets(settings, ["channel_secret", "channel_access_token", "channel_private_key"])
    env = {**without_secrets(os.environ), **settings.to_environ()}
    services = []
    if args.sandbox:   # it plays LINE, which knows both
        services.append(Service("sandbox", role_command("sandbox"), env, settings, f"http://{settings.sandbox_listen}",
                                secrets=secrets.for_child("channel_secret", "channel_access_token")))
    services.append(Service("dispatcher", role_command("dispatcher"), env, settings,   # for its rate limiter
                            stop_grace_s=settings.drain_grace_s + 2 * settings.kill_grace_s,
                            secrets=secrets.for_child(*ratelimiter_secrets(settings))))
    webhook_url = f"http://{settings.listen}{settings.callback_path}"
    services.append(Service("receiver", role_command("receiver"), env, settings, webhook_url,
                            secrets=secrets.for_child("channel_secret")))
    if settings.admin_listen:
        services.append(Service("statuspage", role_command("statuspage"), env, settings,
                                f"http://{settings.admin_listen}/"))
    taken = _taken_addresses(settings, args.sandbox)
    if taken:
        for line in taken:
            print(f"frontdesk run: {line}", file=sys.stderr)
        return 2
    store = _open_store(settings)
    if store is None:
        return 1
    _print_banner(settings, args.sandbox)
    supervisor = Supervisor(settings, store, services)
    try:
        demo = (lambda: start_demo(settings, env, secrets.for_child("channel_secret"))) \
            if getattr(args, "demo", False) else None
        return supervisor.run(on_started=demo)
    finally:
        supervisor.store.close()   # the one it has open now (it reopens a replaced file)


def _taken_addresses(settings, sandbox: bool) -> list[str]:
    """One line per address our services would listen on that cannot be bound now: better to say
    so and stop than to start, print a banner and restart the failing service with backoff forever."""
    wanted = [("listen", settings.listen)]
    if settings.admin_listen:
        wanted.append(("admin_listen", settings.admin_listen))
    if sandbox:
        wanted.append(("sandbox_listen", settings.sandbox_listen))
    problems = []
    for key, address in wanted:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            problems.append(f"{key}={address!r} is not HOST:PORT")
            continue
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as the servers do
            try:
                probe.bind((host, int(port)))
            except OSError as exc:
                problems.append(f"cannot listen on {address} ({key}): {exc.strerror or exc}")
    return problems


def _print_banner(settings, sandbox: bool) -> None:
    webhook_url = f"http://{settings.listen}{settings.callback_path}"
    pool = f"auto {settings.handlers_min}..{settings.handlers_max}" if settings.handlers == "auto" \
        else settings.handlers
    lines = [
        "frontdesk is starting:",
        f"  webhook receiver  {webhook_url}",
        f"  store             {settings.store}",
        *([f"  log file          {settings.log_file} (follow it: "
           f"{shlex.join(['frontdesk', 'logs', '-f', '--log-file', settings.log_file])})"] if settings.log_file else []),
        "  status page       " + (f"http://{settings.admin_listen}/ (or: frontdesk top)" if settings.admin_listen
                                   else "none (admin_listen is empty; frontdesk top still works)"),
        f"  handlers          {pool} x {settings.handler or 'the bundled echo example'}",
    ]
    if sandbox:
        # the dev secret is no secret (the emulator accepts anything); a real one is never shown
        shown_secret = settings.channel_secret if settings.channel_secret == SANDBOX_CHANNEL_SECRET else "<your secret>"
        lines += [
            f"  LINE API sandbox  http://{settings.sandbox_listen} (replies: "
            f"http://{settings.sandbox_listen}/sandbox/deliveries)",
            f"  chat page         http://{settings.sandbox_listen}/chat (play users, see what the bot sends)",
            "send 5 signed example webhooks and see what the users received:",
            f"  LINE_CHANNEL_SECRET={shown_secret} " + shlex.join(["frontdesk", *demo_command(settings)[3:]]),
        ]
    else:
        lines.append(f"  LINE API          {settings.api_base}")
    lines.append("Ctrl-C stops everything (twice: at once).")
    print("\n".join(lines), flush=True)
