"""`frontdesk say [TEXT] --kind KIND --user USER`: play one user, see what the bot answers.

Sends one event, as LINE would (signed, with a reply token the sandbox honours), to a running
system (`frontdesk run --sandbox`), then prints what that user (or that user's group) received:
the reply to the event and any push to the conversation (command/conversation.py). So a developer
can try "fail", a sticker or a follow without writing code. When nothing came because the event
became a dead letter, it says so, with the handler's error.
"""
from __future__ import annotations

import json
import sys

from frontdesk.protocol.config import ConfigError, sandbox_credentials
from frontdesk.protocol.events import conversation_key
from frontdesk.sandbox.webhooks import EVENT_KINDS, describe_source, source_for, user_id

from .conversation import Player, PlayerError


def resolve_user(text: str) -> str:
    """A user id (U + 32 hex digits) or a user number of the generator (`frontdesk bench --users`)."""
    if text.isdigit():
        return user_id(int(text))
    if len(text) == 33 and text.startswith("U"):
        return text
    raise ConfigError(f"say: --user must be a number or a user id (U + 32 hex digits), got {text!r}")


def main(settings, args) -> int:
    if args.kind not in EVENT_KINDS:
        raise ConfigError(f"say: unknown event kind {args.kind!r}; kinds: {', '.join(EVENT_KINDS)}")
    if args.timeout <= 0:
        raise ConfigError("say: --timeout must be positive")
    uid = resolve_user(args.user)
    url = args.url or f"http://{settings.listen}{settings.callback_path}"
    sandbox = args.sandbox_url or f"http://{settings.sandbox_listen}"
    try:
        player = Player(url, sandbox, sandbox_credentials(settings)[0], settings.store)
    except PlayerError as exc:
        print(f"frontdesk say: {exc}", file=sys.stderr)
        return 2
    with player:
        event = player.factory.event(args.kind, source_for(args.kind, uid), text=args.text)
        status = player.send(event)
        said = f" {json.dumps(args.text, ensure_ascii=False)}" if args.text else ""
        print(f"say: {args.kind}{said} from {describe_source(event.get('source'))} -> {url}: "
              f"{status or 'no answer'}", flush=True)
        if status != 200:
            return 1
        chat = conversation_key(event) if "source" in event else ""
        outcome = player.collect(event, chat, expected=1, timeout=args.timeout)
    for delivery in outcome.deliveries:
        print(f"say: {', '.join(delivery['to']) or 'every follower'} received ({delivery['endpoint']}):", flush=True)
        for message in delivery["messages"]:
            print("  " + json.dumps(message, ensure_ascii=False), flush=True)
    if outcome.dead_letter:
        attempts = outcome.dead_letter["attempts"]
        print(f"say: the event became a dead letter after {attempts} attempt{'s' if attempts != 1 else ''}: "
              f"{outcome.dead_letter['error']} (frontdesk dead-letters list)", flush=True)
        return 1
    if not outcome.deliveries:
        print("say: nothing received: the bot finished the event without sending anything"
              if outcome.finished else
              f"say: nothing received within {args.timeout:g} s", flush=True)
        return 1
    return 0
