"""A handler that hoards: it keeps calling the API but stops reading its stdin (raw protocol, no
SDK, which would never stop reading). Used by the tests of the dispatcher's call bounds and by the
measurement in docs/dispatcher.md ("A handler that stops reading").

An event whose text is `hoard` turns this process into a hoarder for good. With
$FD_TEST_HOARD_CALL = `user_get` (the default) it reads the event's user and, if that user's data
is smaller than $FD_TEST_HOARD_BYTES (default 65,000: about the most the default
user_data_max_bytes of 64 KiB lets it store), stores that much (the calls it waits for); then it stops reading its stdin and makes more calls for the event without waiting, up to
$FD_TEST_HOARD_CALLS in all (default 100): `user_get` of that user, so every answer is that big.
With `bot_info` it makes those calls at once, each `GET /v2/bot/info` (answered by LINE, paced by
the rate limiter).
Any other event is answered as an echo bot would, with $FD_TEST_ORDINARY = `reply` (the default:
a reply with its reply token) or `user_get` (its user's record: no LINE needed), then the ack.
Window: $FD_TEST_WINDOW events (default 1, so that a hoarder is handed no ordinary event).
Appended to $FD_TEST_RECORD: `start <event id> <pid>` for every event, `end <event id> <pid>`
for every ack, `hoard <event id> <n> <pid>` for every hoarding call sent.
"""
from __future__ import annotations

import os
import sys
import threading

from frontdesk.protocol.frames import encode_frame
from tests.frame_stream import read_frame

WINDOW = int(os.environ.get("FD_TEST_WINDOW", "1"))
HOARD_CALL = os.environ.get("FD_TEST_HOARD_CALL", "user_get")
HOARD_CALLS = int(os.environ.get("FD_TEST_HOARD_CALLS", "100"))
HOARD_BYTES = int(os.environ.get("FD_TEST_HOARD_BYTES", "65000"))
ORDINARY = os.environ.get("FD_TEST_ORDINARY", "reply")
RECORD = os.environ.get("FD_TEST_RECORD")

out = sys.stdout.buffer
write_lock = threading.RLock()   # also makes "end" recorded <=> ack written
answers: dict[int, threading.Event] = {}
results: dict[int, tuple] = {}
deaf = threading.Event()   # set: the main loop never reads stdin again
msgids = iter(range(1, 2**31))


def send(value) -> None:
    with write_lock:
        out.write(encode_frame(value))
        out.flush()


def record(line: str) -> None:
    if RECORD:
        with open(RECORD, "a") as f:
            f.write(f"{line} {os.getpid()}\n")


def call(method: str, event_id: str, args: dict, wait: bool = True):
    """One API call for the event; (error, result) when waiting for the answer."""
    msgid = next(msgids)
    answered = threading.Event()
    answers[msgid] = answered
    send([0, msgid, method, [event_id, args]])
    if wait:
        answered.wait()
        return results.pop(msgid)
    return None


def hoard(event_id: str, user_id: str) -> None:
    made = 0
    if HOARD_CALL == "user_get":
        hoarded = ("user_get", {"userId": user_id})
        _, user = call("user_get", event_id, {"userId": user_id})
        made += 1
        if len(((user or {}).get("data") or {}).get("blob", "")) < HOARD_BYTES:
            call("user_set_data", event_id, {"userId": user_id, "data": {"blob": "x" * HOARD_BYTES}})
            made += 1
    else:
        hoarded = ("call", {"method": "GET", "path": "/v2/bot/info"})
    deaf.set()
    for n in range(made + 1, HOARD_CALLS + 1):
        call(hoarded[0], event_id, hoarded[1], wait=False)
        record(f"hoard {event_id} {n}")


def handle(msgid: int, doc: dict) -> None:
    o = doc["o"]
    event = o["event"]
    text = (event.get("message") or {}).get("text", "")
    record(f"start {o['_id']}")
    if text == "hoard":
        hoard(o["_id"], event["source"]["userId"])
        return   # never answered: this process reads nothing more
    if ORDINARY == "user_get":
        error, _ = call("user_get", o["_id"], {"userId": event["source"]["userId"]})
    else:
        error, _ = call("reply", o["_id"], {"replyToken": event.get("replyToken"),
                                            "messages": [{"type": "text", "text": f"echo: {text}"}]})
    with write_lock:
        send([1, msgid, None if error is None else {"message": f"call failed: {error}"}, None])
        if error is None:
            record(f"end {o['_id']}")


def main() -> int:
    stdin = sys.stdin.buffer
    hello = read_frame(stdin)
    send([1, hello[1], None, {"protocol": 1, "name": "hoarder", "max_in_flight": WINDOW}])
    while True:
        if deaf.is_set():
            threading.Event().wait()   # never reads again, until killed
        try:
            message = read_frame(stdin)
        except EOFError:
            return 0
        if message[0] == 0 and message[2] == "event":
            threading.Thread(target=handle, args=(message[1], message[3][0]), daemon=True).start()
        elif message[0] == 1 and message[1] in answers:
            results[message[1]] = (message[2], message[3])
            answers.pop(message[1]).set()


if __name__ == "__main__":
    sys.exit(main())
