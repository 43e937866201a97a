"""The Python handler SDK: write a LINE bot as a few decorated functions.

    from frontdesk import Bot
    bot = Bot("echo", max_in_flight=8)

    @bot.on_message("text")
    def on_text(event, api):
        api.reply(event.reply_token, [{"type": "text", "text": event.message.text}])

    bot.run()

`Bot.run()` speaks the wire protocol of protocol/SPEC.md on the process's stdin/stdout: the
handshake, events in, acks/nacks and API calls out. Each event runs in a worker thread (up to
`max_in_flight` at once), and so does each batch of one conversation's events (the protocol's
`batch` feature, which the SDK declares), one event after the other; one reader thread (the
caller of run) reads every frame; one lock serialises writes. A bot whose functions are all
`async def` runs them on one asyncio loop instead (handlers/loopsession.py). The frame stream is kept clean: the real fd 1 is kept private and fd 1 (and
sys.stdout) point at stderr, so print(), logging, C extensions and subprocesses all write log
text, never frames. An exception in a handler becomes a nack carrying its text; an event type
with no handler is acked (the bot chose not to care about it).
"""
from __future__ import annotations

import inspect
import logging
import os
import queue
import sys
import threading

from frontdesk.protocol import PROTOCOL_VERSION
from frontdesk.protocol.frames import DEFAULT_MAX_FRAME_BYTES, FrameDecoder, ProtocolError, encode_frame
from frontdesk.protocol.line_endpoints import TABLE, ApiMethod, EndpointTable
from frontdesk.protocol.reads import READ_SIZE
from frontdesk.protocol.rpc import MsgIds, Notification, Request, Response, error_value, parse_message

EXIT_OK, EXIT_UNSUPPORTED, EXIT_PROTOCOL_ERROR = 0, 1, 2
MAX_NACK_MESSAGE = 1000   # characters of a nack's message
BATCH = "batch"           # the protocol feature this SDK takes (SPEC.md section 7)
SKIPPED = error_value("skipped: an earlier event of its batch was nacked")
_STOP = object()

log = logging.getLogger("frontdesk.sdk")


class ApiError(Exception):
    """An API call failed: `status` is LINE's HTTP status (0 when no HTTP answer), `message`
    LINE's or frontdesk's text, `details` LINE's details list. Left uncaught in a handler it
    nacks the event, retried only if the failure is `retryable`."""

    def __init__(self, message: str, status: int = 0, details=None, retryable: bool = False):
        super().__init__(f"{message} (status {status})" if status else message)
        self.message = message
        self.status = status
        self.details = details or []
        self.retryable = retryable

    @property
    def retry(self) -> bool:
        return self.retryable

    @classmethod
    def from_wire(cls, error) -> "ApiError":
        if not isinstance(error, dict):
            return cls(f"malformed API error from the dispatcher: {error!r}")
        status = error.get("status", 0)
        return cls(str(error.get("message", "API call failed")),
                   status if isinstance(status, int) else 0,
                   error.get("details"), bool(error.get("retryable", False)))


class Nack(Exception):
    """Raise to refuse an event on purpose: `Nack("why", retry=False)` dead-letters it at once.

    Any exception with a boolean `retry` attribute has the same effect; others retry.
    """

    def __init__(self, message: str, retry: bool = True):
        super().__init__(message)
        self.retry = retry


class Record(dict):
    """A dict whose keys also read as attributes (nested maps too): `event.message.text`."""

    def __getattr__(self, name):
        try:
            value = self[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}") from None
        return Record(value) if type(value) is dict else value


class Event(Record):
    """The LINE event exactly as received (keys and attributes), plus the document fields:
    `id` (webhookEventId), `key` (conversation key), `received_at` (epoch ms), `attempt`
    (1 = first delivery), `ts` (store order), `destination`, and `document` (all of it)."""

    def __init__(self, document: dict):
        super().__init__(document["o"]["event"])
        self.document = document

    id = property(lambda self: self.document["o"]["_id"])
    key = property(lambda self: self.document["o"]["key"])
    received_at = property(lambda self: self.document["o"]["received_at"])
    attempt = property(lambda self: self.document["o"]["attempt"])
    destination = property(lambda self: self.document["o"].get("destination", ""))
    ts = property(lambda self: self.document["ts"])
    reply_token = property(lambda self: self.get("replyToken"))
    user_id = property(lambda self: (self.get("source") or {}).get("userId"))


def _messages(messages) -> list:
    """A str becomes one text message, a dict one message; lists pass through."""
    if isinstance(messages, str):
        return [{"type": "text", "text": messages}]
    if isinstance(messages, dict):
        return [messages]
    return list(messages)


def _drop_none(args: dict) -> dict:
    return {k: v for k, v in args.items() if v is not None}


class Api:
    """LINE API calls on behalf of one event (journaled and retried by the dispatcher).

    One method per entry of the endpoint table (protocol/line_endpoints.py, SPEC.md section 8):
    the shorthands below, and for an entry without one a method by the table's SDK name that
    takes LINE's args as a map or by name (with_table_methods). Every method blocks until the
    dispatcher answers and returns the result, or raises ApiError; in an `async def` handler each
    returns an awaitable instead (`await api.reply(...)`).
    """

    def __init__(self, session: "_Session", event_id: str | None):
        self._session = session
        self.event_id = event_id

    def call_method(self, method: str, args: dict):
        """Any protocol API method by name (see SPEC.md); the methods below are shorthands."""
        return self._session.call(method, [self.event_id, args])

    def reply(self, reply_token: str, messages, notification_disabled: bool | None = None):
        return self.call_method("reply", _drop_none({
            "replyToken": reply_token, "messages": _messages(messages),
            "notificationDisabled": notification_disabled}))

    def push(self, to: str, messages, notification_disabled: bool | None = None):
        """LINE's answer, `{"sentMessages": [{"id", "quoteToken"?}], "sent_as": "push"}`. Also when
        the push was repeated after a lost answer and LINE dropped the repeat (409): then the
        accepted request's sentMessages, and its `request_id`."""
        return self.call_method("push", _drop_none({
            "to": to, "messages": _messages(messages), "notificationDisabled": notification_disabled}))

    def multicast(self, to: list[str], messages):
        return self.call_method("multicast", {"to": list(to), "messages": _messages(messages)})

    def broadcast(self, messages):
        return self.call_method("broadcast", {"messages": _messages(messages)})

    def narrowcast(self, body: dict):
        return self.call_method("narrowcast", dict(body))

    def profile(self, user_id: str) -> dict:
        return self.call_method("profile", {"userId": user_id})

    def content(self, message_id: str) -> dict:
        """`{"content_type": str, "data": bytes}` of an image, video, audio or file message."""
        return self.call_method("content", {"messageId": message_id})

    def call(self, method: str, path: str, query: dict | None = None, body=None, data_api: bool = False,
             content_type: str | None = None):
        """Any other Messaging API endpoint: returns `{"status": int, "body": ...}`. A `body` of
        bytes (a rich menu image) is sent as is, with `content_type`."""
        return self.call_method("call", _drop_none({
            "method": method, "path": path, "query": query, "body": body,
            "data_api": data_api or None, "content_type": content_type}))

    def user_get(self, user_id: str):
        return self.call_method("user_get", {"userId": user_id})

    def user_set_data(self, user_id: str, data: dict):
        return self.call_method("user_set_data", {"userId": user_id, "data": dict(data)})

    def progress(self) -> None:
        """Tell the dispatcher this event is still being worked on (restarts its deadline)."""
        self._session.notify("progress", [self.event_id])


def _table_method(method: ApiMethod):
    """The SDK's method for an entry of the endpoint table that has no shorthand in Api."""
    def call(self, args: dict | None = None, **named):
        return self.call_method(method.name, {**(args or {}), **named})
    call.__name__ = call.__qualname__ = method.sdk
    call.__doc__ = f"`{method.name}` (protocol/SPEC.md section 8): LINE's args as a map, or by their names."
    return call


def with_table_methods(api_class: type, table: EndpointTable = TABLE) -> type:
    """Give `api_class` a method for each entry of `table` it has none for: adding a method to the
    endpoint table adds it to the SDK."""
    for method in table.methods.values():
        if not hasattr(api_class, method.sdk):
            setattr(api_class, method.sdk, _table_method(method))
    return api_class


with_table_methods(Api)


class _PendingCall:
    """An API call waiting for its answer. A bare lock is the signal: the caller blocks acquiring
    it a second time until the reader releases it (an Event is a Condition, a lock and a flag:
    measurably more per call when every event makes two)."""
    __slots__ = ("_answered", "error", "result")

    def __init__(self):
        self._answered = threading.Lock()
        self._answered.acquire()
        self.error = None
        self.result = None

    def wait(self) -> None:
        self._answered.acquire()

    def resolve(self, error, result) -> None:
        self.error, self.result = error, result
        self._answered.release()


class _Workers:
    """`count` threads handling events from one queue: what ThreadPoolExecutor does, without a
    Future, a work item and a semaphore per event (nobody waits on those here)."""

    def __init__(self, count: int, work):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._run, args=(work,), name=f"event-{n}", daemon=True)
                         for n in range(count)]
        for thread in self._threads:
            thread.start()

    def submit(self, item) -> None:
        self._queue.put(item)

    def _run(self, work) -> None:
        while (item := self._queue.get()) is not _STOP:
            work(item)

    def shutdown(self) -> None:
        """Finish every event queued, then stop the threads."""
        for _ in self._threads:
            self._queue.put(_STOP)
        for thread in self._threads:
            thread.join()


class _Session:
    """One protocol session over two private descriptors: frames in, frames out."""

    def __init__(self, bot: "Bot", in_fd: int, out_fd: int):
        self.bot = bot
        self.in_fd = in_fd
        self.out = open(out_fd, "wb", buffering=0, closefd=False)
        self.write_lock = threading.Lock()
        self.calls_lock = threading.Lock()
        self.calls: dict[int, _PendingCall] = {}
        self.msgids = MsgIds()
        self.max_frame_bytes = DEFAULT_MAX_FRAME_BYTES
        self.decoder = FrameDecoder(self.max_frame_bytes)
        self.dispatcher_gone = False
        self.workers: _Workers | None = None

    # --- writing (any thread) ---------------------------------------------------------------
    def send(self, message) -> None:
        frame = encode_frame(message.to_wire())
        if len(frame) - 4 > self.max_frame_bytes:
            raise ValueError(f"frame of {len(frame) - 4} bytes exceeds max_frame_bytes "
                             f"{self.max_frame_bytes}")
        with self.write_lock:
            view = memoryview(frame)
            while view:
                view = view[self.out.write(view):]

    def notify(self, method: str, params: list) -> None:
        self.send(Notification(method, params))

    def call(self, method: str, params: list):
        pending = _PendingCall()
        with self.calls_lock:
            if self.dispatcher_gone:
                raise ApiError("dispatcher gone: stdin closed")
            msgid = self.msgids.next()
            self.calls[msgid] = pending
        try:
            self.send(Request(msgid, method, params))
        except BaseException:
            with self.calls_lock:
                self.calls.pop(msgid, None)
            raise
        pending.wait()
        if pending.error is not None:
            raise ApiError.from_wire(pending.error)
        return pending.result

    # --- reading (the main thread) ----------------------------------------------------------
    def frames(self):
        """Decoded frames until EOF; a truncated last frame is a ProtocolError."""
        while True:
            data = os.read(self.in_fd, READ_SIZE)
            if not data:
                if self.decoder.buffered:
                    raise ProtocolError(f"stdin ended inside a frame ({self.decoder.buffered} bytes)")
                return
            yield from self.decoder.feed(data)

    def handshake(self, frames) -> bool:
        """Answer the hello; False if the dispatcher offered no version we speak."""
        first = next(frames, None)
        if first is None:
            raise EOFError
        return answer_hello(self, self.bot, first)

    def serve(self, frames) -> None:
        for value in frames:
            message = parse_message(value)
            if isinstance(message, Response):
                self._resolve(message)
            elif isinstance(message, Request):
                if message.method == "event":
                    self.workers.submit([(message.msgid, message.params)])
                else:
                    self.send(Response(message.msgid, error_value(f"unknown method {message.method}"),
                                       None))
            elif message.method == BATCH:
                self.workers.submit(batch_entries(message.params))
            # Other notifications from the dispatcher: none are defined in version 1; ignored.

    def _resolve(self, response: Response) -> None:
        with self.calls_lock:
            pending = self.calls.pop(response.msgid, None)
        if pending is None:
            log.warning("event=unknown_response_ignored msgid=%s", response.msgid)
            return
        pending.resolve(response.error, response.result)

    def fail_pending_calls(self) -> None:
        """stdin is closed: no answer can come any more; waiting calls fail, new ones too."""
        with self.calls_lock:
            self.dispatcher_gone = True
            pending, self.calls = list(self.calls.values()), {}
        for call in pending:
            call.resolve({"message": "dispatcher gone: stdin closed", "status": 0, "retryable": True}, None)

    def _handle_events(self, entries: list[tuple[int, list]]) -> None:
        """One event, or a batch of one conversation's events: handled in order, each answered
        when done; after a nack the rest are answered unhandled (the dispatcher gives them back)."""
        nacked = False
        for msgid, params in entries:
            if nacked:
                self._answer(msgid, SKIPPED)
                continue
            error = None
            try:
                event = Event(params[0])
                self.bot.dispatch(event, Api(self, event.id))
            except BaseException as exc:  # noqa: BLE001 - user code: every failure becomes a nack
                error = nack_value(exc, params)
                nacked = True
            self._answer(msgid, error)

    def _answer(self, msgid: int, error) -> None:
        try:
            self.send(Response(msgid, error, None))
        except (BrokenPipeError, ValueError, OSError) as exc:
            log.warning("event=answer_failed msgid=%s error=%r", msgid, str(exc))


def answer_hello(session, bot: "Bot", first) -> bool:
    """Answer the hello on `session` (either kind); False if the dispatcher offered no version we
    speak. The dispatcher's max_frame_bytes becomes the session's limit both ways."""
    message = parse_message(first)
    if not isinstance(message, Request) or message.method != "hello":
        raise ProtocolError(f"the first message must be the hello request, got {first!r:.80}")
    offer = message.params[0] if message.params and isinstance(message.params[0], dict) else {}
    versions = offer.get("protocol")
    if not isinstance(versions, list) or PROTOCOL_VERSION not in versions:
        session.send(Response(message.msgid, error_value(
            f"handler speaks protocol {PROTOCOL_VERSION}, dispatcher offered {versions!r}"), None))
        return False
    limit = offer.get("max_frame_bytes")
    if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
        session.max_frame_bytes = session.decoder.max_frame_bytes = limit
    answer = {"protocol": PROTOCOL_VERSION, "name": bot.name, "max_in_flight": bot.max_in_flight}
    features = offer.get("features")
    if isinstance(features, list) and BATCH in features:
        answer["features"] = [BATCH]
    session.send(Response(message.msgid, None, answer))
    return True


def batch_entries(params: list) -> list[tuple[int, list]]:
    """A batch's `[[msgid, document], …]` as (msgid, event params) pairs; ProtocolError if malformed."""
    if not params or not all(isinstance(entry, list) and len(entry) == 2 and type(entry[0]) is int
                             for entry in params):
        raise ProtocolError(f"batch params must be [[msgid, document], …], got {params!r:.80}")
    return [(msgid, [document]) for msgid, document in params]


def nack_value(exc: BaseException, params: list) -> dict:
    if isinstance(exc, (KeyError, IndexError, TypeError)) and not _valid_document(params):
        return error_value(f"malformed event document: {params!r:.200}", retry=False)
    retry = getattr(exc, "retry", True)
    text = str(exc) or type(exc).__name__
    if not isinstance(exc, (Nack, ApiError)):
        text = f"{type(exc).__name__}: {text}"
        log.error("event=handler_raised error=%r", text, exc_info=exc)
    # kept short, so the nack always fits in a frame (SPEC.md section 12)
    return error_value(text[:MAX_NACK_MESSAGE], retry=retry if isinstance(retry, bool) else True)


def _valid_document(params) -> bool:
    try:
        o = params[0]["o"]
        return isinstance(o["event"], dict) and isinstance(o["_id"], str)
    except (KeyError, IndexError, TypeError):
        return False


def _protect_stdio() -> tuple[int, int]:
    """Keep fds 0 and 1 private for frames; point fd 1 and sys.stdout at stderr, fd 0 at /dev/null.

    Done at the descriptor level so that C extensions and child processes inherit harmless
    descriptors too. Returns the private (in, out) descriptors.
    """
    in_fd, out_fd = os.dup(0), os.dup(1)
    os.set_inheritable(in_fd, False)
    os.set_inheritable(out_fd, False)
    sys.stdout.flush()
    os.dup2(2, 1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdout = sys.stderr
    sys.stdin = open(os.devnull)
    return in_fd, out_fd


class Bot:
    """A handler: register functions per event type / message type, then `run()`.

    Creating the Bot already protects stdout, so module-level prints after it are safe.
    """

    _stdio: tuple[int, int] | None = None

    def __init__(self, name: str, max_in_flight: int = 1):
        if not isinstance(max_in_flight, int) or max_in_flight < 1:
            raise ValueError(f"max_in_flight must be an integer >= 1, got {max_in_flight!r}")
        self.name = name
        self.max_in_flight = max_in_flight
        self._by_event: dict[str, callable] = {}
        self._by_message: dict[str, callable] = {}
        if Bot._stdio is None:
            Bot._stdio = _protect_stdio()

    def on(self, event_type: str):
        """Decorator: `fn(event, api)` handles events of this type ("follow", "postback", ...)."""
        def register(fn):
            self._by_event[event_type] = fn
            return fn
        return register

    def on_message(self, message_type: str = "*"):
        """Decorator: handles message events whose message.type matches ("*" = any other)."""
        def register(fn):
            self._by_message[message_type] = fn
            return fn
        return register

    def _function_for(self, event: Event):
        fn = None
        if event.get("type") == "message":
            kind = (event.get("message") or {}).get("type")
            fn = self._by_message.get(kind) or self._by_message.get("*")
        return fn or self._by_event.get(event.get("type"))

    def dispatch(self, event: Event, api: Api) -> None:
        """Call the matching function; events nobody registered for are acked untouched."""
        fn = self._function_for(event)
        if fn is not None:
            fn(event, api)

    async def dispatch_async(self, event: Event, api: Api) -> None:
        """The same for `async def` functions (the loop session)."""
        fn = self._function_for(event)
        if fn is not None:
            await fn(event, api)

    def asynchronous(self) -> bool:
        """Whether the registered functions are `async def` (all of them) or plain (all of them)."""
        kinds = {inspect.iscoroutinefunction(fn) for fn in (*self._by_event.values(), *self._by_message.values())}
        if len(kinds) > 1:
            raise ValueError(f"bot {self.name!r} mixes `async def` and plain handler functions: use one kind")
        return kinds == {True}

    def run(self) -> None:
        """Serve the protocol until stdin closes, then exit the process (never returns). `async def`
        functions run on one asyncio loop (handlers/loopsession.py), plain ones in worker threads."""
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                                format=f"%(levelname)s {self.name}[%(process)d] %(name)s %(message)s")
        if self.asynchronous():
            self._run_on_loop()
        session = _Session(self, *Bot._stdio)
        frames = session.frames()
        try:
            if not session.handshake(frames):
                os._exit(EXIT_UNSUPPORTED)
            session.workers = _Workers(self.max_in_flight, session._handle_events)
            session.serve(frames)
        except EOFError:
            pass
        except ProtocolError as exc:
            sys.stderr.write(f"{self.name}: protocol error on stdin: {exc}\n")
            sys.stderr.flush()
            os._exit(EXIT_PROTOCOL_ERROR)  # the stream cannot be trusted; in-flight work is abandoned
        except KeyboardInterrupt:
            os._exit(130)
        # stdin closed: the dispatcher asks us to finish what we hold and exit.
        session.fail_pending_calls()
        if session.workers is not None:
            session.workers.shutdown()
        logging.shutdown()
        sys.stderr.flush()
        os._exit(EXIT_OK)  # not sys.exit: a stray non-daemon thread of user code must not hang us

    def _run_on_loop(self) -> None:
        from .loopsession import LoopSession   # it builds on this module
        session = LoopSession(self, *Bot._stdio)
        try:
            status = session.run()
        except KeyboardInterrupt:
            os._exit(130)
        if status == EXIT_PROTOCOL_ERROR:
            sys.stderr.write(f"{self.name}: protocol error on stdin: {session.problem}\n")
        logging.shutdown()
        sys.stderr.flush()
        os._exit(status)
