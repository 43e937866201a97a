"""`frontdesk check-handler -- CMD [ARGS...]`: the conformance kit for a handler in any language.

It plays the dispatcher's side of protocol/SPEC.md against the command: the handshake, one
event of every LINE event type, the API calls those events make (answered by the kit with
fake but well-formed results, after checking their shape), an API error, unknown methods and
notifications, a full window of events in flight answered out of order, a batch of one
conversation's events (and one whose first event is nacked) when the handler declares the `batch`
feature, then stdin closed.
Fresh processes get a malformed frame, an oversize frame (each must exit 2), an unsupported
protocol version (exit 1) and EOF with an event in flight (answer it, then exit 0). Event types
and message types LINE does not have (yet) must be acked. Anything on stdout that is not a frame
is reported as noise. One line per check (PASS/FAIL/SKIP name — reason); the exit status is 1 if
any check failed, 2 when the command cannot be run at all.
"""
from __future__ import annotations

import collections
import os
import queue
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field

from frontdesk.protocol import rpc
from frontdesk.protocol.events import conversation_key, make_document
from frontdesk.protocol.children.client import FramedClient
from frontdesk.protocol.frames import HEADER, encode_frame

KIT_VERSION = "frontdesk-check-handler/1"
BATCH = "batch"
FEATURES = [BATCH]   # the protocol features the kit offers in its hello, as the dispatcher does
QUIET_S = 0.2  # a handler silent this long while API calls are held has shown all it will do

USER_A = "U4af4980629a0c4b5e6c3f1b6d6b7a8c9"
USER_B = "U1b2c3d4e5f60718293a4b5c6d7e8f901"
GROUP = "Ca56f94637cc4347f90a25382909b24b9"


# --- sample events (LINE Messaging API webhook shapes) ---------------------------------------------
def _message(kind: str, **fields) -> dict:
    return {"type": "message", "replyToken": "", "message": {"type": kind, "id": "", **fields}}


SAMPLES: dict[str, dict] = {
    "text": _message("text", quoteToken="q3Plxr4AgKd", text="こんにちは、世界"),
    "text-in-group": {**_message("text", quoteToken="yHAz4Ua2wx7", text="みなさん、おはよう"),
                      "source": {"type": "group", "groupId": GROUP, "userId": USER_B}},
    "image": _message("image", quoteToken="yHAz4Ua2wx7", contentProvider={"type": "line"}),
    "video": _message("video", quoteToken="yHAz4Ua2wx7", duration=60000,
                      contentProvider={"type": "line"}),
    "audio": _message("audio", duration=60000, contentProvider={"type": "line"}),
    "file": _message("file", fileName="file.txt", fileSize=2138),
    "location": _message("location", title="my location", address="日本、〒102-8282 東京都千代田区紀尾井町1番3号",
                         latitude=35.67966, longitude=139.73669),
    "sticker": _message("sticker", quoteToken="yHAz4Ua2wx7", packageId="446", stickerId="1988",
                        stickerResourceType="ANIMATION", keywords=["happy", "smile"]),
    "follow": {"type": "follow", "replyToken": "", "follow": {"isUnblocked": False}},
    "unfollow": {"type": "unfollow"},
    "join": {"type": "join", "replyToken": "", "source": {"type": "group", "groupId": GROUP}},
    "leave": {"type": "leave", "source": {"type": "group", "groupId": GROUP}},
    "memberJoined": {"type": "memberJoined", "replyToken": "", "source": {"type": "group", "groupId": GROUP},
                     "joined": {"members": [{"type": "user", "userId": USER_B}]}},
    "memberLeft": {"type": "memberLeft", "source": {"type": "group", "groupId": GROUP},
                   "left": {"members": [{"type": "user", "userId": USER_B}]}},
    "postback": {"type": "postback", "replyToken": "",
                 "postback": {"data": "action=buy&itemid=111", "params": {"datetime": "2017-12-25T01:00"}}},
    "beacon": {"type": "beacon", "replyToken": "", "beacon": {"hwid": "d41d8cd98f", "type": "enter"}},
    "accountLink": {"type": "accountLink", "replyToken": "", "link": {"result": "ok", "nonce": "xxxxxxxxxx"}},
    "unsend": {"type": "unsend", "unsend": {"messageId": "325708"}},
    "videoPlayComplete": {"type": "videoPlayComplete", "replyToken": "",
                          "videoPlayComplete": {"trackingId": "track-id"}},
    "membership": {"type": "membership", "replyToken": "", "membership": {"type": "joined", "membershipId": 3}},
    "messageEdited": {**_message("text", quoteToken="q3Plxr4AgKd", text="こんにちは（編集済み）"),
                      "type": "messageEdited", "source": {"type": "group", "groupId": GROUP, "userId": USER_B}},
    # Events LINE sends with no source.
    "botSuspended": {"type": "botSuspended", "source": None},
    "botResumed": {"type": "botResumed", "source": None},
    "activated": {"type": "activated", "source": None, "chatControl": {"expireAt": 1700000000000}},
    "deactivated": {"type": "deactivated", "source": None},
    "module": {"type": "module", "source": None,
               "module": {"type": "attached", "botId": "U9b2c3d4e5f60718293a4b5c6d7e8f901", "scopes": ["message:send"]}},
    "delivery": {"type": "delivery", "source": None, "delivery": {"data": "d41d8cd98f00b204e9800998ecf8427e"}},
    # Not LINE types (yet): a handler MUST ack event and message types it does not know.
    "future-type": {"type": "someFutureEventType", "replyToken": "", "someFutureEventType": {"x": 1}},
    "future-message-type": _message("someFutureMessageType", quoteToken="q3Plxr4AgKd"),
}
MUST_ACK = frozenset({"future-type", "future-message-type"})


class EventMaker:
    """Documents as the dispatcher sends them: unique ids, tokens and store order."""

    def __init__(self):
        self._n = 0

    def document(self, sample: str, user: str = USER_A, attempt: int = 1) -> dict:
        self._n += 1
        n = self._n
        now = int(time.time() * 1000)
        event = {**SAMPLES[sample], "mode": "active", "timestamp": now,
                 "webhookEventId": f"01HCONFORMANCE{n:012d}",
                 "deliveryContext": {"isRedelivery": False}}
        event.setdefault("source", {"type": "user", "userId": user})
        if event["source"] is None:
            del event["source"]
        if "replyToken" in event:
            event["replyToken"] = f"kit-reply-token-{n:06d}"
        if "message" in event:
            event["message"] = {**event["message"], "id": f"4{n:017d}"}
        return make_document(n, "frontdesk", event["webhookEventId"], "Ukitdestination0000000000000000001",
                             event, conversation_key(event), now, attempt)


# --- the kit's fake API ---------------------------------------------------------------------------
def _is_str(value) -> bool:
    return isinstance(value, str) and bool(value)


def _check_messages(messages) -> str | None:
    if not isinstance(messages, list) or not 1 <= len(messages) <= 5:
        return "messages must be an array of 1 to 5 message objects"
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not _is_str(message.get("type")):
            return f"messages[{i}] must be a map with a string `type`"
    return None


def _require(args: dict, **kinds) -> str | None:
    for key, check in kinds.items():
        if not check(args.get(key)):
            return f"`{key}` missing or of the wrong type"
    return None


def _sent(args) -> dict:
    return {"sentMessages": [{"id": f"5{i:017d}", "quoteToken": "kitQuoteToken"}
                             for i in range(len(args["messages"]))]}


def _str_list(value) -> bool:
    return isinstance(value, list) and 0 < len(value) <= 500 and all(_is_str(v) for v in value)


# method -> (argument checker, fake result)
API = {
    "reply": (lambda a: _require(a, replyToken=_is_str) or _check_messages(a.get("messages")),
              lambda a: {**_sent(a), "sent_as": "reply"}),
    "push": (lambda a: _require(a, to=_is_str) or _check_messages(a.get("messages")),
             lambda a: {**_sent(a), "sent_as": "push"}),
    "multicast": (lambda a: _require(a, to=_str_list) or _check_messages(a.get("messages")), lambda a: {}),
    "broadcast": (lambda a: _check_messages(a.get("messages")), lambda a: {}),
    "narrowcast": (lambda a: _check_messages(a.get("messages")),
                   lambda a: {"request_id": "kit-narrowcast-request"}),
    "profile": (lambda a: _require(a, userId=_is_str),
                lambda a: {"userId": a["userId"], "displayName": "Kit User", "language": "ja",
                           "pictureUrl": "https://profile.line-scdn.net/kit", "cached": False}),
    "content": (lambda a: _require(a, messageId=_is_str),
                lambda a: {"content_type": "image/jpeg", "data": b"\xff\xd8\xff\xe0kit\xff\xd9"}),
    "call": (lambda a: _require(a, method=lambda m: m in ("GET", "POST", "PUT", "DELETE"),
                                path=lambda p: _is_str(p) and p.startswith("/")),
             lambda a: {"status": 200, "body": {}}),
    "user_get": (lambda a: _require(a, userId=_is_str),
                 lambda a: {"profile": {"userId": a["userId"], "displayName": "Kit User"}, "followed": True,
                            "followed_at": 1700000000000, "unfollowed_at": None, "data": {}}),
    "user_set_data": (lambda a: _require(a, userId=_is_str, data=lambda d: isinstance(d, dict)),
                      lambda a: None),
}


def kit_answer(request: rpc.Request, in_flight_ids) -> tuple[dict | None, object, str | None]:
    """(error, result, violation) for one API call; a violation also gets an error answer."""
    params = request.params
    if request.method not in API:
        return rpc.api_error(f"unknown method {request.method}"), None, \
            f"called unknown method {request.method!r}"
    if len(params) != 2 or not isinstance(params[1], dict):
        problem = "params must be [event id or nil, args map]"
    elif params[0] is not None and params[0] not in in_flight_ids:
        problem = f"event id {params[0]!r} is not an event in flight"
    else:
        check, result = API[request.method]
        problem = check(params[1])
        if problem is None:
            return None, result(params[1]), None
    text = f"{request.method}: {problem}"
    return rpc.api_error(text, status=400), None, text


# --- the handler under test ---------------------------------------------------------------------------
class Broken(Exception):
    """The session with this process cannot go on (noise, exit, silence); the text says why."""


@dataclass
class Outcome:
    """What happened to one batch of events: their answers, the API calls, any violations."""
    sent: list = field(default_factory=list)           # event msgids in sending order
    answers: dict = field(default_factory=dict)        # event msgid -> Response, in answering order
    calls: list = field(default_factory=list)           # the handler's API requests
    violations: list = field(default_factory=list)
    most_held: int = 0                                  # most events with an API call held at once


class Handler:
    """One process of the command under test: frames to its stdin, its messages in `inbox` (None
    once its stdout ended), the last lines of its stderr kept for the report."""

    def __init__(self, command: list[str], max_frame_bytes: int):
        self.max_frame_bytes = max_frame_bytes
        self.inbox: queue.Queue = queue.Queue()
        self.stderr_tail: collections.deque = collections.deque(maxlen=50)
        self.noise: str | None = None
        self.msgids = rpc.MsgIds(start=1)
        self.client = FramedClient(command, self.inbox.put, self._ended, on_stderr_line=self.stderr_tail.append,
                                   max_frame_bytes=max_frame_bytes)

    def start(self) -> "Handler":
        """Start the process (OSError when it cannot be)."""
        self.client.start()
        return self

    def _ended(self, problem: str | None) -> None:
        if problem is not None:
            self.noise = f"stdout noise (not a valid frame): {problem}"
        self.inbox.put(None)  # end of stdout

    def last_words(self) -> str:
        return f"; stderr: {self.stderr_tail[-1][:200]}" if self.stderr_tail else ""

    def send(self, message) -> None:
        self.send_bytes(encode_frame(message.to_wire()))

    def send_bytes(self, data: bytes) -> None:
        try:
            self.client.send_bytes(data)
        except (BrokenPipeError, OSError, ValueError):
            raise Broken(f"stdin closed by the handler ({self._exit_text()}){self.last_words()}") from None

    def receive(self, timeout: float):
        try:
            message = self.inbox.get(timeout=timeout)
        except queue.Empty:
            return None
        if message is None:
            self.inbox.put(None)  # stays at the end for later readers
            raise Broken((self.noise or f"stdout closed ({self._exit_text()})") + self.last_words())
        return message

    def _exit_text(self) -> str:
        try:
            code = self.client.proc.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            return "still running"
        return f"exit status {code}"

    def close_stdin(self) -> None:
        self.client.close_stdin()

    def wait_exit(self, timeout: float) -> int | None:
        return self.client.wait_exit(timeout)

    def kill(self) -> None:
        self.client.kill()

    # --- protocol steps ---------------------------------------------------------------------------
    def handshake(self, timeout: float, versions=(1,)) -> rpc.Response:
        self.send(rpc.Request(0, "hello", [{"protocol": list(versions), "dispatcher": KIT_VERSION,
                                            "max_frame_bytes": self.max_frame_bytes, "features": FEATURES}]))
        message = self.receive(timeout)
        if message is None:
            raise Broken(f"no answer to the hello within {timeout:g}s{self.last_words()}")
        if not isinstance(message, rpc.Response) or message.msgid != 0:
            raise Broken(f"first message is not the response to the hello: {message!r:.120}")
        return message

    def exchange(self, documents: list[dict], timeout: float, hold: bool = False,
                 fail_calls: int = 0, batch: bool = False) -> Outcome:
        """Send events, serve their API calls until each is answered; raises Broken on silence.

        hold: keep API calls unanswered until every unanswered event has one held (or the handler
        is quiet for QUIET_S), then answer them shuffled: shows concurrency and out-of-order
        matching. fail_calls: answer that many first API calls with a non-retryable error.
        batch: send them as one batch (SPEC.md section 7): each must be handled after the one
        before it is answered, answered in order, and none handled after a nack.
        """
        outcome = Outcome()
        pending = {}
        for document in documents:
            msgid = self.msgids.next()
            outcome.sent.append(msgid)
            pending[msgid] = document["o"]["_id"]
            if not batch:
                self.send(rpc.Request(msgid, "event", [document]))
        if batch:
            self.send(rpc.Notification(BATCH, [[msgid, document] for msgid, document in zip(outcome.sent, documents)]))
        nacked = None
        held: list[rpc.Request] = []
        deadline = time.monotonic() + timeout
        while pending:
            wait = min(QUIET_S, deadline - time.monotonic()) if held else deadline - time.monotonic()
            message = self.receive(max(wait, 0))
            if message is None:
                if held:
                    self._answer(held, pending, outcome, fail_calls)
                    fail_calls = max(fail_calls - len(held), 0)
                    held = []
                    continue
                missing = ", ".join(f"{pending[m]}" for m in list(pending)[:3])
                raise Broken(f"no answer within {timeout:g}s for event(s) {missing}{self.last_words()}")
            if isinstance(message, rpc.Response):
                if message.msgid not in pending:
                    outcome.violations.append(f"response to msgid {message.msgid}, which is no event in flight")
                    continue
                if batch and message.msgid != next(iter(pending)):
                    outcome.violations.append(f"answered event {pending[message.msgid]} of a batch before the "
                                              "one ahead of it")
                if batch and nacked is None and message.error is not None:
                    nacked = pending[message.msgid]
                del pending[message.msgid]
                outcome.answers[message.msgid] = message
                problem = response_problem(message)
                if problem:
                    outcome.violations.append(problem)
            elif isinstance(message, rpc.Request):
                outcome.calls.append(message)
                if batch and nacked is not None:
                    outcome.violations.append(f"made an API call for event {_event_of(message)} after event "
                                              f"{nacked} before it in its batch was nacked (the rest of a batch "
                                              "is given back: answer it unhandled)")
                elif batch and pending and _event_of(message) != next(iter(pending.values())):
                    outcome.violations.append(f"made an API call for event {_event_of(message)} of a batch before "
                                              "the one ahead of it was answered")
                if not hold:
                    self._answer([message], pending, outcome, fail_calls)
                    fail_calls = max(fail_calls - 1, 0)
                    continue
                held.append(message)
                outcome.most_held = max(outcome.most_held, len({_event_of(r) for r in held}))
                if len({_event_of(r) for r in held}) >= len(pending):
                    self._answer(held, pending, outcome, fail_calls)
                    fail_calls = max(fail_calls - len(held), 0)
                    held = []
            elif message.method not in ("progress", "log"):
                outcome.violations.append(f"unknown notification {message.method!r}")
        return outcome

    def _answer(self, requests, pending, outcome: Outcome, fail_calls: int) -> None:
        requests = list(requests)
        random.Random(len(requests)).shuffle(requests)  # not the order they came in
        for request in requests:
            error, result, violation = kit_answer(request, set(pending.values()))
            if violation:
                outcome.violations.append(violation)
            elif fail_calls > 0:
                fail_calls -= 1
                error, result = rpc.api_error("conformance: simulated LINE API failure", status=400,
                                              details=[]), None
            self.send(rpc.Response(request.msgid, error, result))


def _event_of(request: rpc.Request):
    return request.params[0] if request.params else None


def response_problem(response: rpc.Response) -> str | None:
    """Why an event's response is not a well-formed ack or nack, or None."""
    error = response.error
    if error is None:
        return None
    if not isinstance(error, dict):
        return f"nack error must be a map with a string `message`, got {_typed(error)}"
    if not isinstance(error.get("message"), str):
        return f"nack `message` must be a string, got {_typed(error.get('message'))}"
    if "retry" in error and not isinstance(error["retry"], bool):
        return f"nack `retry` must be a boolean, got {_typed(error['retry'])}"
    return None


def describe_answer(response: rpc.Response) -> str:
    error = response.error
    if error is None:
        return "ack"
    if not isinstance(error, dict):
        return f"malformed nack {_typed(error)}"
    return f"nack retry={error.get('retry', True)}: {str(error.get('message'))[:80]}"


def _typed(value) -> str:
    """A value with its msgpack-level type, for messages where the type is the problem."""
    return f"{type(value).__name__} {value!r:.60}"


# --- the checks -----------------------------------------------------------------------------------
class Report:
    """The kit's output: one PASS/FAIL/SKIP line per check and the counts for the summary."""

    def __init__(self, out):
        self.out = out
        self.counts = {"PASS": 0, "FAIL": 0, "SKIP": 0}

    @property
    def failed(self) -> int:
        return self.counts["FAIL"]

    def line(self, verdict: str, name: str, reason: str, checks: int = 1) -> None:
        """One line for `checks` checks (several only when skipped together)."""
        self.counts[verdict] += checks
        print(f"{verdict} {name} — {reason}", file=self.out, flush=True)

    def summary(self) -> None:
        """The last line: what a reader of a long run looks for first."""
        skipped = f", {self.counts['SKIP']} skipped" if self.counts["SKIP"] else ""
        print(f"{self.counts['PASS']} passed, {self.counts['FAIL']} failed{skipped}", file=self.out, flush=True)


class Kit:
    """The conformance suite against one handler command: it plays the dispatcher's side of
    protocol/SPEC.md, check by check, and reports each (Report)."""

    def __init__(self, command: list[str], settings, timeout: float, out=sys.stdout):
        self.command = command
        self.timeout = timeout
        self.start_timeout = min(timeout, settings.handler_start_timeout_s)
        self.max_frame_bytes = settings.max_frame_bytes
        self.report = Report(out)
        self.events = EventMaker()
        self.window = 1
        self.batches = False   # it declared the `batch` feature

    def spawn(self) -> Handler:
        return Handler(self.command, self.max_frame_bytes).start()

    ISOLATED = ("malformed-frame", "oversize-frame", "unsupported-version", "eof-with-event-in-flight")

    def run(self) -> int:
        """Every check, one line each, then a summary line; 1 if any failed. A command that cannot
        run is one line (and the summary), 2."""
        status = self._checks()
        self.report.summary()
        return status

    def _checks(self) -> int:
        problem = command_problem(self.command)
        if problem:
            self.report.line("FAIL", "start", problem)
            return 2
        if not self.main_session():
            self.report.line("SKIP", ",".join(self.ISOLATED), "the handler never completed the handshake",
                             checks=len(self.ISOLATED))
            return 1
        for name in self.ISOLATED:
            self.isolated(name, getattr(self, "check_" + name.replace("-", "_")))
        return 1 if self.report.failed else 0

    def isolated(self, name: str, check) -> None:
        """A check in a fresh process, killed afterwards whatever happened."""
        try:
            handler = self.spawn()
        except OSError as exc:
            self.report.line("FAIL", name, f"cannot start {self.command[0]!r}: {exc.strerror}")
            return
        try:
            verdict, reason = check(handler)
        except Broken as exc:
            verdict, reason = "FAIL", str(exc)
        finally:
            handler.kill()
        self.report.line(verdict, name, reason)

    # --- the main session: one process through its whole life -------------------------------------
    def main_session(self) -> bool:
        """The checks of one process's life; False when it never completed the handshake."""
        report = self.report
        try:
            handler = self.spawn()
        except OSError as exc:
            report.line("FAIL", "start", f"cannot start {self.command[0]!r}: {exc.strerror}")
            return False
        steps = [("handshake", self.check_handshake)]
        steps += [(f"event:{name}", lambda h, n=name: self.check_event(h, n)) for name in SAMPLES]
        steps += [("api-error", self.check_api_error), ("unknown-method", self.check_unknown_method),
                  ("unknown-notification", self.check_unknown_notification),
                  ("in-flight", self.check_in_flight), ("batch", self.check_batch),
                  ("batch-nack", self.check_batch_nack), ("eof-exit", self.check_eof_exit)]
        broken = None
        try:
            for index, (name, step) in enumerate(steps):
                try:
                    verdict, reason = step(handler)
                except Broken as exc:
                    broken = str(exc)
                    verdict, reason = "FAIL", broken
                report.line(verdict, name, reason)
                if broken:
                    rest = [n for n, _ in steps[index + 1:]]
                    if rest:
                        report.line("SKIP", f"{rest[0]}..{rest[-1]}" if len(rest) > 1 else rest[0],
                                    f"{len(rest)} check(s) skipped: the session ended", checks=len(rest))
                    break
        finally:
            handler.kill()
        if handler.noise:
            report.line("FAIL", "stdout-clean", handler.noise)
        elif broken and name == "handshake":
            return False
        else:
            report.line("PASS", "stdout-clean", "every byte on stdout was part of a valid frame")
        return True

    def check_handshake(self, handler: Handler):
        started = time.monotonic()
        response = handler.handshake(self.start_timeout)
        took = time.monotonic() - started
        if response.error is not None:
            raise Broken(f"refused protocol 1: {response.error!r:.120}")
        result = response.result
        if not isinstance(result, dict):
            raise Broken(f"hello result must be a map, got {_typed(result)}")
        window = result.get("max_in_flight")
        if result.get("protocol") != 1:
            raise Broken(f"hello result `protocol` must be the integer 1, got {_typed(result.get('protocol'))}")
        if not isinstance(window, int) or isinstance(window, bool) or window < 1:
            raise Broken(f"hello result `max_in_flight` must be an integer >= 1, got {_typed(window)}")
        if not isinstance(result.get("name"), str):
            raise Broken(f"hello result `name` must be a string, got {_typed(result.get('name'))}")
        features = result.get("features", [])
        if not isinstance(features, list) or not set(features) <= set(FEATURES):
            raise Broken(f"hello result `features` must be an array of offered features {FEATURES}, "
                         f"got {_typed(features)}")
        self.window = window
        self.batches = BATCH in features
        return "PASS", (f"name={result['name']!r} max_in_flight={window} features={features} "
                        f"in {took * 1000:.0f} ms")

    def _verdict(self, outcome: Outcome, summary: str):
        if outcome.violations:
            return "FAIL", "; ".join(dict.fromkeys(outcome.violations))[:300]
        return "PASS", summary

    def check_event(self, handler: Handler, sample: str):
        outcome = handler.exchange([self.events.document(sample)], self.timeout)
        (answer,) = outcome.answers.values()
        methods = collections.Counter(call.method for call in outcome.calls)
        calls = ", ".join(f"{m}×{n}" for m, n in sorted(methods.items())) or "no API calls"
        if sample in MUST_ACK and answer.error is not None:
            return "FAIL", (f"{describe_answer(answer)}: a type the handler does not know MUST be acked "
                            "(SPEC.md section 7; LINE adds types, a nack would only retry it)")
        return self._verdict(outcome, f"{describe_answer(answer)} ({calls})")

    def check_api_error(self, handler: Handler):
        outcome = handler.exchange([self.events.document("text")], self.timeout, fail_calls=1)
        (answer,) = outcome.answers.values()
        if not outcome.calls:
            return "PASS", f"{describe_answer(answer)} (made no API call, so none could fail)"
        return self._verdict(outcome, f"after a failed API call (status 400): {describe_answer(answer)}")

    def check_unknown_method(self, handler: Handler):
        handler.send(rpc.Request(7_000_000, "conformance.no_such_method", [{}]))
        deadline = time.monotonic() + self.timeout
        while (message := handler.receive(max(deadline - time.monotonic(), 0))) is not None:
            if isinstance(message, rpc.Response) and message.msgid == 7_000_000:
                if message.error is None:
                    return "FAIL", "an unknown method must be answered with an error, got a result"
                if response_problem(message):
                    return "FAIL", response_problem(message)
                return "PASS", f"answered with error {message.error.get('message')!r:.80}"
            return "FAIL", f"expected the error response, got {message!r:.100}"
        raise Broken(f"no answer to an unknown method within {self.timeout:g}s{handler.last_words()}")

    def check_unknown_notification(self, handler: Handler):
        handler.send(rpc.Notification("conformance.ignore_me", [{"x": 1}]))
        outcome = handler.exchange([self.events.document("postback")], self.timeout)
        return self._verdict(outcome, "ignored; the next event was answered normally")

    def check_in_flight(self, handler: Handler):
        count = min(self.window, 64)
        users = [f"U{i:032x}" for i in range(count)]  # one conversation key each, as the dispatcher does
        documents = [self.events.document("text", user=user) for user in users]
        handler.msgids = rpc.MsgIds(start=rpc.MAX_MSGID - count // 2)  # msgids wrap past 2**32-1
        outcome = handler.exchange(documents, self.timeout * 2, hold=True)
        shuffled = "out of order" if list(outcome.answers) != outcome.sent else "in order"
        concurrency = (f"; up to {outcome.most_held} had API calls outstanding at once" if outcome.calls
                       else "")
        return self._verdict(outcome, f"{count} events (declared window {self.window}) answered "
                                      f"{shuffled}{concurrency}")

    def check_batch(self, handler: Handler):
        if not self.batches:
            return self._one_at_a_time(handler)
        documents = [self.events.document("text") for _ in range(3)]   # one conversation
        outcome = handler.exchange(documents, self.timeout * 2, batch=True)
        answers = ", ".join(describe_answer(outcome.answers[msgid]) for msgid in outcome.sent)
        return self._verdict(outcome, f"a batch of 3 events of one conversation handled in order: {answers}")

    def check_batch_nack(self, handler: Handler):
        if not self.batches:
            return self._one_at_a_time(handler)
        documents = [self.events.document("text") for _ in range(3)]
        outcome = handler.exchange(documents, self.timeout * 2, fail_calls=1, batch=True)
        first = outcome.answers[outcome.sent[0]]
        if not outcome.calls or first.error is None:
            return self._verdict(outcome, f"first event {describe_answer(first)} after a failed API call "
                                          "(no nack to test the rest against)")
        return self._verdict(outcome, f"first event nacked after a failed API call; the other "
                                      f"{len(documents) - 1} answered without an API call")

    def _one_at_a_time(self, handler: Handler):
        """A handler that speaks today's protocol: the feature offered in the hello was left alone,
        so the dispatcher sends it events one at a time (the checks above)."""
        return "PASS", "the `batch` feature is not declared: events come one at a time"

    def check_eof_exit(self, handler: Handler):
        handler.close_stdin()
        started = time.monotonic()
        code = handler.wait_exit(self.timeout)
        if code is None:
            return "FAIL", f"still running {self.timeout:g}s after stdin was closed"
        if code != 0:
            return "FAIL", f"exit status {code} after stdin closed (must be 0){handler.last_words()}"
        leftovers = list(iter(handler.inbox.get, None))
        if leftovers:
            return "FAIL", f"wrote {leftovers[0]!r:.80} after stdin closed with nothing in flight"
        if handler.noise:
            return "FAIL", handler.noise
        return "PASS", f"exit 0 in {(time.monotonic() - started) * 1000:.0f} ms"

    # --- fresh processes --------------------------------------------------------------------------
    def _expect_exit(self, handler: Handler, what: str, expected: int):
        """The handler must exit with status `expected` (SPEC.md section 12) after `what`."""
        code = handler.wait_exit(self.timeout)
        if code is None:
            return "FAIL", f"still running {self.timeout:g}s after {what} (must exit {expected})"
        if handler.noise:
            return "FAIL", handler.noise
        if code != expected:
            return "FAIL", f"exit status {code} after {what} (must be {expected}){handler.last_words()}"
        return "PASS", f"exit status {code}{handler.last_words()}"

    def _ready(self, handler: Handler) -> None:
        response = handler.handshake(self.start_timeout)
        if response.error is not None:
            raise Broken(f"refused protocol 1: {response.error!r:.120}")

    def check_malformed_frame(self, handler: Handler):
        self._ready(handler)
        handler.send_bytes(HEADER.pack(3) + b"\xc1\xc1\xc1")  # 0xc1 is never valid msgpack
        return self._expect_exit(handler, "a frame whose body is not msgpack", 2)

    def check_oversize_frame(self, handler: Handler):
        self._ready(handler)
        # Only the header: a handler that waits for the body instead of checking the length hangs.
        handler.send_bytes(HEADER.pack(self.max_frame_bytes + 1))
        return self._expect_exit(handler, f"a frame header announcing {self.max_frame_bytes + 1} bytes", 2)

    def check_unsupported_version(self, handler: Handler):
        response = handler.handshake(self.start_timeout, versions=(999,))
        if response.error is None:
            return "FAIL", f"accepted protocol 999 (result {response.result!r:.80}); must answer an error"
        if response_problem(response):
            return "FAIL", response_problem(response)
        return self._expect_exit(handler, "refusing the hello", 1)

    def check_eof_with_event_in_flight(self, handler: Handler):
        self._ready(handler)
        handler.send(rpc.Request(1, "event", [self.events.document("text")]))
        message = handler.receive(self.timeout)
        if message is None:
            raise Broken(f"no API call or answer for the event within {self.timeout:g}s")
        handler.close_stdin()  # its API call (if any) stays unanswered: the SPEC says fail it locally
        code = handler.wait_exit(self.timeout)
        if code is None:
            return "FAIL", f"still running {self.timeout:g}s after stdin closed with an event in flight"
        if handler.noise:
            return "FAIL", handler.noise
        if code != 0:
            return "FAIL", f"exit status {code} (must be 0){handler.last_words()}"
        written = [message, *iter(handler.inbox.get, None)]
        answers = [m for m in written if isinstance(m, rpc.Response) and m.msgid == 1]
        if not answers:
            return "FAIL", ("exited 0 without answering the event in flight: finish it (its API calls "
                            "fail with `dispatcher gone`), answer it, then exit")
        return "PASS", f"answered the event ({describe_answer(answers[0])}) and exited 0"


def command_problem(command: list[str]) -> str | None:
    """Why the command cannot be started at all (missing, not executable), or None."""
    program = command[0]
    if os.sep in program:
        if not os.path.exists(program):
            return f"cannot start {program!r}: no such file"
        if os.path.isdir(program) or not os.access(program, os.X_OK):
            return f"cannot start {program!r}: not an executable file (try: python {program}, node {program})"
    elif shutil.which(program) is None:
        return f"cannot start {program!r}: not found on PATH"
    return None


def main(settings, args) -> int:
    command = list(args.handler_command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        print("frontdesk check-handler: give the handler command after --, e.g. "
              "frontdesk check-handler -- python handlers/examples/echo.py", file=sys.stderr)
        return 2
    if args.timeout <= 0:
        print("frontdesk check-handler: --timeout must be positive", file=sys.stderr)
        return 2
    return Kit(command, settings, args.timeout).run()
