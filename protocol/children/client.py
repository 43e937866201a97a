"""A frame-speaking child spoken to from blocking code: the conformance kit's handler under test
(handlers/conformance.py) and the tests' rate limiter (tests/ratelimiter_client.py).

The dispatcher drives its children from one event loop (framed.py); a kit or a test is plain
blocking code, so here a reader thread decodes the child's stdout through the same MessageStream
and hands each message to a callback, and writes go straight to its stdin under a lock.
"""
from __future__ import annotations

import os
import subprocess
import threading
from typing import IO, Callable

from .. import rpc
from ..frames import DEFAULT_MAX_FRAME_BYTES, ProtocolError, encode_frame
from ..reads import READ_SIZE
from .stream import MessageStream

KILL_JOIN_S = 5.0   # how long kill() waits for the reader threads to see the pipes end


class FramedClient:
    """One child with frames on stdin/stdout, read by a thread of ours. Built idle; `start()`.

    Args:
        argv, env, cwd: the command to start (env None: ours).
        on_message: called on the reader thread with each message the child writes.
        on_end: called on the reader thread once its stdout ends: with None at a clean end,
            with the problem when it wrote something that is not frames (then nothing more is read).
        stderr: subprocess.PIPE (lines go to `on_stderr_line`), a file, or None (ours).
    """

    def __init__(self, argv: list[str], on_message: Callable[[rpc.Message], None],
                 on_end: Callable[[str | None], None], *, env: dict | None = None, cwd=None,
                 stderr: int | IO | None = subprocess.PIPE, on_stderr_line: Callable[[str], None] | None = None,
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES):
        self.argv, self.env, self.cwd, self.stderr = argv, env, cwd, stderr
        self.on_message, self.on_end, self.on_stderr_line = on_message, on_end, on_stderr_line
        self.max_frame_bytes = max_frame_bytes
        self.proc: subprocess.Popen | None = None
        self._write_lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> "FramedClient":
        """Start the child (OSError when it cannot be) and its reader thread(s)."""
        self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr)
        self._threads = [threading.Thread(target=self._read_stdout, daemon=True)]
        if self.stderr == subprocess.PIPE:
            self._threads.append(threading.Thread(target=self._read_stderr, daemon=True))
        for thread in self._threads:
            thread.start()
        return self

    @property
    def reading(self) -> bool:
        """Whether its stdout is still being read."""
        return self._threads[0].is_alive()

    # Each reader thread closes its own pipe once it has read it to the end. Closed by another
    # thread instead, the descriptor's number can be reused by the next child's pipe while this
    # thread is about to read it again: it would read that child's frames (the kit's tests lost a
    # hello answer or an ack about one run in eight that way).
    def _read_stdout(self) -> None:
        stream = MessageStream(self.max_frame_bytes)
        pipe = self.proc.stdout
        problem = None
        try:
            while data := os.read(pipe.fileno(), READ_SIZE):
                for message in stream.feed(data):
                    self.on_message(message)
            stream.end()
        except ProtocolError as exc:
            problem = str(exc)
        except OSError:
            pass   # a read error: the end, as at EOF
        finally:
            pipe.close()
        self.on_end(problem)

    def _read_stderr(self) -> None:
        pipe = self.proc.stderr
        try:
            for line in pipe:
                if self.on_stderr_line is not None:
                    self.on_stderr_line(line.decode("utf-8", "replace").rstrip())
        except OSError:
            pass
        finally:
            pipe.close()

    def send(self, message: rpc.Message) -> None:
        self.send_bytes(encode_frame(message.to_wire()))

    def send_bytes(self, data: bytes) -> None:
        """Write and flush; BrokenPipeError (an OSError) when the child closed its stdin."""
        with self._write_lock:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()

    def close_stdin(self) -> None:
        with self._write_lock:
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def wait_exit(self, timeout: float) -> int | None:
        """Its exit status within `timeout` (its output read to the end), else None."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        for thread in self._threads:
            thread.join(timeout)
        return code

    def kill(self) -> None:
        """Kill it (if it still runs), reap it and close its stdin; its output pipes end with it
        and the reader threads close them (a grandchild still holding one keeps its thread, and
        the descriptor, until it exits)."""
        if self.proc is None:
            return   # never started
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.close_stdin()
        for thread in self._threads:
            thread.join(KILL_JOIN_S)
