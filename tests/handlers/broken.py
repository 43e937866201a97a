"""A deliberately broken handler for the conformance kit's tests: `broken.py MODE`.

Written on the bare protocol (no SDK, which would prevent these faults). It answers the hello
and acks events correctly except for its one fault:
  noise       prints a debug line to stdout while handling each event
  silent      never answers an event
  ignore-eof  keeps running after stdin is closed
  lax         ignores malformed frames instead of exiting (and never reads past a bad length)
"""
import sys
import threading

from frontdesk.protocol.frames import ProtocolError, read_frame, write_frame
from frontdesk.protocol.rpc import Request, parse_message

MODE = sys.argv[1]
stdin, stdout = sys.stdin.buffer, sys.stdout.buffer


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
            sys.exit(2)
        if not isinstance(message, Request):
            continue
        if message.method == "hello" and 1 not in message.params[0]["protocol"]:
            write_frame(stdout, [1, message.msgid, {"message": "speaks protocol 1 only"}, None])
            sys.exit(1)
        elif message.method == "hello":
            write_frame(stdout, [1, message.msgid, None, {"protocol": 1, "name": f"broken-{MODE}",
                                                          "max_in_flight": 4}])
        elif message.method == "event":
            if MODE == "silent":
                continue
            if MODE == "noise":
                stdout.write(b"handling an event\n")
            write_frame(stdout, [1, message.msgid, None, None])
        else:
            write_frame(stdout, [1, message.msgid, {"message": f"unknown method {message.method}"}, None])


serve()
if MODE == "ignore-eof":
    threading.Event().wait()
