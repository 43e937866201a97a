"""Chat transcripts: what users sent and what the bot answered, as one JSON document.

The sandbox's chat export writes them and `frontdesk test` replays them (docs/handlers.md,
"Conversations as tests"). This module reads and checks the format and compares what a replay
got with what the transcript holds; it does no I/O beyond reading the file, so the rules are
tested in-process.

A transcript's turns come in steps: a user turn, then the bot turns that followed it (the reply
to it, and pushes or multicasts to the chat before the next user turn). Ids, reply tokens and
times are never compared: a replay mints fresh ones. A recorded value `"<any>"` matches anything.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

FORMAT_VERSION = 1
ANY = "<any>"
BOT_KINDS = ("reply", "push", "multicast", "broadcast", "narrowcast")
CHAT_TYPES = {"user": ("U", "userId"), "group": ("C", "groupId"), "room": ("R", "roomId")}
CHAT_ID = re.compile(r"[UCR][0-9a-f]{32}")
MAX_MESSAGES = 5
# Keys whose values differ on every run (ids, tokens, times): never compared, wherever they are.
NEVER_COMPARED = frozenset({"id", "quoteToken", "quotedMessageId", "replyToken", "webhookEventId",
                            "requestId", "timestamp"})
# The rate limiter sends identical pushes to different users as one multicast (docs/ratelimiter.md):
# to the chat it is the same push, whichever way it reached LINE.
_SAME_KIND = {"multicast": "push"}
_SHOWN_CHARS = 160   # a value in a difference is cut to this many characters


class TranscriptError(ValueError):
    """A transcript that cannot be replayed; the message names the file, the place
    (a JSON path) and the problem."""


@dataclass(frozen=True)
class UserTurn:
    """What one user said: the event the replay sends."""
    index: int        # position in the transcript's `turns`
    user: str
    event: dict


@dataclass(frozen=True)
class BotTurn:
    """What the bot answered at one point: the replay compares these."""
    index: int | None   # position in `turns`; None for what a replay got
    kind: str
    messages: list


@dataclass
class Step:
    """One user turn and the bot turns that belong to it."""
    user_turn: UserTurn
    bot_turns: list[BotTurn] = field(default_factory=list)

    @property
    def last_index(self) -> int:
        return self.bot_turns[-1].index if self.bot_turns else self.user_turn.index


@dataclass
class Transcript:
    """A whole chat read from its file: who takes part, the steps to replay."""
    name: str                     # the file it came from, for messages
    chat_type: str
    chat_id: str
    users: dict[str, str]         # userId -> displayName
    steps: list[Step]
    unprompted: list[BotTurn]     # bot turns before the first user turn: nothing replays them


@dataclass(frozen=True)
class Difference:
    """One place where the bot's answers differ from the recorded ones."""
    path: str       # where in the transcript: turns[3].messages[0].text
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def load(path) -> Transcript:
    """Read and check a transcript file; TranscriptError names the file and what is wrong."""
    name = str(path)
    try:
        with open(path, encoding="utf-8") as f:
            document = json.load(f)
    except OSError as exc:
        raise TranscriptError(f"{name}: cannot read it: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise TranscriptError(f"{name}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise TranscriptError(f"{name}: not valid JSON: line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    return parse(document, name)


def parse(document, name: str = "<transcript>") -> Transcript:
    """Check a transcript document (already decoded JSON) and split its turns into steps."""
    def fail(path: str, problem: str):
        raise TranscriptError(f"{name}: {path}: {problem}" if path else f"{name}: {problem}")

    if not isinstance(document, dict):
        fail("", f"not a transcript: expected a JSON object, got {_json_type(document)}")
    if "frontdesk_transcript" not in document:
        fail("", 'not a frontdesk transcript: no "frontdesk_transcript" key')
    if document["frontdesk_transcript"] != FORMAT_VERSION:
        fail("frontdesk_transcript", f"format {_shown(document['frontdesk_transcript'])} is not supported "
                                     f"(this frontdesk reads {FORMAT_VERSION})")
    chat = document.get("chat")
    if not isinstance(chat, dict):
        fail("chat", f'must be an object like {{"type": "user", "id": "U…"}}, got {_json_type(chat)}')
    if chat.get("type") not in CHAT_TYPES:
        fail("chat.type", f"must be one of {', '.join(CHAT_TYPES)}, got {_shown(chat.get('type'))}")
    prefix, id_key = CHAT_TYPES[chat["type"]]
    chat_id = chat.get("id")
    if not isinstance(chat_id, str) or not CHAT_ID.fullmatch(chat_id) or not chat_id.startswith(prefix):
        fail("chat.id", f"a {chat['type']} chat's id is {prefix} and 32 hex digits, got {_shown(chat_id)}")
    users = _users(document.get("users"), fail)
    turns = document.get("turns")
    if not isinstance(turns, list):
        fail("turns", f"must be an array, got {_json_type(turns)}")
    steps: list[Step] = []
    unprompted: list[BotTurn] = []
    for index, turn in enumerate(turns):
        path = f"turns[{index}]"
        if not isinstance(turn, dict) or ("user" in turn) == ("bot" in turn):
            fail(path, 'must be an object with either "user" (a user turn) or "bot" (a bot turn)')
        if "user" in turn:
            steps.append(Step(_user_turn(turn, index, chat["type"], chat_id, id_key, users, fail)))
        else:
            bot_turn = _bot_turn(turn, index, fail)
            (steps[-1].bot_turns if steps else unprompted).append(bot_turn)
    if not steps:
        fail("turns", "no user turn: nothing to replay")
    return Transcript(name, chat["type"], chat_id, users, steps, unprompted)


def _users(users, fail) -> dict[str, str]:
    if not isinstance(users, list):
        fail("users", f'must be an array of {{"userId", "displayName"}}, got {_json_type(users)}')
    found = {}
    for index, user in enumerate(users):
        path = f"users[{index}]"
        if not isinstance(user, dict):
            fail(path, f"must be an object, got {_json_type(user)}")
        if not isinstance(user.get("userId"), str) or not user["userId"].startswith("U"):
            fail(f"{path}.userId", f"must be a user id (U…), got {_shown(user.get('userId'))}")
        if not isinstance(user.get("displayName"), str):
            fail(f"{path}.displayName", f"must be a string, got {_json_type(user.get('displayName'))}")
        found[user["userId"]] = user["displayName"]
    return found


def _user_turn(turn: dict, index: int, chat_type: str, chat_id: str, id_key: str, users: dict,
               fail) -> UserTurn:
    path = f"turns[{index}]"
    user, event = turn["user"], turn.get("event")
    if user not in users:
        fail(f"{path}.user", f"{_shown(user)} is not one of the transcript's users")
    if not isinstance(event, dict):
        fail(f"{path}.event", f"must be a LINE webhook event (an object), got {_json_type(event)}")
    if not isinstance(event.get("type"), str) or not event["type"]:
        fail(f"{path}.event.type", f"must be the event's type (a string), got {_shown(event.get('type'))}")
    source = event.get("source")
    if not isinstance(source, dict):
        fail(f"{path}.event.source", "missing: a chat's events come from the chat (the source LINE sends)")
    if source.get("type") != chat_type:
        fail(f"{path}.event.source.type", f"is {_shown(source.get('type'))}, but the chat is a {chat_type} chat")
    if source.get(id_key) != chat_id:
        fail(f"{path}.event.source.{id_key}", f"is {_shown(source.get(id_key))}, but the chat is {chat_id}")
    if "userId" in source and source["userId"] != user:
        fail(f"{path}.event.source.userId", f"is {_shown(source['userId'])}, but the turn's user is {user}")
    if event["type"] == "message" and not (isinstance(event.get("message"), dict)
                                           and isinstance(event["message"].get("type"), str)):
        fail(f"{path}.event.message", "a message event needs a message object with a type")
    return UserTurn(index, user, event)


def _bot_turn(turn: dict, index: int, fail) -> BotTurn:
    path = f"turns[{index}]"
    if turn["bot"] not in BOT_KINDS:
        fail(f"{path}.bot", f"must be one of {', '.join(BOT_KINDS)} (how the bot sent it), got {_shown(turn['bot'])}")
    messages = turn.get("messages")
    if not isinstance(messages, list) or not 1 <= len(messages) <= MAX_MESSAGES:
        fail(f"{path}.messages", f"must be an array of 1 to {MAX_MESSAGES} LINE message objects")
    for number, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            fail(f"{path}.messages[{number}]", "must be a LINE message object (with a type)")
    return BotTurn(index, turn["bot"], messages)


# --- comparing ---------------------------------------------------------------------------------

def compare_step(step: Step, got: list[BotTurn]) -> list[Difference]:
    """What differs between a step's recorded bot turns and what a replay got, in order."""
    differences = []
    for expected, actual in zip(step.bot_turns, got):
        path = f"turns[{expected.index}]"
        if _SAME_KIND.get(expected.kind, expected.kind) != _SAME_KIND.get(actual.kind, actual.kind):
            differences.append(Difference(f"{path}.bot", f"expected {expected.kind}, got {actual.kind}"))
        differences += compare_values(expected.messages, actual.messages, f"{path}.messages")
    for expected in step.bot_turns[len(got):]:
        differences.append(Difference(f"turns[{expected.index}]",
                                      f"expected a {expected.kind} ({describe(expected.messages)}), got nothing"))
    for actual in got[len(step.bot_turns):]:
        differences.append(Difference(f"after turns[{step.last_index}]",
                                      f"unexpected {actual.kind}: {describe(actual.messages)}"))
    return differences


def compare_values(expected, actual, path: str) -> list[Difference]:
    """Every place where `actual` differs from `expected`, `"<any>"` and NEVER_COMPARED keys aside."""
    if expected == ANY and isinstance(expected, str):
        return []
    if isinstance(expected, dict) and isinstance(actual, dict):
        differences = []
        for key in expected:
            if key in NEVER_COMPARED:
                continue
            if key not in actual:
                differences.append(Difference(f"{path}.{key}", f"missing (expected {_shown(expected[key])})"))
            else:
                differences += compare_values(expected[key], actual[key], f"{path}.{key}")
        differences += [Difference(f"{path}.{key}", f"unexpected (got {_shown(actual[key])})")
                        for key in actual if key not in expected and key not in NEVER_COMPARED]
        return differences
    if isinstance(expected, list) and isinstance(actual, list):
        differences = []
        for number, (e, a) in enumerate(zip(expected, actual)):
            differences += compare_values(e, a, f"{path}[{number}]")
        differences += [Difference(f"{path}[{number}]", f"missing (expected {_shown(e)})")
                        for number, e in enumerate(expected) if number >= len(actual)]
        differences += [Difference(f"{path}[{number}]", f"unexpected (got {_shown(a)})")
                        for number, a in enumerate(actual) if number >= len(expected)]
        return differences
    same_type = type(expected) is type(actual) or _both_numbers(expected, actual)
    if same_type and expected == actual:
        return []
    return [Difference(path, f"expected {_shown(expected)}, got {_shown(actual)}")]


def _both_numbers(a, b) -> bool:
    """JSON has one number type: 1 and 1.0 are the same value; true is no number."""
    return all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))


def describe(messages: list) -> str:
    """Messages in a few words for people: text "…", sticker 446/1988, flex "alt text"."""
    parts = []
    for message in messages:
        kind = message.get("type") if isinstance(message, dict) else None
        if kind in ("text", "textV2"):
            parts.append(f"text {_shown(message.get('text'))}")
        elif kind == "sticker":
            parts.append(f"sticker {message.get('packageId')}/{message.get('stickerId')}")
        elif "altText" in (message if isinstance(message, dict) else {}):
            parts.append(f"{kind} {_shown(message['altText'])}")
        else:
            parts.append(str(kind))
    return ", ".join(parts)


def _shown(value) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS - 1] + "…"


def _json_type(value) -> str:
    if value is None:
        return "nothing"   # missing, or null
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)
