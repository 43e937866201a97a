"""A deliberately broken handler for the conformance kit's tests: `broken.py MODE`.

Written on the bare protocol (no SDK, which would prevent these faults). It answers the hello
and acks events correctly except for its one fault:
  noise       prints a debug line to stdout while handling each event
  silent      never answers an event
  ignore-eof  keeps running after stdin is closed
  lax         ignores malformed frames instead of exiting (and never reads past a bad length)
  nack-unknown  nacks event and message types it does not know (the SPEC says ack them)
  drop-on-eof   fetches a profile for each event, acks when it comes; at EOF exits 0 leaving the
                event unanswered
  string-msgid  answers events with the msgid as a string ("1", not 1)
  wrong-exit    exits 1 on a malformed frame and 2 when refusing the protocol version (swapped)
  string-protocol  answers the hello with "protocol": "1" (a string)
  batch-reversed   declares the `batch` feature and answers a batch's events last first
  none        no fault: today's protocol exactly, declaring no feature (the kit passes it)
"""
import sys
import threading

from frontdesk.protocol.frames import ProtocolError
from tests.frame_stream import read_frame, write_frame
from frontdesk.protocol.rpc import Notification, Request, Response, parse_message

MODE = sys.argv[1]
stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
KNOWN_EVENTS = {"message", "follow", "unfollow", "join", "leave", "memberJoined", "memberLeft", "postback",
                "beacon", "accountLink", "unsend", "videoPlayComplete", "membership", "messageEdited",
                "botSuspended", "botResumed", "activated", "deactivated", "module", "delivery"}
KNOWN_MESSAGES = {"text", "image", "video", "audio", "file", "location", "sticker"}
waiting_profiles = {}   # drop-on-eof: our call's msgid -> the event's msgid


def known(event: dict) -> bool:
    return event["type"] in KNOWN_EVENTS and (event["type"] != "message"
                                              or event["message"]["type"] in KNOWN_MESSAGES)


def serve():
    while True:
        try:
            message = parse_message(read_frame(stdin))
        except EOFError:
            return
        except ProtocolError as exc:
            if MODE == "lax":
                continue
            print(f"broken: protocol error: {exc}", file=sys.stderr)
            sys.exit(1 if MODE == "wrong-exit" else 2)
        if isinstance(message, Notification) and message.method == "batch" and MODE == "batch-reversed":
            for msgid, _ in reversed(message.params):
                write_frame(stdout, [1, msgid, None, None])
            continue
        if not isinstance(message, Request):
            if isinstance(message, Response) and message.msgid in waiting_profiles:   # drop-on-eof: ack its event
                write_frame(stdout, [1, waiting_profiles.pop(message.msgid), None, None])
            continue
        if message.method == "hello" and 1 not in message.params[0]["protocol"]:
            write_frame(stdout, [1, message.msgid, {"message": "speaks protocol 1 only"}, None])
            sys.exit(2 if MODE == "wrong-exit" else 1)
        elif message.method == "hello":
            answer = {"protocol": "1" if MODE == "string-protocol" else 1, "name": f"broken-{MODE}", "max_in_flight": 4}
            if MODE == "batch-reversed":
                answer["features"] = ["batch"]
            write_frame(stdout, [1, message.msgid, None, answer])
        elif message.method == "event":
            if MODE == "silent":
                continue
            if MODE == "noise":
                stdout.write(b"handling an event\n")
            document = message.params[0]
            if MODE == "nack-unknown" and not known(document["o"]["event"]):
                write_frame(stdout, [1, message.msgid, {"message": "unknown type", "retry": True}, None])
            elif MODE == "drop-on-eof":
                call = (1000 + message.msgid) & 0xFFFFFFFF
                waiting_profiles[call] = message.msgid
                write_frame(stdout, [0, call, "profile", [document["o"]["_id"], {"userId": "U" + "1" * 32}]])
            else:
                write_frame(stdout, [1, str(message.msgid) if MODE == "string-msgid" else message.msgid,
                                     None, None])
        else:
            write_frame(stdout, [1, message.msgid, {"message": f"unknown method {message.method}"}, None])


serve()
if MODE == "ignore-eof":
    threading.Event().wait()
