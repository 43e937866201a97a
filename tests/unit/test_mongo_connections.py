"""The MongoDB store's connection without a server: the server's clock read against this host's
clock (whatever that clock says), a closed store refusing calls, error messages without pymongo's
topology dump."""
from __future__ import annotations

import datetime

import pytest

from frontdesk.store.base import StoreUnavailable
from frontdesk.store.mongo_connections import MongoConnections, reason


class Admin:
    def __init__(self, server_time: float):
        self.server_time = server_time

    def command(self, name: str) -> dict:
        assert name == "hello"
        return {"setName": "rs0", "localTime": datetime.datetime.fromtimestamp(self.server_time, datetime.timezone.utc)
                .replace(tzinfo=None)}   # pymongo decodes BSON dates as naive UTC


class Client:
    def __init__(self, server_time: float):
        self.admin = Admin(server_time)


def test_the_servers_clock_is_read_against_the_hosts_own_clock():
    """A host whose clock is two minutes behind the server's: the offset is +120 s, so its leases
    are the server's time like every other host's."""
    host_now = 1_700_000_000.0
    db = MongoConnections("mongodb://h/fd?replicaSet=rs0", clock=lambda: host_now)
    db._client = Client(server_time=host_now + 120.0)
    db.hello()
    assert db.clock.offset == pytest.approx(120.0, abs=0.01)
    assert db.clock.now() == pytest.approx(host_now + 120.0, abs=0.01)


def test_a_closed_store_refuses_calls_and_transactions_before_reaching_the_server():
    db = MongoConnections("mongodb://h/fd?replicaSet=rs0")
    db.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        db.call(lambda: pytest.fail("reached the server"))
    with pytest.raises(StoreUnavailable, match="closed"):
        db.transaction(lambda session: pytest.fail("reached the server"))


def test_the_url_shown_in_messages_has_no_password():
    assert MongoConnections("mongodb://app:s3cret@h1,h2/fd?replicaSet=rs0").shown_url == \
        "mongodb://app:***@h1,h2/fd?replicaSet=rs0"


def test_an_error_message_leaves_out_the_topology_dump():
    assert reason(Exception("No primary available, Timeout: 5.0s, Topology Description: <...>")) == \
        "No primary available"
