"""What the MongoDB store can store, and which refused writes are a request's fault (no server needed)."""
from __future__ import annotations

import pytest
from pymongo.errors import AutoReconnect, BulkWriteError, OperationFailure, WriteError

from frontdesk.store.mongo_data import is_data_error, storable


def test_storable_reads_back_as_sqlite_would_json():
    assert storable({1: "one", "n": [1, 2.5, None, True], "nested": {"k": "v"}}) == \
        {"1": "one", "n": [1, 2.5, None, True], "nested": {"k": "v"}}
    assert storable(None) is None


def test_storable_refuses_what_bson_cannot_hold_with_the_errors_sqlite_gives():
    with pytest.raises(TypeError):
        storable({"raw": b"bytes"})
    with pytest.raises(ValueError, match="64 bits"):
        storable({"big": [1, {"deeper": 2 ** 63}]})
    assert storable({"edge": 2 ** 63 - 1, "low": -(2 ** 63)}) == {"edge": 2 ** 63 - 1, "low": -(2 ** 63)}


def test_a_write_refused_for_its_data_is_the_requests_fault():
    assert is_data_error(WriteError("too large", code=10334))
    assert is_data_error(OperationFailure("transaction too large", code=257))
    assert is_data_error(BulkWriteError({"writeErrors": [{"index": 0, "code": 2, "errmsg": "bad value"}]}))


def test_a_failure_of_the_server_is_the_stores():
    assert not is_data_error(AutoReconnect("no primary"))
    assert not is_data_error(OperationFailure("not authorized", code=13))
    assert not is_data_error(BulkWriteError({"writeErrors": [{"index": 0, "code": 2}, {"index": 1, "code": 11000}]}))
    transient = OperationFailure("write conflict", code=112, details={"errorLabels": ["TransientTransactionError"]})
    assert not is_data_error(transient)
    assert not is_data_error(ValueError("not pymongo's"))
