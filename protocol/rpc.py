"""msgpack-rpc messages, in both directions, as typed values.

Request `[0, msgid, method, params]`, response `[1, msgid, error, result]`, notification
`[2, method, params]`. Each side numbers its own requests; a response answers a request of
the other side. `parse_message` validates the shape and names what is wrong.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .frames import ProtocolError

REQUEST, RESPONSE, NOTIFICATION = 0, 1, 2
MAX_MSGID = 2**32 - 1


@dataclass(frozen=True, slots=True)
class Request:
    msgid: int
    method: str
    params: list

    def to_wire(self) -> list:
        return [REQUEST, self.msgid, self.method, self.params]


@dataclass(frozen=True, slots=True)
class Response:
    msgid: int
    error: Any
    result: Any

    def to_wire(self) -> list:
        return [RESPONSE, self.msgid, self.error, self.result]


@dataclass(frozen=True, slots=True)
class Notification:
    method: str
    params: list

    def to_wire(self) -> list:
        return [NOTIFICATION, self.method, self.params]


Message = Request | Response | Notification


def check_msgid(msgid) -> int:
    if not isinstance(msgid, int) or isinstance(msgid, bool) or not 0 <= msgid <= MAX_MSGID:
        raise ProtocolError(f"msgid must be an unsigned 32-bit integer, got {type(msgid).__name__} {msgid!r}")
    return msgid


def _check_method(method) -> str:
    if not isinstance(method, str) or not method:
        raise ProtocolError(f"method must be a non-empty string, got {method!r}")
    return method


def _check_params(params) -> list:
    if not isinstance(params, list):
        raise ProtocolError(f"params must be an array, got {type(params).__name__}")
    return params


def parse_message(value) -> Message:
    """Turn a decoded frame into a Request, Response or Notification, or raise ProtocolError."""
    if not isinstance(value, list) or not value:
        raise ProtocolError(f"a message must be a non-empty array, got {_describe(value)}")
    kind = value[0] if type(value[0]) is int else repr(value[0])  # True == 1 must not pass as a response
    if kind == REQUEST and len(value) == 4:
        return Request(check_msgid(value[1]), _check_method(value[2]), _check_params(value[3]))
    if kind == RESPONSE and len(value) == 4:
        return Response(check_msgid(value[1]), value[2], value[3])
    if kind == NOTIFICATION and len(value) == 3:
        return Notification(_check_method(value[1]), _check_params(value[2]))
    raise ProtocolError(
        f"unknown message shape: type {kind!r} with {len(value)} elements "
        "(expected [0,msgid,method,params], [1,msgid,error,result] or [2,method,params])"
    )


def _describe(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class MsgIds:
    """Allocates request ids for one side of one session, wrapping at 2**32."""

    def __init__(self, start: int = 0):
        self._next = start

    def next(self) -> int:
        msgid = self._next
        self._next = (msgid + 1) & MAX_MSGID
        return msgid


def api_error(message: str, status: int = 0, retryable: bool = False, details: list | None = None) -> dict:
    """The error answer of an API call (SPEC.md, "API errors"): LINE's HTTP status (0 when LINE
    gave no answer), whether the same call may succeed later, and LINE's details when it gave any."""
    error = {"message": message, "status": status, "retryable": retryable}
    if details is not None:
        error["details"] = details
    return error


def error_value(message: str, retry: bool | None = None, **details) -> dict:
    """The error map used in responses: always a `message`, plus optional fields."""
    error = {"message": message}
    if retry is not None:
        error["retry"] = retry
    error.update(details)
    return error
