"""A raw-protocol test handler (protocol.frames only, no SDK) whose behaviour the test scripts.

Start-up behaviour by argument: `ok` (default), `refuse` (handshake answered with an error),
`silent` (never answers the hello), `crashloop` (exits 1 at start while $FD_TEST_CRASH_FILE
exists), `batch` (declares the protocol's `batch` feature: a batch's events are handled one after
the other in one thread, the rest answered unhandled after a nack, and each batch's size logged to
stderr as `batch of N`). Per-event behaviour by the LINE message text, on the first attempt only, so the retry
succeeds: `crash` exits mid-event, `hang` never answers, `garbage` writes noise to stdout,
`nack` answers a retryable nack, `poison` answers a non-retryable nack; `slow` sleeps 0.3 s;
any event sleeps a random 0..$FD_TEST_DELAY_MS ms. `api` makes one API call first (a reply with
the event's reply token);
`deepcall` makes one whose arguments nest as deep as its own encoder allows, and acks only when
the dispatcher answers it with an error (else a non-retryable nack); `wait2` makes two API calls
(GET /v2/bot/info) one after the other and acks only if both were answered without error;
`deaf` (first attempt) stops reading stdin and makes $FD_TEST_DEAF_CALLS user_get calls for
user "Ubig" without waiting for their answers (the event's deadline waits for them); `flood` makes $FD_TEST_FLOOD_CALLS user_get calls
one after the other and acks only if exactly those past $FD_TEST_CALL_CAP were refused, naming
the cap. `crashalways` exits mid-event on every attempt; with $FD_TEST_CRASH_PERCENT=p, any
delivery whose (event id, attempt) hashes into the first p percent exits mid-event.
Every event start and ack is appended as one line to $FD_TEST_RECORD:
`start|end <event id> <key> <pid> <attempt>`.
"""
from __future__ import annotations

import os
import random
import sys
import threading
import time
import zlib

from frontdesk.protocol.frames import ProtocolError, encode_frame, unpack
from tests.frame_stream import read_frame

WINDOW = int(os.environ.get("FD_TEST_WINDOW", "4"))
DELAY_MS = float(os.environ.get("FD_TEST_DELAY_MS", "0"))
RECORD = os.environ.get("FD_TEST_RECORD")
CRASH_PERCENT = int(os.environ.get("FD_TEST_CRASH_PERCENT", "0"))

out = sys.stdout.buffer
write_lock = threading.RLock()  # also makes "end" recorded <=> ack written
record_fd = os.open(RECORD, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if RECORD else None
api_answers: dict[int, threading.Event] = {}
api_errors: dict[int, object] = {}
deaf = threading.Event()   # set: the main loop stops reading stdin


def deepest_call(msgid: int, event_id: str) -> list:
    """A reply call nested as deep as a frame can be and still be decoded (a level deeper than
    the dispatcher could pass on if it nested it inside another map)."""
    for depth in range(1100, 0, -1):
        nested: list = []
        for _ in range(depth):
            nested = [nested]
        call = [0, msgid, "reply", [event_id, {"replyToken": "t", "messages": nested}]]
        try:
            unpack(encode_frame(call)[4:])
            return call
        except (ValueError, ProtocolError):
            continue
    raise AssertionError("nothing encodes")


def call_api(msgid: int, call: list):
    """Send an API call and wait for its answer; returns the answer's error."""
    answered = threading.Event()
    api_answers[msgid] = answered
    send(call)
    answered.wait()
    return api_errors.pop(msgid, None)


def send(value) -> None:
    with write_lock:
        out.write(encode_frame(value))
        out.flush()


def record(what: str, o: dict) -> None:
    if record_fd is not None:
        os.write(record_fd, f"{what} {o['_id']} {o['key']} {os.getpid()} {o['attempt']}\n".encode())


def handle(msgid: int, doc: dict) -> bool | None:
    """True: acked; False: nacked; None: left unanswered (hang, garbage, deaf)."""
    o = doc["o"]
    text = (o["event"].get("message") or {}).get("text", "")
    first = o["attempt"] == 1
    record("start", o)
    if text == "crashalways" or (CRASH_PERCENT and
                                 zlib.crc32(f"{o['_id']}/{o['attempt']}".encode()) % 100 < CRASH_PERCENT):
        with write_lock:
            os._exit(1)
    if first and text == "crash":
        with write_lock:
            os._exit(1)
    if first and text == "hang":
        return
    if first and text == "garbage":
        with write_lock:
            out.write(b"Traceback (most recent call last): oops, a print() on stdout\n")
            out.flush()
        return
    if text == "api":
        call_api(msgid, [0, msgid, "reply", [o["_id"], {"replyToken": o["event"].get("replyToken", "t"),
                                                       "messages": [{"type": "text", "text": "hi"}]}]])
    if first and text == "deaf":
        deaf.set()
        for n in range(int(os.environ.get("FD_TEST_DEAF_CALLS", "0"))):
            send([0, 1_000_000 + n, "user_get", [o["_id"], {"userId": "Ubig"}]])
        return
    if text == "flood":
        cap, refused = int(os.environ["FD_TEST_CALL_CAP"]), []
        for n in range(int(os.environ["FD_TEST_FLOOD_CALLS"])):
            error = call_api(msgid, [0, msgid, "user_get", [o["_id"], {"userId": o["key"]}]])
            if error is not None:
                refused.append(n if f"max_calls_per_event={cap}" in error["message"] else error)
        if refused != list(range(cap, int(os.environ["FD_TEST_FLOOD_CALLS"]))):
            send([1, msgid, {"message": f"unexpected refusals: {refused}", "retry": False}, None])
            return False
    if text == "wait2":
        for _ in range(2):
            error = call_api(msgid, [0, msgid, "call", [o["_id"], {"method": "GET", "path": "/v2/bot/info"}]])
            if error is not None:
                send([1, msgid, {"message": f"call failed: {error}", "retry": False}, None])
                return False
    if text == "deepcall" and call_api(msgid, deepest_call(msgid, o["_id"])) is None:
        send([1, msgid, {"message": "the deep call was not refused", "retry": False}, None])
        return False
    if text == "slow":
        time.sleep(0.3)
    if DELAY_MS:
        time.sleep(random.uniform(0, DELAY_MS) / 1000)
    if first and text == "nack":
        send([1, msgid, {"message": "try again", "retry": True}, None])
        return False
    if text == "poison":
        send([1, msgid, {"message": "cannot handle this", "retry": False}, None])
        return False
    with write_lock:
        record("end", o)
        send([1, msgid, None, None])
    return True


def handle_batch(entries: list) -> None:
    """A batch: in order; after a nack the rest answered unhandled; after a hang, nothing more."""
    print(f"batch of {len(entries)}", file=sys.stderr, flush=True)
    answered = True
    for msgid, doc in entries:
        if answered:
            answered = handle(msgid, doc)
            if answered is None:
                return
        else:
            send([1, msgid, {"message": "skipped: an earlier event of its batch was nacked"}, None])


def main() -> int:
    mode = sys.argv[1] if len(sys.argv) > 1 else "ok"
    if mode == "crashloop" and os.path.exists(os.environ["FD_TEST_CRASH_FILE"]):
        print("crashloop: crash file present, exiting", file=sys.stderr, flush=True)
        return 1
    stdin = sys.stdin.buffer
    hello = read_frame(stdin)
    if mode == "refuse":
        send([1, hello[1], {"message": "no supported protocol version"}, None])
        return 1
    if mode == "silent":
        while stdin.read(4096):
            pass
        return 0
    answer = {"protocol": 1, "name": "scripted", "max_in_flight": WINDOW}
    if mode == "batch":
        answer["features"] = ["batch"]
    send([1, hello[1], None, answer])
    print(f"scripted handler ready pid={os.getpid()}", file=sys.stderr, flush=True)
    if os.environ.get("FD_TEST_ENV_FILE"):   # what a handler is given, for the tests to check
        with open(os.environ["FD_TEST_ENV_FILE"], "w") as f:
            f.write("\n".join(sorted(os.environ)))
    while True:
        if deaf.is_set():
            threading.Event().wait()   # never reads again, until killed
        try:
            message = read_frame(stdin)
        except EOFError:
            return 0
        if message[0] == 0 and message[2] == "event":
            threading.Thread(target=handle, args=(message[1], message[3][0]), daemon=True).start()
        elif message[0] == 2 and message[1] == "batch" and mode == "batch":
            threading.Thread(target=handle_batch, args=(message[2],), daemon=True).start()
        elif message[0] == 1 and message[1] in api_answers:
            api_errors[message[1]] = message[2]
            api_answers.pop(message[1]).set()


if __name__ == "__main__":
    sys.exit(main())
