"""`frontdesk say [TEXT] --kind KIND --user USER`: play one user, see what the bot answers.

Sends one event, as LINE would (signed, with a reply token the sandbox honours), to a running
system (`frontdesk run --sandbox`), then follows the sandbox's recorder and prints what that user
(or that user's group) received: the reply to the event and any push to the conversation. So a
developer can try "fail", a sticker or a follow without writing code.
"""
from __future__ import annotations

import json
import sys
import time

import requests

from frontdesk.protocol.config import ConfigError, sandbox_credentials
from frontdesk.protocol.events import conversation_key
from frontdesk.sandbox.webhooks import (EVENT_KINDS, EventFactory, describe_source, post_webhook, source_for,
                                        user_id)

QUIET_S = 1.0       # after the first answer, how long to wait for more before printing


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
    sandbox = (args.sandbox_url or f"http://{settings.sandbox_listen}").rstrip("/")
    session = requests.Session()
    session.trust_env = False   # loopback: no proxies from the environment
    try:
        since = session.get(f"{sandbox}/sandbox/stats", timeout=5).json()["last_delivery_id"]
    except (requests.RequestException, ValueError, KeyError) as exc:
        print(f"frontdesk say: cannot reach the sandbox at {sandbox}: {exc}", file=sys.stderr)
        return 2
    secret = sandbox_credentials(settings)[0]
    factory = EventFactory(secret)
    event = factory.event(args.kind, source_for(args.kind, uid), text=args.text)
    status = post_webhook(url, secret, factory.body([event]))
    said = f" {json.dumps(args.text, ensure_ascii=False)}" if args.text else ""
    print(f"say: {args.kind}{said} from {describe_source(event.get('source'))} -> {url}: "
          f"{status or 'no answer'}", flush=True)
    if status != 200:
        return 1
    received = follow(session, sandbox, since, event, args.timeout)
    if not received:
        print(f"say: nothing received within {args.timeout:g} s", flush=True)
        return 1
    for delivery in received:
        print(f"say: {', '.join(delivery['to'])} received ({delivery['endpoint']}):", flush=True)
        for message in delivery["messages"]:
            print("  " + json.dumps(message, ensure_ascii=False), flush=True)
    return 0


def follow(session, sandbox: str, since: int, event: dict, timeout: float) -> list[dict]:
    """The deliveries for this event: its reply, pushes to its conversation; until quiet or timeout."""
    key = conversation_key(event) if "source" in event else None
    found: list[dict] = []
    deadline = time.monotonic() + timeout
    while (now := time.monotonic()) < deadline:
        wait = min(deadline - now, QUIET_S) if found else deadline - now
        page = session.get(f"{sandbox}/sandbox/deliveries", params={"since": since, "wait": round(wait, 3)},
                           timeout=wait + 10).json()
        if not page:
            if found:
                break
            continue
        since = page[-1]["id"]
        found += [d for d in page if d.get("source_event") == event["webhookEventId"] or key in d["to"]]
    return found
