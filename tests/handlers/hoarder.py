"""A handler that hoards: it keeps calling the API but stops reading its stdin (raw protocol, no
SDK, which would never stop reading). Used by the tests of the dispatcher's call bounds and by the
measurement in docs/dispatcher.md ("A handler that stops reading").

An event whose text is `hoard` turns this process into a hoarder for good: it stores
$FD_TEST_HOARD_BYTES (default 5,000,000) bytes of user data for the event's user (that first call it
waits for), then stops reading its stdin and makes $FD_TEST_HOARD_CALLS - 1 (default 99) more
calls for the event without waiting: `user_get` of that user, so every answer is that big.
Any other event is answered as an echo bot would: a reply with its reply token, then the ack.
Window: $FD_TEST_WINDOW events (default 1, so that a hoarder is handed no ordinary event).
Every event start is appended to $FD_TEST_RECORD as `start <event id> <pid>`, every hoarding
call sent as `hoard <event id> <pid> <n>`.
"""
from __future__ import annotations

import os
import sys
import threading

from frontdesk.protocol.frames import encode_frame, read_frame

WINDOW = int(os.environ.get("FD_TEST_WINDOW", "1"))
HOARD_CALLS = int(os.environ.get("FD_TEST_HOARD_CALLS", "100"))
HOARD_BYTES = int(os.environ.get("FD_TEST_HOARD_BYTES", "5000000"))
RECORD = os.environ.get("FD_TEST_RECORD")

out = sys.stdout.buffer
write_lock = threading.Lock()
answers: dict[int, threading.Event] = {}
errors: dict[int, object] = {}
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
    """One API call for the event; its error (None: success) when waiting for the answer."""
    msgid = next(msgids)
    answered = threading.Event()
    answers[msgid] = answered
    send([0, msgid, method, [event_id, args]])
    if wait:
        answered.wait()
        return errors.pop(msgid, None)
    return None


def handle(msgid: int, doc: dict) -> None:
    o = doc["o"]
    event = o["event"]
    text = (event.get("message") or {}).get("text", "")
    record(f"start {o['_id']}")
    if text == "hoard":
        user_id = event["source"]["userId"]
        call("user_set_data", o["_id"], {"userId": user_id, "data": {"blob": "x" * HOARD_BYTES}})
        deaf.set()
        for n in range(2, HOARD_CALLS + 1):
            call("user_get", o["_id"], {"userId": user_id}, wait=False)
            record(f"hoard {o['_id']} {n}")
        return   # never answered: this process reads nothing more
    error = call("reply", o["_id"], {"replyToken": event.get("replyToken"),
                                     "messages": [{"type": "text", "text": f"echo: {text}"}]})
    send([1, msgid, None if error is None else {"message": f"reply failed: {error}"}, None])


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
            errors[message[1]] = message[2]
            answers.pop(message[1]).set()


if __name__ == "__main__":
    sys.exit(main())
