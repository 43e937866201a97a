"""What MongoDB can store, and whose fault a refused write is.

Values handed to the store (a bot's per-user data, a profile, the call journal's requests and
responses, status documents, controls) go through JSON first, as the SQLite store stores them:
non-string map keys become strings, a value JSON cannot hold raises TypeError or ValueError (the
rate limiter answers a bot "`data` cannot be stored"), and so does an integer outside BSON's
64 bits, which SQLite would keep (the one difference). So no BSON encoding error escapes.

A write the server refuses because of what one request holds (a document too large, a bad
value) is the request's fault: the group commit writes the others apart from it
(store/groupcommit.py), as with SQLite. Anything else (no primary, a timeout, a lost
connection, no permission) is the store's: every request of the group gets 503.
"""
from __future__ import annotations

import json

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
# Server error codes that name the data, not the server (MongoDB manual, "Error Codes"): BadValue,
# Overflow, InvalidBSON, DollarPrefixedFieldName, InvalidDBRef, EmptyFieldName, DottedFieldName,
# TransactionTooLarge (a smaller group fits), BSONObjectTooLarge.
DATA_ERROR_CODES = frozenset({2, 15, 22, 52, 55, 56, 57, 257, 10334})


def storable(value):
    """`value` as the SQLite store would read it back (a JSON round trip), checked for BSON's
    integer range. Raises TypeError or ValueError when it cannot be stored."""
    plain = json.loads(json.dumps(value))
    _check_integers(plain)
    return plain


def _check_integers(value) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, int) and not isinstance(item, bool) and not INT64_MIN <= item <= INT64_MAX:
            raise ValueError(f"the integer {item} is beyond the 64 bits MongoDB stores")


def is_data_error(exc: Exception) -> bool:
    """True when the server refused a write for what it holds (see DATA_ERROR_CODES); a
    transient error (its label says so) never is."""
    from pymongo.errors import BulkWriteError, OperationFailure

    if not isinstance(exc, OperationFailure) or exc.has_error_label("TransientTransactionError"):
        return False
    if isinstance(exc, BulkWriteError):
        codes = {error.get("code") for error in (exc.details or {}).get("writeErrors", [])}
        return bool(codes) and codes <= DATA_ERROR_CODES
    return exc.code in DATA_ERROR_CODES
